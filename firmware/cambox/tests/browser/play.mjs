#!/usr/bin/env node
// Plays a cambox live stream in Debian's Chromium the way a person would, and measures what
// the browser really shows: frame numbers and capture times read from the test strip in the
// picture, and the loudness of the sound the page plays.
//
//   npm install --prefix firmware/cambox/tests/browser      (once; never `npx playwright install`)
//   node firmware/cambox/tests/browser/play.mjs <base-url> <stream-name> [--screenshot out.png]
//        [--press-button] [--transport whep|mse] [--seconds N] [--block-whep]
//
// Needs a box streaming the test source with the test tone, e.g.
//   cambox run --live --http 127.0.0.1:18080 --name teststream --source testsrc
//
// Prints one JSON line to stdout:
//   {firstFrame, lastFrame, advanced, readings, unreadable, maxRms, audioTracks,
//    audioDecodedBytes, stalls, droppedFrames, video: {...}, latencyMs: {mean, p95},
//    mime, errors: [...]}
// - advanced: last minus first frame number read from the strip over 3 s (30 fps: ~90);
// - readings / unreadable: strip reads that passed / failed the check bits;
// - maxRms: loudest 43 ms window of the page's sound (the test beep gives ~0.26);
// - audioTracks: video.audioTracks.length, null where the browser hides that API (Chromium
//   does, unless experimental features are on); audioDecodedBytes: Chromium's
//   webkitAudioDecodedByteCount, the proof that Opus was decoded;
// - latencyMs: Date.now() when sampled minus the capture time in the strip (same clock
//   when box and browser share a machine);
// - stalls: 'waiting' events while sampling; video: where the element stood at the end;
// - mime: the Content-Type the box sent with the stream; errors: the page's console errors;
// - admission: what the page's header says of who may join the box's mesh;
// - links: what the page lists of the box's mesh links (who, QUIC or TCP, RTT).
// Exits 0 when the picture advanced by at least 50 frames in 3 s and sound was heard
// (max RMS > 0.01), else 1 with the reason on stderr (2 for bad usage).
// --media-log prints Chromium's media log (chrome://media-internals) to stderr.
// --transport opens the page with ?transport=whep (WebRTC only, no fallback) or =mse (MP4
// only); without it the page chooses as for a person (WebRTC, MP4 if that fails). The
// output gains transport: what the page played through ("WebRTC" or "MP4").
// --seconds N samples for N seconds instead of 3 (and wants 50 frames advanced per 3 s).
// The output always has frames: {presented, encoded, groupsDropped} over the sampling:
// pictures the element got (getVideoPlaybackQuality), and the box's own counters
// cambox_frames_encoded_total and cambox_viewer_groups_dropped_total read from /metrics
// at the start and end of it (the encoded count means something for the box's own stream).
// Over WebRTC the output has webrtc: the receiver's video statistics from the page
// (packetsReceived, packetsLost, nackCount, retransmittedPacketsReceived, pliCount,
// firCount, framesDecoded, freezeCount); null over MP4.
// --block-whep makes every WHEP request fail as a refused connection (as behind a proxy
// that passes only plain HTTP streams), to see the page fall back to MP4.
// --press-button first clicks the page's virtual box button (a 150 ms press with the mouse),
// waits for the virtual LED to say "live" and watches it for 1.5 s; the output gains
// led: {states: [every LED state seen, in order], litSamples, samples}.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const SAMPLE_FOR_MS = 3000;
// A new viewer starts at the last keyframe and the page then skips to the live edge:
// measure after that, so latency is the steady state a viewer lives with.
const SETTLE_MS = 1000;
const SAMPLE_EVERY_MS = 50;
const START_TIMEOUT_MS = 20000;
const OVERALL_TIMEOUT_MS = 90000;
const MIN_ADVANCED = 50;
const MIN_RMS = 0.01;

function usage(message) {
  if (message) process.stderr.write(`play.mjs: ${message}\n`);
  process.stderr.write('usage: node play.mjs <base-url> <stream-name> [--screenshot out.png] [--media-log] [--press-button] [--transport whep|mse] [--seconds N] [--block-whep]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  let screenshot = null;
  let mediaLog = false;
  let pressButton = false;
  let transport = null;
  let seconds = SAMPLE_FOR_MS / 1000;
  let blockWhep = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--screenshot') {
      screenshot = argv[++i];
      if (!screenshot) usage('--screenshot needs a file name');
    } else if (a.startsWith('--screenshot=')) {
      screenshot = a.slice('--screenshot='.length);
    } else if (a === '--media-log') {
      mediaLog = true;
    } else if (a === '--seconds') {
      seconds = Number(argv[++i]);
      if (!(seconds > 0 && seconds <= 120)) usage('--seconds takes a number of seconds, 1 to 120');
    } else if (a === '--block-whep') {
      blockWhep = true;
    } else if (a === '--transport') {
      transport = argv[++i];
      if (transport !== 'whep' && transport !== 'mse') usage('--transport takes whep or mse');
    } else if (a === '--press-button') {
      pressButton = true;
    } else if (a === '-h' || a === '--help') {
      usage();
    } else if (a.startsWith('--')) {
      usage(`unknown option ${a}`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 2) usage('need a base URL and a stream name');
  let base;
  try {
    base = new URL(positional[0]);
  } catch {
    usage(`not a URL: ${positional[0]}`);
  }
  return { base, name: positional[1], screenshot, mediaLog, pressButton, transport, seconds, blockWhep };
}

/** Clicks the stream's Play control in the list, finding it by what a person sees. */
async function clickPlay(page, name) {
  const row = page
    .getByRole('listitem')
    .filter({ has: page.getByText(name, { exact: true }) });
  await row.getByRole('button', { name: /play/i }).first().click({ timeout: START_TIMEOUT_MS });
}

/** With --media-log: Chromium's own media log (what chrome://media-internals shows: demuxer
 *  warnings, decoder choice, MSE errors) goes to stderr, stamped with ms since the start. */
async function logMedia(context, page) {
  const t0 = Date.now();
  const say = (what, text) => process.stderr.write(`media ${Date.now() - t0}ms ${what}: ${text}\n`);
  const cdp = await context.newCDPSession(page);
  cdp.on('Media.playerMessagesLogged', (e) => { for (const m of e.messages) say(m.level, m.message); });
  cdp.on('Media.playerErrorsRaised', (e) => { for (const m of e.errors) say('error', JSON.stringify(m)); });
  cdp.on('Media.playerEventsAdded', (e) => { for (const m of e.events) say('event', m.value); });
  await cdp.send('Media.enable');
}

/** Presses the page's virtual box button as a person would and watches the virtual LED. */
async function pressBoxButton(page) {
  // Every state the LED passes through, recorded in the page as the events arrive.
  await page.evaluate(() => {
    window.__ledStates = [document.getElementById('led').dataset.state];
    new MutationObserver(() => {
      const s = document.getElementById('led').dataset.state;
      if (window.__ledStates[window.__ledStates.length - 1] !== s) window.__ledStates.push(s);
    }).observe(document.getElementById('led'), { attributes: true });
  });
  const btn = page.getByRole('button', { name: 'Box button' });
  await btn.waitFor({ state: 'visible', timeout: START_TIMEOUT_MS });
  const box = await btn.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(150);
  await page.mouse.up();
  await page.waitForFunction(
    () => document.getElementById('led').dataset.state === 'live',
    null,
    { timeout: START_TIMEOUT_MS, polling: 50 },
  );
  let lit = 0;
  const samples = 30;
  for (let i = 0; i < samples; i++) {
    if ((await page.$eval('#led', (e) => e.dataset.on)) === 'true') lit++;
    await page.waitForTimeout(50);
  }
  const states = await page.evaluate(() => window.__ledStates);
  return { states, litSamples: lit, samples };
}

/** Pictures the element has been given so far, and the box's frame counters. */
async function frameCounts(page) {
  return page.evaluate(async () => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    const text = await (await fetch('/metrics', { cache: 'no-store' })).text();
    const metric = (name) => {
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line ? Number(line.split(' ')[1]) : 0;
    };
    return {
      presented: q ? q.totalVideoFrames : 0,
      encoded: metric('cambox_frames_encoded_total'),
      groupsDropped: metric('cambox_viewer_groups_dropped_total'),
    };
  });
}

async function waitForPicture(page) {
  await page.waitForFunction(
    () => {
      const v = document.querySelector('video');
      return v && !v.paused && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0;
    },
    null,
    { timeout: START_TIMEOUT_MS, polling: 100 },
  );
}

/**
 * Runs inside the page: listens to the video's sound through WebAudio and reads the test
 * strip every `everyMs` for `forMs`. Returns the raw readings; the sums are done in Node.
 */
async function sampleInPage({ forMs, everyMs }) {
  const video = document.querySelector('video');

  // Sound: the element's output goes through an analyser (and on to the speakers, so the
  // page behaves as before). The tone is a 100 ms 1 kHz beep once a second, so a window of
  // 2048 samples (~43 ms at 48 kHz) read every 50 ms cannot miss it.
  let analyser = null;
  let audioError = null;
  try {
    const ctx = new AudioContext();
    // WebRTC sound (a MediaStream) does not pass through the element's WebAudio source in
    // Chromium: tap the stream itself, and leave the element to play it.
    const stream = video.srcObject;
    const viaStream = stream instanceof MediaStream && stream.getAudioTracks().length > 0;
    const source = viaStream ? ctx.createMediaStreamSource(stream) : ctx.createMediaElementSource(video);
    analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    if (!viaStream) analyser.connect(ctx.destination);
    await ctx.resume();
  } catch (e) {
    audioError = String(e);
  }
  const pcm = new Float32Array(2048);
  const rmsNow = () => {
    if (!analyser) return 0;
    analyser.getFloatTimeDomainData(pcm);
    let sum = 0;
    for (const x of pcm) sum += x * x;
    return Math.sqrt(sum / pcm.length);
  };

  // Picture: the strip is two lines of 48 cells, a cell floor(width / 48) pixels wide and
  // 16 rows high; white = 1, most significant bit first. Line 1: frame number (u32), then
  // the NOT of its low 16 bits as a check. Line 2: capture time, ms since the epoch (u48).
  const canvas = document.createElement('canvas');
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const readStrip = () => {
    const w = video.videoWidth, h = video.videoHeight;
    const cell = Math.floor(w / 48);
    if (!cell || h < 32) return null;
    canvas.width = w;
    canvas.height = 32;
    g.drawImage(video, 0, 0, w, 32, 0, 0, w, 32);
    const px = g.getImageData(0, 0, w, 32).data;
    const line = (row) => {
      let v = 0n;
      for (let c = 0; c < 48; c++) {
        const i = (row * w + c * cell + (cell >> 1)) * 4;
        const luma = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        v = (v << 1n) | (luma >= 128 ? 1n : 0n);
      }
      return v;
    };
    const l1 = line(8);  // centre row of line 1
    const l2 = line(24); // centre row of line 2
    const frame = l1 >> 16n;
    if ((l1 & 0xffffn) !== (~frame & 0xffffn)) return null;
    return { frame: Number(frame), captureMs: Number(l2) };
  };

  // Stalls: the picture waited for data while we watched.
  let stalls = 0;
  const onWaiting = () => { stalls++; };
  video.addEventListener('waiting', onWaiting);

  const samples = [];
  let maxRms = 0;
  const end = performance.now() + forMs;
  while (performance.now() < end) {
    const at = Date.now();
    let reading = null;
    try {
      reading = readStrip();
    } catch (e) {
      reading = null;
    }
    samples.push(reading ? { at, frame: reading.frame, captureMs: reading.captureMs } : null);
    maxRms = Math.max(maxRms, rmsNow());
    await new Promise((r) => setTimeout(r, everyMs));
  }

  video.removeEventListener('waiting', onWaiting);
  const ranges = [];
  for (let i = 0; i < video.buffered.length; i++) {
    ranges.push([+video.buffered.start(i).toFixed(3), +video.buffered.end(i).toFixed(3)]);
  }
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  return {
    samples,
    maxRms,
    stalls,
    droppedFrames: q ? q.droppedVideoFrames : null,
    audioError,
    audioTracks: video.audioTracks ? video.audioTracks.length : null,
    audioDecodedBytes: typeof video.webkitAudioDecodedByteCount === 'number' ? video.webkitAudioDecodedByteCount : null,
    // Where the element stood at the end, for a reader of a failed run.
    video: {
      currentTime: +video.currentTime.toFixed(3),
      buffered: ranges,
      readyState: video.readyState,
      paused: video.paused,
      muted: video.muted,
      playbackRate: video.playbackRate,
    },
    videoError: video.error ? `${video.error.code}: ${video.error.message}` : null,
  };
}

function summarise(raw) {
  const good = raw.samples.filter(Boolean);
  const latencies = good.map((s) => s.at - s.captureMs).sort((a, b) => a - b);
  const mean = latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : null;
  // Nearest-rank 95th percentile.
  const p95 = latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(0.95 * latencies.length) - 1)] : null;
  const firstFrame = good.length ? good[0].frame : null;
  const lastFrame = good.length ? good[good.length - 1].frame : null;
  return {
    firstFrame,
    lastFrame,
    advanced: good.length ? lastFrame - firstFrame : 0,
    readings: good.length,
    unreadable: raw.samples.length - good.length,
    maxRms: Number(raw.maxRms.toFixed(4)),
    audioTracks: raw.audioTracks,
    audioDecodedBytes: raw.audioDecodedBytes,
    stalls: raw.stalls,
    droppedFrames: raw.droppedFrames,
    video: raw.video,
    latencyMs: {
      mean: mean === null ? null : Math.round(mean),
      p95: p95 === null ? null : Math.round(p95),
    },
  };
}

async function main() {
  const { base, name, screenshot, mediaLog, pressButton, transport, seconds, blockWhep } = parseArgs(process.argv.slice(2));
  const watchdog = setTimeout(() => {
    process.stderr.write(`play.mjs: gave up after ${OVERALL_TIMEOUT_MS / 1000} s\n`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);

  const userDataDir = await mkdtemp(join(tmpdir(), 'cambox-chromium-'));
  const errors = [];
  let mime = null;
  let context = null;
  let result = null;
  let frames = null;
  let failure = null;
  try {
    context = await launch(userDataDir);
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    if (mediaLog) await logMedia(context, page);
    if (blockWhep) await page.route('**/whep/**', (route) => route.abort('connectionrefused'));
    // The exact MSE type the box announced for this stream.
    const streamPath = `/live/${encodeURIComponent(name)}.mp4`;
    page.on('response', (r) => {
      // A stream from elsewhere in the mesh is /live/<name>@<origin>.mp4.
      const path = new URL(r.url()).pathname;
      const ours = path === streamPath || path.startsWith(streamPath.replace(/\.mp4$/, '@'));
      if (ours && r.ok()) mime = r.headers()['content-type'] ?? null;
    });

    const pageUrl = new URL('/', base);
    if (transport) pageUrl.searchParams.set('transport', transport);
    await page.goto(pageUrl.href, { waitUntil: 'load' });
    const led = pressButton ? await pressBoxButton(page) : undefined;
    await clickPlay(page, name);
    try {
      await waitForPicture(page);
    } catch (e) {
      const shown = await page.locator('#overlay-text').textContent().catch(() => null);
      throw new Error(`no picture within ${START_TIMEOUT_MS / 1000} s${shown ? ` (page says: ${shown})` : ''}`);
    }
    await page.waitForTimeout(SETTLE_MS);
    const before = await frameCounts(page);
    const raw = await page.evaluate(sampleInPage, { forMs: seconds * 1000, everyMs: SAMPLE_EVERY_MS });
    const after = await frameCounts(page);
    frames = {
      presented: after.presented - before.presented,
      encoded: after.encoded - before.encoded,
      groupsDropped: after.groupsDropped - before.groupsDropped,
    };
    if (raw.audioError) errors.push(`test: WebAudio: ${raw.audioError}`);
    if (raw.videoError) errors.push(`test: video element error ${raw.videoError}`);
    const via = await page.locator('#st-transport').textContent().catch(() => null);
    const admission = await page.locator('#admission').textContent().catch(() => null);
    const links = await page.locator('#links-list').textContent().catch(() => null);
    const webrtc = await page.evaluate(() => window.cambox.rtcStats());
    result = { ...summarise(raw), transport: via, admission, links, frames, webrtc, mime, errors, led };
    if (screenshot) await page.screenshot({ path: screenshot });
  } catch (e) {
    failure = e.message || String(e);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
    clearTimeout(watchdog);
  }

  if (!result) {
    process.stdout.write(JSON.stringify({ mime, errors, failure }) + '\n');
    process.stderr.write(`play.mjs: ${failure}\n`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  const problems = [];
  const minAdvanced = Math.round(MIN_ADVANCED * seconds * 1000 / SAMPLE_FOR_MS);
  if (result.advanced < minAdvanced) {
    problems.push(`the picture advanced ${result.advanced} frames in ${seconds} s (want >= ${minAdvanced}; ${result.readings} strip readings, ${result.unreadable} unreadable)`);
  }
  if (!(result.maxRms > MIN_RMS)) {
    problems.push(`no sound: max RMS ${result.maxRms} (want > ${MIN_RMS})`);
  }
  if (problems.length) {
    process.stderr.write(`play.mjs: FAIL: ${problems.join('; ')}\n`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`play.mjs: ${e.stack || e}\n`);
  process.exit(1);
});
