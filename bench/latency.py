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
import time

from harness import OUT, ROOT, Commeowd, Nginx, free_port, percentile, wait_for_url, wait_listening, write_report

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

    commeowd = Commeowd()
    # The same box with shorter LL-HLS parts (the shipped default is 0.334 s), to weigh
    # what a stock player gains against the requests it costs.
    short_parts = Commeowd(config="[hls]\npart_target = 0.2\n", data_name="commeowd-data-short")
    nginx = Nginx()
    page_port = free_port()
    page_server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(page_port), "--bind", "127.0.0.1", "--directory", str(LATENCY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(page_port)
    pushed_at_ms = int(time.time() * 1000)
    pusher = subprocess.Popen([sys.executable, str(LATENCY / "clock_pusher.py"), str(args.seconds + 30),
                               commeowd.rtmp_url(), short_parts.rtmp_url(), nginx.rtmp_url("bench")],
                              env={**os.environ, "GOP_FRAMES": str(args.gop_frames)})
    try:
        master = commeowd.url("/hls/bench/master.m3u8")
        players = {
            "commeowd WebRTC (WHEP)": "whep:" + commeowd.url("/whep/bench"),
            "commeowd LL-HLS, stock hls.js": "stock:" + master,
            "commeowd LL-HLS, the page's hls.js": "tuned:" + master,
            "commeowd LL-HLS 0.2 s parts, stock hls.js": "stock:" + short_parts.url("/hls/bench/master.m3u8"),
            "nginx-rtmp HLS": "stock:" + f"http://127.0.0.1:{nginx.http_port}/hls/bench.m3u8",
        }
        # Each player opens the moment its server offers the stream (run.mjs polls); late
        # joins land 0.27, 0.54 and 0.81 of the way into a keyframe interval after 3 s.
        gop = args.gop_frames / 30
        late = {}
        for k in range(args.late_joins):
            at = 3 + (k + 1) * 1.27 * gop
            late[f"commeowd WebRTC, joining +{at:.1f} s@{at:.1f}"] = players["commeowd WebRTC (WHEP)"]
            late[f"commeowd LL-HLS stock, joining +{at:.1f} s@{at:.1f}"] = players["commeowd LL-HLS, stock hls.js"]
        print(f"{len(players) + len(late)} players watch for {args.seconds} s...", file=sys.stderr)
        run = subprocess.run(
            ["node", str(LATENCY / "run.mjs"), f"http://127.0.0.1:{page_port}", str(args.seconds + 5)]
            + [f"{name}={url}" for name, url in {**players, **late}.items()],
            check=True, capture_output=True, text=True,
            env={**os.environ, "OUT": str(OUT), "PUSHED_AT_MS": str(pushed_at_ms)})
        if run.stderr:
            print(run.stderr, file=sys.stderr)
        raw = json.loads(run.stdout)
    finally:
        pusher.terminate()
        pusher.wait()
        page_server.terminate()
        commeowd.stop()
        short_parts.stop()
        nginx.stop()

    lines = [
        f"# Glass to glass: commeowd WebRTC and LL-HLS vs nginx-rtmp HLS ({args.seconds} s, GOP {args.gop_frames} frames = {args.gop_frames / 30:.2f} s, hls.js {hls_version()} in headless Chromium, loopback)",
        "",
        "| player | latency p50 s | latency p95 s | opened after push start s | first frame after page load s | first frame after push start s | stalls | frames read | unreadable | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    summary = {}
    for name, r in raw.items():
        latencies = [latency / 1000 for _, latency in r["samples"]]
        first = r["firstFrameMs"] / 1000 if r["firstFrameMs"] is not None else float("nan")
        summary[name] = {
            "p50_s": statistics.median(latencies) if latencies else float("nan"),
            "p95_s": percentile(latencies, 95), "first_frame_s": first, "stalls": r["stalls"],
            "opened_s": r["openedAfterPushMs"] / 1000,
            "frames": len(latencies), "unreadable": r["unreadable"], "errors": r["errors"],
        }
        s = summary[name]
        lines.append(f"| {name} | {s['p50_s']:.2f} | {s['p95_s']:.2f} | {s['opened_s']:.2f} | {s['first_frame_s']:.2f} | "
                     f"{s['opened_s'] + s['first_frame_s']:.2f} | {s['stalls']} | "
                     f"{s['frames']} | {s['unreadable']} | {'; '.join(s['errors']) or '-'} |")
    lines += ["", "Latency = wall clock when Chromium presented a frame minus the wall clock painted into it",
              "before encoding: encode, RTMP, server, HTTP, player buffer, decode and display.",
              "Opened: each player's tab opens when its server first answers 200 for the playlist",
              "(a late join: at its time). First frame after push start: when the push started until",
              "that tab showed its first frame (the push's first keyframe is its first frame, within",
              "a few ms). A WebRTC viewer of a passed-through stream starts at the next keyframe.",
              "Stock hls.js: `lowLatencyMode: true` only (what Safari, VLC and other pages follow: the",
              "playlist's hold-back). The page's: one part of live sync and catch-up to 1.5x.",
              "Screenshots: bench/out/latency-*.png."]
    name = "latency" if args.gop_frames == 60 else f"latency-gop{args.gop_frames}"
    write_report(name, "\n".join(lines) + "\n", summary)


def hls_version():
    package = LATENCY / "node_modules" / "hls.js" / "package.json"
    return json.loads(package.read_text())["version"] if package.exists() else "?"


if __name__ == "__main__":
    main()
