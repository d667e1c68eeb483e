#!/usr/bin/env python3
"""A WHEP viewer nobody on this team wrote the WebRTC of: aiortc (pure Python WebRTC,
PyPI) offers to receive video and sound, POSTs the offer to a box's WHEP endpoint (with a
bearer token when given, as the WHEP draft says), and counts the decoded video frames.

    whep_client.py <base-url> <stream> [--token TOKEN] [--seconds N]

Prints one JSON line: {"status": <HTTP status of the offer>, "frames": N, "width": W,
"height": H} (or {"status": ..., "error": ...} when the box refused). Exits 0 when frames
arrived, 3 when the offer was refused, 1 otherwise.
"""

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


def post_offer(url, sdp, token):
    req = urllib.request.Request(url, data=sdp.encode(), method="POST")
    req.add_header("Content-Type", "application/sdp")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("stream")
    p.add_argument("--token")
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    frames = {"n": 0, "w": 0, "h": 0}
    got_track = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return
        got_track.set()

        async def pull():
            while True:
                try:
                    f = await track.recv()
                except Exception:
                    return
                frames["n"] += 1
                frames["w"], frames["h"] = f.width, f.height

        asyncio.ensure_future(pull())

    await pc.setLocalDescription(await pc.createOffer())
    # aiortc gathers its candidates before the offer is complete: no trickle needed.
    status, body = post_offer(f"{a.base}/whep/{a.stream}", pc.localDescription.sdp, a.token)
    if status != 201:
        print(json.dumps({"status": status, "error": body.strip()}))
        await pc.close()
        return 3
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    await asyncio.sleep(a.seconds)
    await pc.close()
    print(json.dumps({"status": status, "frames": frames["n"], "width": frames["w"], "height": frames["h"]}))
    return 0 if frames["n"] > 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
