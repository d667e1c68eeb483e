// Headless Debian Chromium as the tests drive it (shared by play.mjs and registry_page.mjs).
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
    ],
    viewport: { width: 1280, height: 800 },
  });
}
