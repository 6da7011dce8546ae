#!/usr/bin/env python3
"""First-light benchmark driver: commeowd and nginx-rtmp receive the same RTMP push at the
same moment (one ffmpeg, tee muxer), and we measure for each server:

- CPU seconds used by the server processes during the push (utime + stime from /proc);
- peak RSS (VmHWM; for nginx, master + worker);
- segment lag: how long after a segment's last frame was pushed the segment appeared in
  the server's playlist, seen by polling each playlist over HTTP every 5 ms.

The push time of a frame comes from commeowd's EXT-X-PROGRAM-DATE-TIME (its ingest wall
clock of each segment's first frame) plus the frame's offset in the segment. Both servers
get the same bytes from the same tee at the same instant, so that reference is shared.
Run through bench/first-light.sh, which builds and installs what is needed.
"""

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from harness import OUT, Commeowd, Nginx, cpu_seconds, percentile, write_report
FPS = 30


def make_input(seconds):
    """1080p30, ~6 Mbps H.264 (2 s GOP, fixed) + AAC, encoded once and cached."""
    path = OUT / f"input-1080p30-{seconds}s.flv"
    if path.exists():
        return path
    print(f"encoding {seconds} s of 1080p30 test input (once)...", file=sys.stderr)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "12M",
         "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(path)],
        check=True)
    return path


def memory_kb(pids, fields=("VmHWM", "RssAnon", "RssFile")):
    """Sums /proc status fields over processes, in kB."""
    total = dict.fromkeys(fields, 0)
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key = line.split(":", 1)[0]
                if key in total:
                    total[key] += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


class MemorySampler(threading.Thread):
    """Peak private (anonymous) and shared-library (file-backed) RSS, sampled every 250 ms:
    VmHWM alone cannot tell a server's own memory from the libraries it maps."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak_anon, self.peak_file = pids, 0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            m = memory_kb(self.pids)
            self.peak_anon = max(self.peak_anon, m["RssAnon"])
            self.peak_file = max(self.peak_file, m["RssFile"])
            time.sleep(0.25)


# What a remuxer needs mapped; everything else in the process comes from Debian's libav
# being built with every codec, protocol and filter library (librsvg, gnutls, x265, ...).
NEEDED_FOR_REMUX = re.compile(r"/commeowd$|/(ld-linux[^/]*|libc|libm|libgcc_s|libavformat|libavcodec|libavutil|libswresample)\.so")


def library_pages_kb(pid):
    """File-backed RSS of a process split into (needed for remuxing, other libraries)."""
    needed = other = 0
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not line.startswith(("Rss", "Size")) and ":" not in head[0]:
            name = head[5] if len(head) > 5 else ""
        elif line.startswith("Rss:") and name.startswith("/"):
            kb = int(line.split()[1])
            if NEEDED_FOR_REMUX.search(name):
                needed += kb
            else:
                other += kb
    return needed, other


class Poller(threading.Thread):
    """Polls one playlist; records when each segment URI first appeared, and its EXTINF
    and PROGRAM-DATE-TIME."""

    def __init__(self, name, port, path, interval):
        super().__init__(daemon=True)
        self.name, self.port, self.path, self.interval = name, port, path, interval
        self.seen = {}  # uri -> (first_seen, duration, pdt or None, order)
        self.stop = threading.Event()

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode()
                now = time.time()
                if response.status == 200:
                    self.parse(body, now)
            except (OSError, http.client.HTTPException):
                conn = None
            time.sleep(self.interval)

    def parse(self, text, now):
        duration = pdt = None
        sequence = 0
        for line in text.splitlines():
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                sequence = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            elif line.startswith("#EXTINF:"):
                duration = float(line.split(":", 1)[1].rstrip(","))
            elif line and not line.startswith("#"):
                if line not in self.seen:
                    self.seen[line] = (now, duration, pdt, sequence)
                sequence += 1
                duration = pdt = None

    def segments(self):
        """In order: (first_seen, duration, pdt, start offset in the stream)."""
        rows, offset = [], 0.0
        for uri, (seen, duration, pdt, order) in sorted(self.seen.items(), key=lambda kv: kv[1][3]):
            rows.append((seen, duration, pdt, offset))
            offset += duration
        return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--poll-ms", type=float, default=5.0,
                        help="playlist polling interval: the lag resolution, and a load on both servers")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    source = make_input(args.seconds)

    nginx = Nginx()
    commeowd = Commeowd()
    c_http, c_rtmp, key = commeowd.http_port, commeowd.rtmp_port, commeowd.key
    nginx_http, nginx_rtmp = nginx.http_port, nginx.rtmp_port
    nginx_pids = nginx.pids()

    pollers = {
        "commeowd": Poller("commeowd", c_http, "/hls/bench/source/index.m3u8", args.poll_ms / 1000),
        "nginx-rtmp": Poller("nginx-rtmp", nginx_http, "/hls/bench.m3u8", args.poll_ms / 1000),
    }
    for p in pollers.values():
        p.start()
    pids = {"commeowd": [commeowd.proc.pid], "nginx-rtmp": nginx_pids}
    cpu_before = {k: cpu_seconds(v) for k, v in pids.items()}
    samplers = {k: MemorySampler(v) for k, v in pids.items()}
    for sampler in samplers.values():
        sampler.start()

    print(f"pushing {args.seconds} s of 1080p30 to both servers at once...", file=sys.stderr)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(source), "-map", "0",
         "-c", "copy", "-f", "tee",
         f"[f=flv:onfail=ignore]rtmp://127.0.0.1:{c_rtmp}/live/{key}|"
         f"[f=flv:onfail=ignore]rtmp://127.0.0.1:{nginx_rtmp}/live/bench"],
        check=True)
    time.sleep(3)
    cpu = {k: cpu_seconds(v) - cpu_before[k] for k, v in pids.items()}
    rss = {k: memory_kb(v)["VmHWM"] / 1024 for k, v in pids.items()}
    for sampler in samplers.values():
        sampler.stop.set()
        sampler.join()
    lib_needed, lib_other = library_pages_kb(commeowd.proc.pid)
    for p in pollers.values():
        p.stop.set()
        p.join()

    # Push-time reference from commeowd's ingest clock: offset -> wall time.
    ours = pollers["commeowd"].segments()
    anchors = [(offset, pdt) for (_, _, pdt, offset) in ours if pdt is not None]

    def pushed_at(offset):
        base_offset, base_wall = min(anchors, key=lambda a: abs(a[0] - offset))
        return base_wall + (offset - base_offset)

    results = {}
    for name, poller in pollers.items():
        lags = []
        for seen, duration, _, offset in poller.segments():
            last_frame = offset + duration - 1 / FPS
            lags.append((seen - pushed_at(last_frame)) * 1000)
        # The last segment is closed by the end of the stream, not by a keyframe.
        lags = lags[:-1]
        results[name] = {
            "cpu_s": cpu[name], "peak_rss_mb": rss[name], "segments": len(lags),
            "peak_private_mb": samplers[name].peak_anon / 1024,
            "peak_shared_lib_mb": samplers[name].peak_file / 1024,
            "lag_ms_p50": statistics.median(lags) if lags else float("nan"),
            "lag_ms_p99": percentile(lags, 99), "lag_ms_max": max(lags) if lags else float("nan"),
        }

    commeowd.stop()
    nginx.stop()

    c, n = results["commeowd"], results["nginx-rtmp"]
    lines = [
        f"# First light: commeowd vs nginx-rtmp ({args.seconds} s, 1080p30 ~6 Mbps H.264 + AAC, 2 s GOP, one push teed to both, playlists polled every {args.poll_ms:g} ms)",
        "",
        "| server | CPU s | peak RSS MB | of which private | of which shared libs | segments | lag p50 ms | lag p99 ms | lag max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.1f} | {r['peak_private_mb']:.1f} | "
                     f"{r['peak_shared_lib_mb']:.1f} | {r['segments']} | "
                     f"{r['lag_ms_p50']:.0f} | {r['lag_ms_p99']:.0f} | {r['lag_ms_max']:.0f} |")
    ratio = lambda a, b: a / b if b else float("nan")
    lines += ["", f"commeowd / nginx-rtmp: CPU x{ratio(c['cpu_s'], n['cpu_s']):.2f}, "
              f"RSS x{ratio(c['peak_rss_mb'], n['peak_rss_mb']):.2f}, "
              f"lag p50 x{ratio(c['lag_ms_p50'], n['lag_ms_p50']):.2f}",
              "", f"commeowd's shared-library pages: {lib_needed / 1024:.1f} MB in libraries a remuxer needs "
              f"(itself, libc, libavformat/codec/util, libswresample), {lib_other / 1024:.1f} MB in libraries "
              "Debian's full libav build loads besides (librsvg, gnutls, x265, ...).",
              "", f"Lag = first seen in the playlist (polled every {args.poll_ms:g} ms) minus when the segment's last frame was pushed.",
              "CPU includes answering the playlist polls (the same number of requests for both servers).",
              "Private = anonymous RSS (the server's own heap, including media held in memory);",
              "shared libs = file-backed RSS (mapped code and data of the binary and its libraries)."]
    write_report("first-light", "\n".join(lines) + "\n", results)


if __name__ == "__main__":
    main()
