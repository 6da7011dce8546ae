#!/usr/bin/env python3
"""The transcoding ladder against the ffmpeg CLI running the same ladder on the same libav.

Input: 1080p30, ~6 Mbps H.264 (2 s GOP) + AAC, encoded once (bench/first_light.py's).
Ladder: 720p at 2500 kbps and 480p at 1000 kbps, libx264 ultrafast zerolatency, no
B-frames, audio copied; commeowd also remuxes the source (LL-HLS fMP4 and MPEG-TS), the CLI
writes its two renditions as HLS to /dev/shm.

Phases:
  live         one ffmpeg pushes the input in real time through a tee to commeowd (ladder
               on) and to an `ffmpeg -listen 1` running the ladder: CPU seconds and peak
               RSS of each, and per commeowd variant the segment lag (a blocking request
               for segment N answered, minus its PROGRAM-DATE-TIME + duration), so each
               rung's added latency is its lag minus the source's;
  passthrough  the same push to commeowd with the ladder off: its CPU and memory, so the
               ladder's own memory is the difference;
  unthrottled  the input as fast as it goes: the CLI to a null output (frames / wall
               time), and commeowd fed with no -re (each rung's encoded pictures / wall
               time, and what it had to drop as gaps).
Run through bench/ladder.sh.
"""

import argparse
import os
import re
import statistics
import subprocess
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from first_light import MemorySampler, make_input
from harness import OUT, Commeowd, cpu_seconds, free_port, percentile, wait_for_url, write_report

FPS = 30
LADDER = [("720p", 1280, 720, 2500), ("480p", 854, 480, 1000)]
LADDER_ON = "[transcode]\nenabled = true\n"  # the default rungs are the two above
LADDER_OFF = "[transcode]\nenabled = false\n"


def cli_ladder_args(output_dir):
    """The same ladder for the ffmpeg CLI, HLS out (what a venue would script)."""
    split = ";".join([f"[0:v]split={len(LADDER)}" + "".join(f"[s{i}]" for i in range(len(LADDER)))] +
                     [f"[s{i}]scale={w}:{h}[v{i}]" for i, (_, w, h, _) in enumerate(LADDER)])
    args = ["-filter_complex", split]
    for i, (_, _, _, kbps) in enumerate(LADDER):
        args += ["-map", f"[v{i}]", "-map", "0:a",
                 f"-c:v:{i}", "libx264", f"-b:v:{i}", f"{kbps}k", f"-maxrate:v:{i}", f"{kbps}k",
                 f"-bufsize:v:{i}", f"{kbps}k"]
    args += ["-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0", "-g", str(2 * FPS),
             "-sc_threshold", "0", "-c:a", "copy"]
    if output_dir is None:
        return args + ["-f", "null", "-"]
    streams = " ".join(f"v:{i},a:{i}" for i in range(len(LADDER)))
    return args + ["-f", "hls", "-hls_time", "2", "-hls_list_size", "5",
                   "-hls_flags", "delete_segments+independent_segments",
                   "-var_stream_map", streams, "-master_pl_name", "master.m3u8",
                   str(output_dir / "%v" / "index.m3u8")]


def lags(base, variant, stop, out):
    """Blocking requests for each next segment of `variant`'s LL playlist: lag in ms."""
    sequence = None
    while not stop.is_set():
        query = f"?_HLS_msn={sequence}" if sequence is not None else ""
        try:
            with urllib.request.urlopen(f"{base}/hls/stage/{variant}/index.m3u8{query}", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            time.sleep(0.2)
            continue
        answered = time.time()
        segments = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#EXT-X-PART:.*\n)*#EXTINF:([\d.]+),\n\S+-(\d+)\.m4s",
                              text)
        if not segments:
            time.sleep(0.1)
            continue
        if sequence is not None:
            for date, duration, n in segments:
                if int(n) == sequence:
                    ended = datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp() + float(duration)
                    out.append((answered - ended) * 1000)
        sequence = int(segments[-1][2]) + 1


def playlist_segments(base, path, seen):
    """Accumulates (sequence -> (duration, gap)) from a classic playlist."""
    try:
        with urllib.request.urlopen(f"{base}/hls/stage/{path}/index.m3u8", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return
    first = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    entries = re.findall(r"(#EXT-X-GAP\n)?(?:#EXT-X-PROGRAM-DATE-TIME:\S+\n)?#EXTINF:([\d.]+),", text)
    for i, (gap, duration) in enumerate(entries):
        seen[first + i] = (float(duration), bool(gap))


def lossless(run):
    """Every rung published all the media the best of them did, with no gap (a shed rung
    publishes less and no gap)."""
    media = [r["media_s"] for r in run["rungs"].values()]
    return all(r["gap_s"] == 0 for r in run["rungs"].values()) and min(media) >= max(media) - 0.5


def push(source, urls, rate=1.0):
    """The input pushed at `rate` times real time (ffmpeg's -readrate)."""
    tee = "|".join(f"[f=flv:onfail=ignore]{u}" for u in urls)
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                             "-readrate", str(rate), "-i", str(source),
                             "-c", "copy", "-map", "0", "-f", "tee", tee])


def commeowd_run(source, config, rate=1.0, with_cli=False, measure_lags=False):
    box = Commeowd(slug="stage", log_level="warn", config=config)
    result = {}
    cli = None
    try:
        urls = [box.rtmp_url()]
        if with_cli:
            port = free_port()
            out_dir = Path("/dev/shm/commeow-bench-ladder")
            subprocess.run(["rm", "-rf", str(out_dir)], check=True)
            for name, *_ in LADDER:
                (out_dir / name).mkdir(parents=True, exist_ok=True)
            cli = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                                    "-listen", "1", "-i", f"rtmp://127.0.0.1:{port}/live/cli",
                                    *cli_ladder_args(out_dir)])
            time.sleep(1.0)  # let it listen
            urls.append(f"rtmp://127.0.0.1:{port}/live/cli")
        time.sleep(1.0)  # the encoder probe at startup
        pids = [box.proc.pid]
        sampler = MemorySampler(pids)
        sampler.start()
        cli_sampler = MemorySampler([cli.pid]) if cli else None
        if cli_sampler:
            cli_sampler.start()
        cpu0 = cpu_seconds(pids)
        began = time.monotonic()
        pusher = push(source, urls, rate)
        stop = threading.Event()
        variant_lags = {"ll": [], **{name: [] for name, *_ in LADDER}}
        threads = []
        if measure_lags:
            wait_for_url(f"{box.url('/hls/stage/master.m3u8')}", timeout=30)
            for variant, out in variant_lags.items():
                t = threading.Thread(target=lags, args=(box.url(""), variant, stop, out), daemon=True)
                t.start()
                threads.append(t)
        seen = {name: {} for name, *_ in LADDER}
        result["rung_media_mb"] = 0.0
        while pusher.poll() is None:
            for name, *_ in LADDER:
                playlist_segments(box.url(""), f"{name}-ts", seen[name])
            # What the rungs hold for players: each packaging keeps twice the playlist
            # window (5 segments of 2 s), LL-HLS and MPEG-TS, at the rung's average bit rate.
            try:
                with urllib.request.urlopen(box.url("/hls/stage/classic.m3u8"), timeout=5) as r:
                    averages = re.findall(r"AVERAGE-BANDWIDTH=(\d+)", r.read().decode())[1:]
                if averages:
                    result["rung_media_mb"] = sum(int(a) / 8 * 2 * 10 * 2 for a in averages) / 1e6
            except OSError:
                pass
            time.sleep(0.5)
        pushed = time.monotonic() - began
        # The ladder finishes what it holds.
        time.sleep(3)
        for name, *_ in LADDER:
            playlist_segments(box.url(""), f"{name}-ts", seen[name])
        stop.set()
        result["wall_s"] = pushed
        result["cpu_s"] = cpu_seconds(pids) - cpu0
        sampler.stop.set()
        result["peak_mb"] = (sampler.peak_anon + sampler.peak_file) / 1024
        result["private_mb"] = sampler.peak_anon / 1024
        if cli:
            # The CLI ends with its input; its whole life's CPU from wait4 (it only listened
            # before the push).
            _, _, usage = os.wait4(cli.pid, 0)
            cli.returncode = 0
            result["cli_cpu_s"] = usage.ru_utime + usage.ru_stime
            cli_sampler.stop.set()
            result["cli_peak_mb"] = usage.ru_maxrss / 1024
        result["lags"] = variant_lags
        result["rungs"] = {name: {"media_s": sum(d for d, gap in s.values() if not gap),
                                  "gap_s": sum(d for d, gap in s.values() if gap),
                                  "segments": len(s)} for name, s in seen.items()}
    finally:
        box.stop()
        if cli and cli.poll() is None:
            cli.kill()
    return result


def cli_cpu_for(source, realtime):
    """The CLI ladder reading the file itself (no RTMP): CPU s, wall s, peak MB."""
    began = time.monotonic()
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                             *(["-re"] if realtime else []), "-i", str(source),
                             *cli_ladder_args(None)])
    sampler = MemorySampler([proc.pid])
    sampler.start()
    # utime + stime of a child that has exited: from os.wait4.
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.stop.set()
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.monotonic() - began,
            "peak_mb": usage.ru_maxrss / 1024, "ok": os.waitstatus_to_exitcode(status) == 0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--rates", type=float, nargs="+", default=[3, 4, 4.5, 5, 5.5, 6, 7],
                        help="push speeds (x real time) tried for commeowd's top speed")
    args = parser.parse_args()
    source = make_input(args.seconds)
    frames = args.seconds * FPS

    live = commeowd_run(source, LADDER_ON, with_cli=True, measure_lags=True)
    passthrough = commeowd_run(source, LADDER_OFF)
    cli_alone = cli_cpu_for(source, realtime=True)
    fast_cli = cli_cpu_for(source, realtime=False)
    # commeowd never makes its source wait: pushed faster than its ladder can go, a rung
    # skips to the next segment (gaps). Its top speed is the fastest push with no gap.
    sweep = []
    for rate in args.rates:
        run = commeowd_run(source, LADDER_ON, rate=rate)
        sweep.append((rate, run))
        if not lossless(run):
            break

    src = live["lags"]["ll"]
    rows = []
    for name, *_ in LADDER:
        lag = live["lags"][name]
        rows.append((name, statistics.median(lag) if lag else float("nan"),
                     percentile(lag, 99), statistics.median(lag) - statistics.median(src) if lag and src else float("nan"),
                     percentile(lag, 99) - percentile(src, 99) if lag and src else float("nan"), len(lag)))
    box_ladder_cpu = live["cpu_s"] - passthrough["cpu_s"]
    clean = [run for _, run in sweep if lossless(run)]
    # Measured, not the asked-for rate: the input's frames over the push's wall time.
    top_fps = max((frames / run["wall_s"] for run in clean), default=float("nan"))
    lines = [
        f"# Transcoding ladder: commeowd vs the ffmpeg CLI ({args.seconds} s of 1080p30 → 720p 2500k + 480p 1000k, libx264 ultrafast)",
        "",
        "| measure | commeowd | ffmpeg CLI | CLI / commeowd |",
        "| --- | ---: | ---: | ---: |",
        f"| CPU s, real-time push through one tee (whole process) | {live['cpu_s']:.1f} | {live.get('cli_cpu_s') or float('nan'):.1f} | {(live.get('cli_cpu_s') or float('nan')) / live['cpu_s']:.2f} |",
        f"| CPU s, the CLI reading the file itself (-re) | | {cli_alone['cpu_s']:.1f} | {cli_alone['cpu_s'] / live['cpu_s']:.2f} |",
        f"| of which the ladder (commeowd minus its passthrough run: {passthrough['cpu_s']:.1f} s) | {box_ladder_cpu:.1f} | | |",
        f"| peak RSS MB (private) | {live['peak_mb']:.0f} ({live['private_mb']:.0f}) | {live.get('cli_peak_mb', float('nan')):.0f} | |",
        f"| memory over a passthrough-only run (peak RSS) | +{live['peak_mb'] - passthrough['peak_mb']:.0f} MB ({passthrough['peak_mb']:.0f} → {live['peak_mb']:.0f}) | | |",
        f"| of which the rungs' segments held for players (the CLI's sit in /dev/shm, outside its RSS) | ~{live['rung_media_mb']:.0f} MB | | |",
        f"| top speed, fps (CLI: unthrottled; commeowd: fastest push every rung kept whole) | {top_fps:.0f} | {frames / fast_cli['wall_s']:.0f} | {frames / fast_cli['wall_s'] / top_fps:.2f} |",
        "",
        "commeowd pushed faster than real time (`-readrate`), until a rung loses media (skipped as gaps, or shed): media each rung published, and gaps:",
        "",
        "| push speed | " + " | ".join(f"{n} media s | {n} gaps s" for n, *_ in LADDER) + " |",
        "| ---: | " + " | ".join("---: | ---:" for _ in LADDER) + " |",
    ]
    for rate, run in sweep:
        lines.append(f"| {rate:g}× ({frames / run['wall_s']:.0f} fps measured) | " + " | ".join(
            f"{run['rungs'][n]['media_s']:.1f} | {run['rungs'][n]['gap_s']:.1f}" for n, *_ in LADDER) + " |")
    lines += [
        "",
        "Segment lag in the live run (a blocking request answered, minus the segment's end on the ingest clock), ms:",
        "",
        "| variant | lag p50 | lag p99 | added p50 (vs source) | added p99 | segments |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| source | {statistics.median(src) if src else float('nan'):.0f} | {percentile(src, 99):.0f} | | | {len(src)} |",
    ]
    for name, p50, p99, added50, added99, n in rows:
        lines.append(f"| {name} | {p50:.0f} | {p99:.0f} | {added50:+.0f} | {added99:+.0f} | {n} |")
    lines += ["", "Live run, rung media published: " + ", ".join(
        f"{n} {r['media_s']:.0f} s (gaps {r['gap_s']:.0f} s)" for n, r in live["rungs"].items())]
    write_report("ladder", "\n".join(lines) + "\n", {
        "live": live, "passthrough": passthrough, "cli_alone": cli_alone, "fast_cli": fast_cli,
        "sweep": sweep})


if __name__ == "__main__":
    main()
