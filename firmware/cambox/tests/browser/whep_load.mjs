#!/usr/bin/env node
// Many WebRTC viewers of one stream in one headless Chromium page, for a load test.
//
//   node whep_load.mjs <base-url> <stream-name> [--viewers N] [--seconds S]
//
// Opens the box's page origin, makes N peer connections to /whep/<stream> (each decoding
// into a <video> of its own), keeps them for S seconds, and prints one JSON line:
//   {viewers: [{framesDecoded, bytesReceived, recentFrames, state}], connectedAll}
// - framesDecoded, bytesReceived: getStats() of the viewer's video at the end;
// - recentFrames: frames it decoded in the last 10 s (proof it still received then);
// - state: its connection state at the end;
// - boxAddress, protocol: the box's side of the candidate pair in use ("ip:port"), and
//   whether it is UDP or TCP.
// Exits 0 when every viewer decoded frames in the last 10 s, else 1 (2 for bad usage).

import { runWithChromium } from './chromium.mjs';

function usage(message) {
  if (message) process.stderr.write(`whep_load.mjs: ${message}\n`);
  process.stderr.write('usage: node whep_load.mjs <base-url> <stream-name> [--viewers N] [--seconds S]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const positional = [];
let viewers = 20;
let seconds = 60;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--viewers') viewers = Number(args[++i]);
  else if (args[i] === '--seconds') seconds = Number(args[++i]);
  else if (args[i] === '-h' || args[i] === '--help') usage();
  else if (args[i].startsWith('--')) usage(`unknown option ${args[i]}`);
  else positional.push(args[i]);
}
if (positional.length !== 2) usage('need a base URL and a stream name');
if (!(viewers >= 1 && viewers <= 100)) usage('--viewers takes 1 to 100');
if (!(seconds >= 12 && seconds <= 600)) usage('--seconds takes 12 to 600');
const [base, name] = positional;

async function inPage({ name, viewers, seconds }) {
  const videoStats = async (pc) => {
    let frames = 0, bytes = 0;
    (await pc.getStats()).forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video') { frames = x.framesDecoded || 0; bytes = x.bytesReceived || 0; }
    });
    return { frames, bytes };
  };
  const open = async () => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.width = 160;
    document.body.append(video);
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const resp = await fetch(`/whep/${encodeURIComponent(name)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp,
    });
    if (resp.status !== 201) throw new Error(`WHEP answered ${resp.status}: ${await resp.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    // A box serves only a few sessions still connecting per address (as it should, to
    // whoever floods it with offers): open the next once this one is up, or 10 s passed.
    await new Promise((resolve) => {
      const done = () => pc.connectionState === 'connected' && resolve();
      pc.addEventListener('connectionstatechange', done);
      setTimeout(resolve, 10000);
      done();
    });
    return pc;
  };
  // The box's candidate of the pair ICE chose, as Chromium reports it.
  const boxSide = async (pc) => {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((x) => { if (x.type === 'transport' && x.selectedCandidatePairId) pair = stats.get(x.selectedCandidatePairId); });
    stats.forEach((x) => { if (!pair && x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') pair = x; });
    const remote = pair && stats.get(pair.remoteCandidateId);
    return remote ? { boxAddress: `${remote.address}:${remote.port}`, protocol: remote.protocol } : { boxAddress: null, protocol: null };
  };
  const pcs = [];
  for (let i = 0; i < viewers; i++) pcs.push(await open());
  await new Promise((r) => setTimeout(r, (seconds - 10) * 1000));
  const mid = await Promise.all(pcs.map(videoStats));
  await new Promise((r) => setTimeout(r, 10000));
  const end = await Promise.all(pcs.map(videoStats));
  const sides = await Promise.all(pcs.map(boxSide));
  const out = pcs.map((pc, i) => ({
    ...sides[i],
    framesDecoded: end[i].frames,
    bytesReceived: end[i].bytes,
    recentFrames: end[i].frames - mid[i].frames,
    state: pc.connectionState,
  }));
  for (const pc of pcs) pc.close();
  return out;
}

await runWithChromium('whep_load.mjs', (seconds + 60) * 1000, async (page) => {
  await page.goto(new URL('/api/v1/status', base).href);
  const list = await page.evaluate(inPage, { name, viewers, seconds });
  const connectedAll = list.every((v) => v.state === 'connected' && v.recentFrames > 0);
  process.stdout.write(JSON.stringify({ viewers: list, connectedAll }) + '\n');
  if (!connectedAll) process.stderr.write('whep_load.mjs: FAIL: a viewer stopped receiving\n');
  return connectedAll ? 0 : 1;
});
