// Headless Debian Chromium as the tests drive it (shared by play.mjs and registry_page.mjs).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export async function launch(userDataDir) {
  // launch() refuses --user-data-dir in args; a persistent context on a fresh temporary
  // directory is the same thing.
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    // Playwright adds --mute-audio in headless mode; drop it, so that sound goes the way it
    // goes for a person. What was seen with Chromium 156 in a container without /dev/snd:
    // - WebAudio runs on a fake output, no sound card or PulseAudio needed;
    // - the analyser hears the tone with or without --mute-audio (it taps the element
    //   before the output is muted);
    // - a muted <video> (say, the page fell back to muted autoplay) gives it pure silence,
    //   max RMS 0: the failure the sound check is there to catch.
    ignoreDefaultArgs: ['--mute-audio'],
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // Extra switches a test asks for (one per line), e.g. a WebRTC IP handling policy.
      ...(process.env.CAMBOX_CHROMIUM_ARGS ?? '').split('\n').filter(Boolean),
    ],
    viewport: { width: 1280, height: 800 },
  });
}

/**
 * Runs `fn(page)` in a fresh Chromium on a temporary profile, removed afterwards, and exits
 * with the code `fn` returns (1 if it throws, or if it is not done within `timeoutMs`).
 * `script` names the caller in messages.
 */
export async function runWithChromium(script, timeoutMs, fn) {
  const userDataDir = await mkdtemp(join(tmpdir(), 'cambox-chromium-'));
  const watchdog = setTimeout(() => { process.stderr.write(`${script}: gave up\n`); process.exit(1); }, timeoutMs);
  let context = null;
  let code = 1;
  try {
    context = await launch(userDataDir);
    code = await fn(context.pages()[0] ?? (await context.newPage()));
  } catch (e) {
    process.stderr.write(`${script}: ${e.stack || e}\n`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
    clearTimeout(watchdog);
  }
  process.exit(code);
}
