#!/usr/bin/env node
// Logs in on a box's page in headless Chromium the way a person would, then plays its
// stream: with single sign-on (through the OpenID provider's own login and consent pages)
// or with a local account (the page's form).
//
//   node login_page.mjs <box-url> <stream> --sso <login>
//   node login_page.mjs <box-url> <stream> --account <name> <password>
//
// Prints one JSON line: {lockedFirst, who, playing, statusBefore, statusAfter}:
// - lockedFirst: the page showed its login and hid the box before anyone logged in;
// - who: what the page's header says of who is logged in;
// - playing: the player shows the stream (currentTime advanced);
// - statusBefore / statusAfter: what GET /api/v1/status answered the page before and
//   after logging in (401, then 200);
// - watchingShownAfterMs: from the picture's first moving to the page listing this viewer
//   under "Watching now" (null if it never did); watching: that list's text;
// - url, secureContext, cookieSecure: where the page ended up (a box that serves HTTPS
//   redirects there), whether Chromium holds it a secure context, and whether the session
//   cookie is Secure.
// Exits 0 when logged in and playing, else 1 with the reason on stderr.

import { runWithChromium } from './chromium.mjs';

const [base, stream, mode, login, password] = process.argv.slice(2);
if (!base || !stream || !['--sso', '--account'].includes(mode) || !login) {
  process.stderr.write('usage: node login_page.mjs <box-url> <stream> --sso <login> | --account <name> <password>\n');
  process.exit(2);
}

const statusCode = (page) => page.evaluate(() => fetch('/api/v1/status').then((r) => r.status));

await runWithChromium('login_page.mjs', 90000, async (page) => {
  page.on('requestfailed', (r) => process.stderr.write(`login_page.mjs: ${r.url()} failed: ${r.failure()?.errorText}\n`));
  await page.goto(base, { waitUntil: 'load' });
  await page.locator('#login-card').waitFor({ state: 'visible', timeout: 15000 });
  const lockedFirst = await page.locator('#player-card').isHidden();
  const statusBefore = await statusCode(page);
  if (mode === '--sso') {
    await page.locator('#sso-login').click();
    // The provider's pages: a login form, then a consent form.
    await page.locator('input[name=login]').fill(login);
    await page.locator('input[name=password]').fill('anything');
    await page.locator('button[type=submit]').click();
    const consent = page.locator('button[type=submit]', { hasText: 'Continue' });
    await consent.click({ timeout: 15000 }).catch(async (e) => {
      process.stderr.write(`login_page.mjs: no consent form at ${page.url()}: ${(await page.content()).slice(0, 400)}\n`);
      throw e;
    });
    await page.waitForURL((u) => u.href.startsWith(base), { timeout: 15000 });
  } else {
    await page.locator('#login-name').fill(login);
    await page.locator('#login-password').fill(password ?? '');
    await page.locator('#login-form button[type=submit]').click();
  }
  await page.waitForFunction((name) => (document.getElementById('who')?.textContent ?? '').includes(name), login, { timeout: 15000 });
  const who = await page.locator('#who').textContent();
  const statusAfter = await statusCode(page);
  // Play the box's own stream from the list, as a person would.
  await page.locator('#streams-card').getByText(stream, { exact: true }).first().click({ timeout: 15000 });
  const started = await page
    .waitForFunction(() => { const v = document.querySelector('video'); return v && v.currentTime > 0; }, null, { timeout: 20000 })
    .then(() => Date.now(), () => null);
  // The box's page lists who watches; this viewer among them.
  const shown = started && await page
    .waitForFunction((name) => (document.getElementById('watching-list')?.textContent ?? '').includes(name), login, { timeout: 10000 })
    .then(() => Date.now(), () => null);
  const watchingShownAfterMs = shown ? shown - started : null;
  const playing = await page
    .waitForFunction(() => { const v = document.querySelector('video'); return v && v.currentTime > 1; }, null, { timeout: 20000 })
    .then(() => true, () => false);
  const watching = await page.locator('#watching-list').textContent();
  const url = page.url();
  const secureContext = await page.evaluate(() => window.isSecureContext);
  const session = (await page.context().cookies()).find((c) => c.name === 'cambox_session');
  const cookieSecure = session ? session.secure : null;
  const result = { lockedFirst, who, playing, statusBefore, statusAfter, watchingShownAfterMs, watching, url, secureContext, cookieSecure };
  process.stdout.write(JSON.stringify(result) + '\n');
  if (!playing) process.stderr.write('login_page.mjs: logged in, but the stream did not play\n');
  return playing ? 0 : 1;
});
