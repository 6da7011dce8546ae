#!/usr/bin/env python3
"""What WebRTC viewers cost the box: CPU and RSS with 0, 1, 10 and 50 WHEP viewers on one
channel, in one run.

One push (the real ffmpeg CLI: 1280x720, 30 fps, x264 zerolatency at 2.5 Mb/s, a 2 s GOP,
AAC) into commeowd's release build; then `whepload` (bench/load) opens each step's
viewers, waits until every one receives video, and measures the server over the window.
Encryption (SRTP) is per viewer, so the cost per viewer is the slope. The step with no
viewer is the baseline: ingest and LL-HLS packaging only. Run through bench/webrtc.sh.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

from harness import OUT, ROOT, Commeowd, cpu_seconds, wait_for_url, write_report

LOAD = ROOT / "target" / "release" / "whepload"


def push(url, seconds):
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
         "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", url],
        stdin=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20, help="measured window per step")
    parser.add_argument("--steps", default="0,1,10,50", help="viewers per step")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    commeowd = Commeowd(config="[webrtc]\nport = 0\nmax_viewers = 64\nmax_viewers_per_channel = 64\nmax_viewers_per_device = 64\n")
    pusher = push(commeowd.rtmp_url(), 60 + len(steps) * (args.seconds + 30))
    results = []
    try:
        wait_for_url(commeowd.url("/hls/bench/master.m3u8"))
        time.sleep(3)
        for viewers in steps:
            if viewers == 0:
                cpu0 = cpu_seconds([commeowd.proc.pid])
                t0 = time.monotonic()
                time.sleep(args.seconds)
                cpu = cpu_seconds([commeowd.proc.pid]) - cpu0
                results.append({"viewers": 0, "server_cpu_percent": cpu / (time.monotonic() - t0) * 100,
                                "server_rss_kb": rss_kb(commeowd.proc.pid), "per_viewer": []})
                continue
            run = subprocess.run(
                [str(LOAD), "--url", commeowd.url("/whep/bench"), "--viewers", str(viewers),
                 "--seconds", str(args.seconds), "--server-pid", str(commeowd.proc.pid)],
                capture_output=True, text=True, timeout=args.seconds + 120)
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                raise SystemExit(f"whepload failed at {viewers} viewers")
            results.append(json.loads(run.stdout))
            # Sessions end as the viewers' sockets go quiet; the next step starts clean.
            time.sleep(3)
    finally:
        pusher.terminate()
        pusher.wait()
        commeowd.stop()

    base = results[0]["server_cpu_percent"] if results and results[0]["viewers"] == 0 else 0.0
    lines = [
        f"# WebRTC viewers' cost: commeowd, one 720p30 2.5 Mb/s channel ({args.seconds:.0f} s a step, loopback)",
        "",
        "| WebRTC viewers | server CPU % (of one core) | above no viewers, per viewer | server RSS MB | video fps per viewer (min / median) | kb/s per viewer (median) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        n = r["viewers"]
        fps = [v["video_fps"] for v in r["per_viewer"]]
        kbps = [v["kbps"] for v in r["per_viewer"]]
        per = (r["server_cpu_percent"] - base) / n if n else float("nan")
        lines.append(
            f"| {n} | {r['server_cpu_percent']:.1f} | {per:.2f} | {r['server_rss_kb'] / 1024:.1f} | "
            f"{(min(fps) if fps else float('nan')):.1f} / {(statistics.median(fps) if fps else float('nan')):.1f} | "
            f"{(statistics.median(kbps) if kbps else float('nan')):.0f} |")
    lines += ["", "CPU: the daemon's user + system time over the window, from /proc (100 % = one core).",
              "The viewers (whepload, str0m) run on the same two cores and are not counted.",
              "Per viewer: the step's CPU above the no-viewer step, divided by its viewers."]
    write_report("webrtc-cost", "\n".join(lines) + "\n", results)


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
