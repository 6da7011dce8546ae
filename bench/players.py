#!/usr/bin/env python3
"""Third-party HLS players through a streamer's drop: commeowd vs nginx-rtmp, side by side.

One push (the real ffmpeg CLI, OBS-like: x264, 2 s GOP, AAC) is teed to both servers; it
runs, drops for a few seconds, and comes back on the same stream key, then stops for good.
Players join mid-stream and are left alone: ffmpeg, mpv, GStreamer's playbin and playbin3,
on commeowd's master.m3u8 (LL-HLS, fMP4), classic.m3u8 (MPEG-TS) and nginx-rtmp's playlist.
For each: time to first frame after it was started, seconds played before the drop and
after the return, whether it stopped by itself after the end, and what it complained of.
Run through bench/players.sh.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time

from harness import OUT, Commeowd, Nginx, wait_for_url, write_report

FPS = 30


def push(urls, seconds, size):
    """ffmpeg pushing `seconds` of test pattern and tone to every RTMP url at once."""
    outputs = "|".join(f"[f=flv:onfail=ignore]{u}" for u in urls)
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(2 * FPS),
         # tee does not ask the encoder for global headers; FLV needs them (avcC, ASC).
         "-c:a", "aac", "-b:a", "96k", "-flags", "+global_header",
         "-map", "0:v", "-map", "1:a", "-f", "tee", outputs],
        stdin=subprocess.DEVNULL)


class Player:
    """One player process; `samples` are (monotonic time, media seconds played so far)."""

    def __init__(self, kind, url):
        self.kind, self.url = kind, url
        self.samples = []
        self.log = []
        self.started = time.monotonic()
        self.ended = None
        self.lock = threading.Lock()
        self.ipc = None
        if kind == "ffmpeg":
            command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", "-i", url,
                       "-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"]
        elif kind == "mpv":
            self.ipc = os.path.join(tempfile.mkdtemp(), "mpv.sock")
            command = ["mpv", "--no-config", "--vo=null", "--ao=null", "--idle=no",
                       f"--input-ipc-server={self.ipc}", url]
        else:  # playbin, playbin3
            command = ["gst-launch-1.0", "-v", kind, f"uri={url}",
                       "video-sink=fakesink name=v sync=true silent=false",
                       "audio-sink=fakesink name=a sync=true"]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        threading.Thread(target=self._read, daemon=True).start()
        if self.ipc:
            threading.Thread(target=self._poll_mpv, daemon=True).start()

    def _frame(self):
        with self.lock:
            played = self.samples[-1][1] + 1 / FPS if self.samples else 1 / FPS
            self.samples.append((time.monotonic(), played))

    def _read(self):
        for line in self.proc.stdout:
            if self.kind == "ffmpeg" and "Parsed_showinfo" in line and " n:" in line:
                self._frame()
            elif self.kind.startswith("playbin") and "(v:sink)" in line and "chain" in line:
                self._frame()
            elif re.search(r"error|warn|fail|duplicated|discontinu", line, re.I):
                self.log.append(line.strip()[:160])
            elif self.kind == "ffmpeg" and "Opening '" in line and "init" in line:
                self.log.append("init fetch")
        self.ended = time.monotonic()

    def _poll_mpv(self):
        """mpv over its JSON IPC: the play position, every 0.2 s."""
        deadline = time.monotonic() + 10
        sock = None
        while sock is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(self.ipc)
            except OSError:
                sock = None
                time.sleep(0.1)
        if sock is None:
            return
        reader = sock.makefile("r")
        last, played = None, 0.0
        try:
            while self.proc.poll() is None:
                sock.sendall(b'{"command": ["get_property", "time-pos"], "request_id": 1}\n')
                while True:
                    reply = json.loads(reader.readline() or "{}")
                    if reply.get("request_id") == 1 or not reply:
                        break
                position = reply.get("data")
                if isinstance(position, (int, float)):
                    if last is not None and 0 < position - last < 2:
                        played += position - last
                        with self.lock:
                            self.samples.append((time.monotonic(), played))
                    elif last is None:
                        with self.lock:
                            self.samples.append((time.monotonic(), 0.0))
                    last = position
                time.sleep(0.2)
        except (OSError, ValueError):
            pass

    def played_between(self, start, end):
        with self.lock:
            inside = [p for t, p in self.samples if start <= t < end]
            before = [p for t, p in self.samples if t < start]
        if not inside:
            return 0.0
        return inside[-1] - (before[-1] if before else inside[0])

    def first_frame(self):
        with self.lock:
            return self.samples[0][0] - self.started if self.samples else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=int, default=30, help="seconds pushed before the drop")
    parser.add_argument("--drop", type=int, default=8, help="seconds the streamer is away")
    parser.add_argument("--after", type=int, default=25, help="seconds pushed after the return")
    parser.add_argument("--join", type=int, default=15, help="players start this long into the push")
    parser.add_argument("--players", default="ffmpeg,mpv,playbin,playbin3")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    commeowd = Commeowd(config="[hls]\nlinger_seconds = 15\n")
    nginx = Nginx()
    urls = {
        "commeowd master.m3u8 (LL-HLS, fMP4)": commeowd.url("/hls/bench/master.m3u8"),
        "commeowd classic.m3u8 (TS)": commeowd.url("/hls/bench/classic.m3u8"),
        "nginx-rtmp (TS)": f"http://127.0.0.1:{nginx.http_port}/hls/bench.m3u8",
    }
    targets = [commeowd.rtmp_url(), nginx.rtmp_url("bench")]
    players = []
    try:
        first = push(targets, args.before, "320x240")
        for url in urls.values():
            wait_for_url(url)
        time.sleep(max(0, args.join - 3))
        for kind in args.players.split(","):
            for name, url in urls.items():
                players.append((name, Player(kind, url)))
        first.wait()
        dropped = time.monotonic()
        time.sleep(args.drop)
        second = push(targets, args.after, "320x240")
        returned = time.monotonic()
        second.wait()
        over = time.monotonic()
        # commeowd ends its playlists after the linger (15 s); nginx-rtmp at once.
        deadline = over + 40
        while time.monotonic() < deadline and any(p.proc.poll() is None for _, p in players):
            time.sleep(0.5)
    finally:
        for _, p in players:
            p.stop()
        commeowd.stop()
        nginx.stop()

    lines = [
        f"# Third-party players through a drop ({args.before} s pushed, {args.drop} s away, "
        f"{args.after} s back on the same key; players started {args.join} s in)",
        "",
        "| player | playlist | first frame s | played before the drop s | played after the return s "
        "| stopped by itself | notes |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    summary = []
    for name, p in players:
        first_frame = p.first_frame()
        before = p.played_between(0, dropped + 1)
        after = p.played_between(returned, float("inf"))
        stopped = p.ended is not None and p.ended < deadline and p.proc.returncode is not None
        init_fetches = sum(1 for line in p.log if line == "init fetch")
        notes = [line for line in p.log if line != "init fetch"]
        note = f"init.mp4 fetched {init_fetches}×; " if init_fetches else ""
        note += "; ".join(sorted(set(notes))[:3]) or "-"
        summary.append({"player": p.kind, "playlist": name, "first_frame_s": first_frame,
                        "before_s": before, "after_s": after, "stopped": stopped,
                        "init_fetches": init_fetches, "notes": notes[:20]})
        lines.append(f"| {p.kind} | {name} | {first_frame if first_frame is None else round(first_frame, 1)} | "
                     f"{before:.1f} | {after:.1f} | {'yes' if stopped else 'no'} | {note.replace('|', '/')} |")
    lines += ["", "Played: media seconds each player presented (ffmpeg and GStreamer: decoded frames / 30;",
              "mpv: its play position over IPC). A player that stops at the drop shows 0 after the return."]
    write_report("players", "\n".join(lines) + "\n", summary)


if __name__ == "__main__":
    main()
