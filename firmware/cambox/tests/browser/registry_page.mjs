// The registry's page in headless Chromium: the live stream is listed under its site with
// a Watch link; following it opens the stream on a box whose page plays it. The page's
// rollout list (boxes per board and version) is reported as the page shows it.
// Usage: node registry_page.mjs <registry page URL> <stream name>
// Prints one JSON line: {"href": ..., "playing": true, "rollout": ...}; exits 1 on failure.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const [pageUrl, name] = process.argv.slice(2);
if (!pageUrl || !name) {
  process.stderr.write('usage: node registry_page.mjs <registry page URL> <stream name>\n');
  process.exit(2);
}
const dir = await mkdtemp(join(tmpdir(), 'cambox-chromium-'));
let context = null;
let failure = null;
let result = null;
try {
  context = await launch(dir);
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(pageUrl, { waitUntil: 'load' });
  const row = page.getByRole('listitem').filter({ has: page.getByText(name, { exact: true }) });
  const link = row.getByRole('link', { name: /watch/i });
  await link.waitFor({ timeout: 15000 });
  const href = await link.getAttribute('href');
  const rolloutList = page.getByRole('list', { name: 'Rollout' });
  await rolloutList.getByText(/runs/).first().waitFor({ timeout: 15000 });
  const rollout = await rolloutList.innerText();
  await link.click();
  await page.waitForFunction(
    () => {
      const v = document.querySelector('video');
      return v && !v.paused && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.5;
    },
    null,
    { timeout: 20000, polling: 100 },
  );
  result = { href, playing: true, at: page.url(), rollout };
} catch (e) {
  failure = e.message || String(e);
} finally {
  if (context) await context.close().catch(() => {});
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}
if (!result) {
  process.stdout.write(JSON.stringify({ failure }) + '\n');
  process.exit(1);
}
process.stdout.write(JSON.stringify(result) + '\n');
