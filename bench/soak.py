#!/usr/bin/env python3
"""Soak run: one live stream with LL-HLS players pulling parts as hls.js does (a blocking
playlist reload for the hinted part, then the part), 200 chat sockets with a steady chat,
and donations at a steady rate, against commeowd's release build, for `--minutes`.

Every minute: RSS, SQLite's share of it (`/metrics`), file descriptors, CPU (share of one
core), the newest part's age (`/metrics`), and the donations' p50/p99 latency. Fails
(exit 1) if RSS net of SQLite's page caches grows by more than 5 % after the first five
minutes, if SQLite holds more than its caches' bound (42 MB: they fill as the database
grows, by design, so the raw RSS of a growing database climbs until they are full), if a
player stalls (no new part for 3 s), or if any request errors. Run through bench/soak.sh; the table goes to bench/out/soak.md.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from harness import Commeowd, cpu_seconds, percentile, write_report

HINT = re.compile(rb'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')
CONFIG = """
[http]
# Every client here is one loopback address standing for a venue of phones.
connections_per_address = 2048
[chat]
rate_messages = 1000
rate_seconds = 1.0
sockets_per_address = 1000
[hls]
target_duration = 2.0
[auth]
# One login for the whole run: the soak measures the box, not the clients' token refresh.
access_token_seconds = 86400
"""

ERRORS = []
STALLS = []
PARTS = {"fetched": 0}


def proc_value(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(server, name):
    with urllib.request.urlopen(server.url("/metrics"), timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return None


async def http_get(reader, writer, path):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length)
    return status, body


async def player(port, slug, stop, n):
    """An LL-HLS player: blocking reload for the hinted part, then the part, as hls.js does."""
    base = f"/hls/{slug}/ll/"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status, body = await http_get(reader, writer, base + "index.m3u8")
    last_part = time.monotonic()
    while not stop.is_set():
        hint = HINT.search(body)
        if status != 200 or not hint:
            ERRORS.append(f"player {n}: playlist {status}")
            await asyncio.sleep(1)
            status, body = await http_get(reader, writer, base + "index.m3u8")
            continue
        uri = hint.group(1).decode()
        part_status, part = await http_get(reader, writer, base + uri)
        now = time.monotonic()
        if part_status != 200 or not part:
            ERRORS.append(f"player {n}: part {uri} {part_status}")
        else:
            PARTS["fetched"] += 1
            if now - last_part > 3.0:
                STALLS.append(f"player {n}: {now - last_part:.1f} s without a part before {uri}")
            last_part = now
        sequence, index = re.search(r"-(\d+)\.(\d+)\.m4s", uri).groups()
        status, body = await http_get(
            reader, writer, f"{base}index.m3u8?_HLS_msn={int(sequence)}&_HLS_part={int(index)}")
    writer.close()


async def websocket(port, slug, token=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write((f"GET /api/channels/{slug}/chat HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"{auth}\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"chat socket refused: {head[:80]!r}")
    return reader, writer


async def read_frames(reader, writer, stop, counts):
    """Reads frames (answering pings) until `stop`."""
    while not stop.is_set():
        try:
            b0, b1 = await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not stop.is_set():
                ERRORS.append("a chat socket was closed")
            return
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        opcode = b0 & 0x0F
        if opcode == 0x9:  # ping: pong, masked as a client must
            send_frame(writer, 0xA, payload)
        elif opcode == 0x1:
            counts["frames"] += 1


def send_frame(writer, opcode, payload):
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    n = len(payload)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


async def chatter(port, slug, token, stop, every):
    reader, writer = await websocket(port, slug, token)
    counts = {"frames": 0}
    reading = asyncio.create_task(read_frames(reader, writer, stop, counts))
    n = 0
    while not stop.is_set():
        send_frame(writer, 0x1, json.dumps({"type": "chat", "text": f"soak {n}"}).encode())
        await writer.drain()
        n += 1
        await asyncio.sleep(every)
    await reading


async def donor(port, slug, token, stop, every, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while not stop.is_set():
        body = json.dumps({"amount": 100, "message": ""}).encode()
        started = time.monotonic()
        writer.write((f"POST /api/channels/{slug}/donations HTTP/1.1\r\nHost: soak\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      f"Idempotency-Key: soak-{time.time_ns():x}-{n}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        latencies.append(time.monotonic() - started)
        if status != 201:
            ERRORS.append(f"donation {n}: {status} {head[:60]!r}")
        n += 1
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
    writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--players", type=int, default=20)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--chat-every", type=float, default=0.5, help="seconds between chat messages")
    parser.add_argument("--donation-every", type=float, default=0.2, help="seconds between donations")
    args = parser.parse_args()

    server = Commeowd(slug="soak", config=CONFIG)
    pid = server.proc.pid
    seconds = int(args.minutes * 60)
    push = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", str(seconds + 60), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-g", "60", "-b:v", "2500k", "-c:a", "aac", "-b:a", "96k", "-f", "flv", server.rtmp_url()])
    streamer = server.add_user("streamer", role="streamer")
    # The channel must have an owner to receive donations.
    subprocess.run([str(server_bin()), "--data-dir", str(server.data), "channel", "give", "soak", "streamer"],
                   check=True, capture_output=True)
    fan = server.add_user("fan")
    subprocess.run([str(server_bin()), "--data-dir", str(server.data), "wallet", "grant", "fan",
                    "100000000", "--reason", "soak"], check=True, capture_output=True)
    for _ in range(60):
        try:
            with urllib.request.urlopen(server.url("/hls/soak/ll/index.m3u8"), timeout=5) as r:
                if HINT.search(r.read()):
                    break
        except OSError:
            pass
        await asyncio.sleep(1)

    stop = asyncio.Event()
    tasks = [asyncio.create_task(player(server.http_port, "soak", stop, n)) for n in range(args.players)]
    readers = []
    for _ in range(args.sockets - 1):
        reader, writer = await websocket(server.http_port, "soak")
        readers.append(asyncio.create_task(read_frames(reader, writer, stop, {"frames": 0})))
    tasks.append(asyncio.create_task(chatter(server.http_port, "soak", streamer, stop, args.chat_every)))
    latencies = []
    tasks.append(asyncio.create_task(donor(server.http_port, "soak", fan, stop, args.donation_every, latencies)))

    rows = []
    started = time.monotonic()
    cpu_before = cpu_seconds([pid])
    for minute in range(1, int(args.minutes) + 1):
        await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
        cpu_now = cpu_seconds([pid])
        window = latencies[:]
        latencies.clear()
        rows.append({
            "minute": minute,
            "rss_mb": proc_value(pid, "VmRSS") / 1e6,
            "sqlite_mb": (metric(server, "commeow_store_sqlite_memory_bytes") or 0.0) / 1e6,
            "fds": open_fds(pid),
            "cpu_percent": 100 * (cpu_now - cpu_before) / 60,
            "part_age_s": metric(server, 'commeow_hls_part_age_seconds{channel="soak"}'),
            "donations": len(window),
            "donation_p50_ms": 1000 * percentile(window, 50) if window else None,
            "donation_p99_ms": 1000 * percentile(window, 99) if window else None,
            "errors": len(ERRORS),
            "stalls": len(STALLS),
        })
        cpu_before = cpu_now
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    stop.set()
    for task in tasks + readers:
        task.cancel()
    push.terminate()
    balanced = subprocess.run([str(server_bin()), "--data-dir", str(server.data), "wallet", "check"],
                              capture_output=True, text=True)
    server.stop()

    after_five = [r for r in rows if r["minute"] >= 5]
    for r in rows:
        r["net_mb"] = r["rss_mb"] - r["sqlite_mb"]
    grew = lambda key: (after_five[-1][key] / after_five[0][key] - 1) * 100 if len(after_five) > 1 else 0.0
    growth, raw_growth = grew("net_mb"), grew("rss_mb")
    sqlite_peak = max(r["sqlite_mb"] for r in rows) if rows else 0.0
    lines = ["| minute | RSS MB | SQLite MB | RSS − SQLite MB | fds | CPU % of a core | part age s | donations | p50 ms | p99 ms | errors | stalls |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"
    for r in rows:
        lines.append(f"| {r['minute']} | {fmt(r['rss_mb'])} | {fmt(r['sqlite_mb'])} | {fmt(r['net_mb'])} | {r['fds']} | {fmt(r['cpu_percent'])} | "
                     f"{fmt(r['part_age_s'], 2)} | {r['donations']} | {fmt(r['donation_p50_ms'])} | "
                     f"{fmt(r['donation_p99_ms'])} | {r['errors']} | {r['stalls']} |")
    verdict = []
    if growth > 5:
        verdict.append(f"RSS net of SQLite grew {growth:.1f} % after minute 5")
    if sqlite_peak > 44:
        verdict.append(f"SQLite held {sqlite_peak:.1f} MB, past its caches' 42 MB")
    if STALLS:
        verdict.append(f"{len(STALLS)} stalls, first: {STALLS[0]}")
    if ERRORS:
        verdict.append(f"{len(ERRORS)} errors, first: {ERRORS[0]}")
    if balanced.returncode != 0:
        verdict.append("the ledger does not balance")
    summary = (f"Soak: {args.minutes:g} min, {args.players} LL-HLS players, {args.sockets} chat sockets "
               f"(a message every {args.chat_every} s), a donation every {args.donation_every} s. "
               f"{PARTS['fetched']} parts fetched. After minute 5: RSS net of SQLite {growth:+.1f} %, "
               f"RSS {raw_growth:+.1f} %, SQLite at most {sqlite_peak:.1f} MB. "
               f"Ledger: {(balanced.stdout.strip() or balanced.stderr.strip()).rstrip('.')}. "
               + ("PASS" if not verdict else "FAIL: " + "; ".join(verdict)))
    write_report("soak", summary + "\n\n" + "\n".join(lines) + "\n", {"rows": rows, "errors": ERRORS[:20], "stalls": STALLS[:20]})
    return 0 if not verdict else 1


def server_bin():
    from harness import BIN
    return BIN


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
