#!/usr/bin/env python3
"""LL-HLS blocking playlist reload under load.

- Answer delay: a player asks for the next part (_HLS_msn/_HLS_part from the preload hint);
  delay = when the answer arrived minus when commeowd published that part (its debug log
  line "part published", same clock).
- CPU: commeowd's CPU (utime + stime, % of one core) while a stream is pushed, alone, then
  with 500 requests held for a part that is seconds away, then with 500 players following
  the live edge (each answer is re-requested at once, ~3 answers per player per second).

Usage: python3 bench/blocking.py [--players 500] [--seconds 15]   (after bench/latency.sh
has installed and built what it needs). Results: bench/out/blocking.md
"""

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
import zlib
from datetime import datetime

from harness import ROOT, Commeowd, cpu_seconds, percentile, write_report

HINT = re.compile(rb'PRELOAD-HINT:TYPE=PART,URI="[0-9a-f]+-(\d+)\.(\d+)\.m4s"')
PUBLISHED = re.compile(r"^(\S+Z) .*part published sequence=(\d+) part=(\d+)")


async def request(reader, writer, path):
    # Browsers always offer gzip; so do these players.
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length)
    arrived = time.time()
    if re.search(rb"(?i)content-encoding: *gzip", head):
        body = zlib.decompress(body, wbits=31)
    return status, body, arrived


SERVED = {"answers": 0}


async def follow_live_edge(port, path, stop, answers=None):
    """One LL-HLS player: always asks for the part after the newest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _, body, _ = await request(reader, writer, path)
    while not stop.is_set():
        sequence, part = HINT.search(body).groups()
        status, body, arrived = await request(reader, writer, f"{path}?_HLS_msn={int(sequence)}&_HLS_part={int(part)}")
        SERVED["answers"] += 1
        if answers is not None and status == 200:
            answers.append((int(sequence), int(part), arrived))
    writer.close()


async def wait_far_ahead(port, path, stop):
    """A request held for a part about two segments away (answered or 503, then again):
    the segment after the one being built, the farthest RFC 8216bis lets a client ask
    (two past the last complete one; beyond, the box answers 400 at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _, body, _ = await request(reader, writer, path)
    while not stop.is_set():
        sequence, _ = HINT.search(body).groups()
        _, body, _ = await request(reader, writer, f"{path}?_HLS_msn={int(sequence) + 1}")
        if not HINT.search(body):
            _, body, _ = await request(reader, writer, path)
    writer.close()


async def phase(commeowd, seconds, players, kind, answers=None):
    stop = asyncio.Event()
    path = "/hls/bench/ll/index.m3u8"
    make = {"follow": follow_live_edge, "held": wait_far_ahead}[kind]
    tasks = [asyncio.create_task(make(commeowd.http_port, path, stop)) for _ in range(players)]
    if answers is not None:
        tasks.append(asyncio.create_task(follow_live_edge(commeowd.http_port, path, stop, answers)))
    await asyncio.sleep(2)  # all connected and in step with the stream
    before, t0 = cpu_seconds([commeowd.proc.pid]), time.monotonic()
    SERVED["answers"] = 0
    await asyncio.sleep(seconds)
    used = cpu_seconds([commeowd.proc.pid]) - before
    wall = time.monotonic() - t0
    phase.rate = SERVED["answers"] / wall
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return 100 * used / wall


def published_times(log):
    times = {}
    for line in log.read_text().splitlines():
        m = PUBLISHED.search(line)
        if m:
            stamp = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            times.setdefault((int(m.group(2)), int(m.group(3))), stamp)
    return times


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--part-target", type=float, default=0.334,
                        help="hls.part_target: shorter parts, lower latency, more requests")
    args = parser.parse_args()
    commeowd = Commeowd(log_level="warn,commeow::media=debug",
                        # Every player comes from 127.0.0.1 here, standing for 500 phones.
                        config=f"[hls]\npart_target = {args.part_target}\n"
                        "[http]\nconnections_per_address = 2048\n")
    pusher = subprocess.Popen([sys.executable, str(ROOT / "bench" / "latency" / "clock_pusher.py"),
                               str(3 * args.seconds + 40), commeowd.rtmp_url()])
    try:
        await asyncio.sleep(4)  # the first segment exists
        answers = []
        alone = await phase(commeowd, args.seconds, 0, "follow", answers)
        held = await phase(commeowd, args.seconds, args.players, "held")
        following = await phase(commeowd, args.seconds, args.players, "follow")
        rate = phase.rate
    finally:
        pusher.terminate()
        pusher.wait()
        commeowd.stop()

    published = published_times(commeowd.log)
    delays = [(arrived - published[(s, p)]) * 1000 for s, p, arrived in answers if (s, p) in published]
    lines = [
        f"# LL-HLS blocking reload ({args.players} held requests, {args.seconds} s per phase, part target {args.part_target} s, loopback)",
        "",
        "| answer delay after the part is published | ms |",
        "| --- | ---: |",
        f"| p50 | {statistics.median(delays):.2f} |",
        f"| p99 | {percentile(delays, 99):.2f} |",
        f"| max | {max(delays):.2f} |",
        f"| answers measured | {len(delays)} |",
        "",
        "| commeowd CPU, % of one core | % |",
        "| --- | ---: |",
        f"| stream pushed, one player | {alone:.1f} |",
        f"| + {args.players} requests held for a part ~2 segments away | {held:.1f} (+{held - alone:.1f}) |",
        f"| + {args.players} players following the live edge ({rate:.0f} blocking answers/s served) | {following:.1f} (+{following - alone:.1f}) |",
    ]
    name = "blocking" if args.part_target == 0.334 else f"blocking-parts-{args.part_target}"
    write_report(name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
