#!/usr/bin/env node
// Glass-to-glass latency and click-to-first-frame of the box's page in headless Chromium,
// for scripts/bench. The capture time is in the picture (the test strip); the display time
// is when Chromium presents the frame (requestVideoFrameCallback's expectedDisplayTime),
// both on this machine's clock.
//
//   node glass.mjs <base-url> <stream-name> [--transport whep|mse] [--seconds N]
//
// Prints one JSON line:
//   {transport, clickToFirstFrameMs, frames, glassMs: {min, mean, median, p95, max}, receiveMs}
// - clickToFirstFrameMs: from the click on the stream's Play button to the first frame
//   presented;
// - glassMs: over N seconds (default 10) after a 2 s settle, display time minus capture
//   time of each presented frame whose strip reads. Headless Chromium composes at 60 Hz,
//   so a 30 fps picture waits 0 or ~16 ms for its slot: the mean is the steadier figure;
// - receiveMs (WebRTC only): {mean} of the frames' receive time (requestVideoFrameCallback's
//   receiveTime, the last packet's arrival) minus capture time: no compositor in it.
// Exits 1 if nothing played.

import { runWithChromium } from './chromium.mjs';

function usage(message) {
  if (message) process.stderr.write(`glass.mjs: ${message}\n`);
  process.stderr.write('usage: node glass.mjs <base-url> <stream-name> [--transport whep|mse] [--seconds N]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const positional = [];
let transport = 'whep';
let seconds = 10;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--transport') transport = args[++i];
  else if (args[i] === '--seconds') seconds = Number(args[++i]);
  else if (args[i] === '-h' || args[i] === '--help') usage();
  else if (args[i].startsWith('--')) usage(`unknown option ${args[i]}`);
  else positional.push(args[i]);
}
if (positional.length !== 2) usage('need a base URL and a stream name');
if (transport !== 'whep' && transport !== 'mse') usage('--transport takes whep or mse');
if (!(seconds > 0 && seconds <= 120)) usage('--seconds takes 1 to 120');
const [base, name] = positional;

/** In the page: waits for the click, then records each presented frame. */
function watchFrames({ seconds }) {
  const video = document.querySelector('video');
  const canvas = document.createElement('canvas');
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const strip = () => {
    const w = video.videoWidth, cell = Math.floor(w / 48);
    if (!cell || video.videoHeight < 32) return null;
    canvas.width = w;
    canvas.height = 32;
    g.drawImage(video, 0, 0, w, 32, 0, 0, w, 32);
    const px = g.getImageData(0, 0, w, 32).data;
    const line = (row) => {
      let v = 0;
      for (let c = 0; c < 48; c++) {
        const i = (row * w + c * cell + (cell >> 1)) * 4;
        v = v * 2 + (0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2] >= 128 ? 1 : 0);
      }
      return v;
    };
    const l1 = line(8), frame = Math.floor(l1 / 65536);
    if (l1 % 65536 !== (~frame & 0xffff)) return null;
    return line(24);
  };
  window.__glass = new Promise((resolve) => {
    let clickAt = null, firstAt = null, sampleFrom = null;
    const samples = [];
    const received = [];
    document.addEventListener('click', () => { if (clickAt === null) clickAt = performance.now(); }, true);
    const onFrame = (now, meta) => {
      if (clickAt !== null && firstAt === null) {
        firstAt = meta.expectedDisplayTime;
        sampleFrom = firstAt + 2000;
      }
      if (sampleFrom !== null && meta.expectedDisplayTime >= sampleFrom) {
        const captureMs = strip();
        if (captureMs !== null) {
          samples.push(performance.timeOrigin + meta.expectedDisplayTime - captureMs);
          if (meta.receiveTime) received.push(performance.timeOrigin + meta.receiveTime - captureMs);
        }
      }
      if (sampleFrom !== null && meta.expectedDisplayTime > sampleFrom + seconds * 1000) {
        resolve({ clickToFirstFrameMs: firstAt - clickAt, samples, received });
        return;
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

await runWithChromium('glass.mjs', (seconds + 60) * 1000, async (page) => {
  const url = new URL('/', base);
  url.searchParams.set('transport', transport);
  await page.goto(url.href, { waitUntil: 'load' });
  const row = page.getByRole('listitem').filter({ has: page.getByText(name, { exact: true }) });
  const play = row.getByRole('button', { name: /play/i }).first();
  await play.waitFor({ state: 'visible', timeout: 20000 });
  await page.evaluate(watchFrames, { seconds });
  await play.click();
  const r = await page.evaluate(() => window.__glass);
  const s = r.samples.sort((a, b) => a - b);
  const mean = (xs) => (xs.length ? Math.round(10 * xs.reduce((x, y) => x + y, 0) / xs.length) / 10 : null);
  const at = (q) => (s.length ? Math.round(s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]) : null);
  const via = await page.locator('#st-transport').textContent().catch(() => null);
  process.stdout.write(JSON.stringify({
    transport: via,
    clickToFirstFrameMs: Math.round(r.clickToFirstFrameMs),
    frames: s.length,
    glassMs: {
      min: s.length ? Math.round(s[0]) : null,
      mean: mean(s),
      median: at(0.5),
      p95: at(0.95),
      max: s.length ? Math.round(s[s.length - 1]) : null,
    },
    receiveMs: r.received.length ? { mean: mean(r.received) } : null,
  }) + '\n');
  return s.length ? 0 : 1;
});
