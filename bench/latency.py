#!/usr/bin/env python3
"""Glass-to-glass latency: commeowd's WebRTC (WHEP), its LL-HLS in stock hls.js and in the
web app's tuned hls.js, and nginx-rtmp's classic HLS, side by side in one run.

One clock-painting pusher (latency/clock_pusher.py) is teed to both servers; one headless
Chromium opens a tab per player and reads, from every presented frame, the wall-clock time
painted into it. Reports p50/p95 latency, time to first frame and stalls per player.
Run through bench/latency.sh.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import re
import time
from datetime import datetime
from pathlib import Path

from harness import OUT, ROOT, Commeowd, Nginx, free_port, percentile, wait_listening, write_report

LATENCY = ROOT / "bench" / "latency"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60, help="how long the players watch")
    parser.add_argument("--gop-frames", type=int, default=60,
                        help="keyframe interval of the push, in frames at 30 fps (250: OBS Simple mode)")
    parser.add_argument("--late-joins", type=int, default=3,
                        help="more commeowd tabs, opened later at odd moments of the keyframe interval")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    # "muxing started" is logged when the push's first keyframe's configuration arrives:
    # the moment first frames are measured from.
    log_level = "warn,commeow::media=info"
    commeowd = Commeowd(log_level=log_level)
    # The same box with the parts it had before issue 19 (0.334 s; the default is 0.2 s),
    # to weigh what a stock player gains against the requests it costs.
    long_parts = Commeowd(config="[hls]\npart_target = 0.334\n", data_name="commeowd-data-334",
                          log_level=log_level)
    nginx = Nginx()
    page_port = free_port()
    page_server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(page_port), "--bind", "127.0.0.1", "--directory", str(LATENCY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(page_port)
    master = commeowd.url("/hls/bench/master.m3u8")
    players = {
        "commeowd WebRTC (WHEP)": "whep:" + commeowd.url("/whep/bench"),
        "commeowd LL-HLS, stock hls.js": "stock:" + master,
        "commeowd LL-HLS, the page's hls.js": "tuned:" + master,
        "commeowd LL-HLS 0.334 s parts, stock hls.js": "stock:" + long_parts.url("/hls/bench/master.m3u8"),
        "nginx-rtmp HLS": "stock:" + f"http://127.0.0.1:{nginx.http_port}/hls/bench.m3u8",
    }
    # Late joins land 0.27, 0.54 and 0.81 of the way into a keyframe interval after 3 s.
    gop = args.gop_frames / 30
    late = {}
    for k in range(args.late_joins):
        at = 3 + (k + 1) * 1.27 * gop
        late[f"commeowd WebRTC, joining +{at:.1f} s@{at:.1f}"] = players["commeowd WebRTC (WHEP)"]
        late[f"commeowd LL-HLS stock, joining +{at:.1f} s@{at:.1f}"] = players["commeowd LL-HLS, stock hls.js"]
    print(f"{len(players) + len(late)} players watch for {args.seconds} s...", file=sys.stderr)
    # The players' tabs open first and wait on their pages, as viewers waiting for the
    # streamer; the push starts once they are all up.
    runner = subprocess.Popen(
        ["node", str(LATENCY / "run.mjs"), f"http://127.0.0.1:{page_port}", str(args.seconds)]
        + [f"{name}={url}" for name, url in {**players, **late}.items()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "OUT": str(OUT)})
    pusher = None
    try:
        if runner.stdout.readline().strip() != "ready":
            sys.exit("latency: the players' tabs did not open")
        pushed_at_ms = int(time.time() * 1000)
        pusher = subprocess.Popen([sys.executable, str(LATENCY / "clock_pusher.py"), str(args.seconds + 30),
                                   commeowd.rtmp_url(), long_parts.rtmp_url(), nginx.rtmp_url("bench")],
                                  env={**os.environ, "GOP_FRAMES": str(args.gop_frames)})
        out, _ = runner.communicate(f"{pushed_at_ms}\n", timeout=args.seconds + 120)
        if runner.returncode != 0:
            sys.exit(f"latency: run.mjs failed ({runner.returncode})")
        raw = json.loads(out.strip().splitlines()[-1])
    finally:
        runner.kill()
        if pusher:
            pusher.terminate()
            pusher.wait()
        page_server.terminate()
        commeowd.stop()
        long_parts.stop()
        nginx.stop()
    # nginx got the same push at the same moment (one tee): commeowd's keyframe time serves.
    keyframe_at = {"main": first_keyframe_ms(commeowd.log), "334": first_keyframe_ms(long_parts.log)}

    lines = [
        f"# Glass to glass: commeowd WebRTC and LL-HLS vs nginx-rtmp HLS ({args.seconds} s, GOP {args.gop_frames} frames = {args.gop_frames / 30:.2f} s, hls.js {hls_version()} in headless Chromium, loopback)",
        "",
        f"The push's first keyframe reached commeowd {(keyframe_at['main'] - pushed_at_ms) / 1000:.2f} s after the pusher started (ffmpeg's start and RTMP connections).",
        "",
        "| player | latency p50 s | latency p95 s | first frame after the first keyframe s | first frame after the page opened s | stalls | frames read | unreadable | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    summary = {}
    for name, r in raw.items():
        latencies = [latency / 1000 for _, latency in r["samples"]]
        waiting = name in players
        first_at = r.get("firstFrameAt")
        keyframe = keyframe_at["334" if "0.334" in name else "main"]
        summary[name] = {
            "p50_s": statistics.median(latencies) if latencies else float("nan"),
            "p95_s": percentile(latencies, 95),
            "first_frame_after_keyframe_s": (first_at - keyframe) / 1000 if waiting and first_at else None,
            "first_frame_after_open_s": (first_at - r["openedAt"]) / 1000 if not waiting and first_at else None,
            "stalls": r["stalls"], "frames": len(latencies), "unreadable": r["unreadable"], "errors": r["errors"],
        }
        s = summary[name]
        show = lambda v: "-" if v is None else f"{v:.2f}"
        lines.append(f"| {name} | {s['p50_s']:.2f} | {s['p95_s']:.2f} | {show(s['first_frame_after_keyframe_s'])} | "
                     f"{show(s['first_frame_after_open_s'])} | {s['stalls']} | "
                     f"{s['frames']} | {s['unreadable']} | {'; '.join(s['errors']) or '-'} |")
    lines += ["", "Latency = wall clock when Chromium presented a frame minus the wall clock painted into it",
              "before encoding: encode, RTMP, server, HTTP, player buffer, decode and display.",
              "Viewers without a join time wait on their page before the push starts (it polls every",
              "50 ms until the stream is up, then plays); their first frame is counted from when the push's",
              "first keyframe reached the server (commeowd's log). Late joins open their page at their time.",
              "A WebRTC viewer of a passed-through stream starts at the next keyframe.",
              "Stock hls.js: `lowLatencyMode: true` only (what Safari, VLC and other pages follow: the",
              "playlist's hold-back). The page's: the web app's settings, catch-up to 1.5x.",
              "Screenshots: bench/out/latency-*.png."]
    name = "latency" if args.gop_frames == 60 else f"latency-gop{args.gop_frames}"
    write_report(name, "\n".join(lines) + "\n", summary)


def first_keyframe_ms(log):
    """Unix ms of commeowd's "muxing started" line in its log."""
    for line in Path(log).read_text().splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "muxing started" in line:
            return datetime.fromisoformat(line.split()[0]).timestamp() * 1000
    sys.exit(f"latency: no \"muxing started\" in {log}")


def hls_version():
    package = LATENCY / "node_modules" / "hls.js" / "package.json"
    return json.loads(package.read_text())["version"] if package.exists() else "?"


if __name__ == "__main__":
    main()
