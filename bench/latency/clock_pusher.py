#!/usr/bin/env python3
"""Pushes video whose every frame carries the wall-clock time it was made, as a grid of
black and white blocks a page can read back (no human reads a clock).

Frame: 640x360 grey. The top 120 lines hold 3 rows of 16 blocks (40x40 px), row-major,
most significant bit first: 40 bits of Unix time in milliseconds modulo 2^40, then an
8-bit check (the sum of those five bytes, modulo 256). White = 1, black = 0. Frames are
made at 30 fps in real time and piped to the real ffmpeg CLI, which encodes them with
libx264 (zerolatency, a 2 s GOP, or GOP_FRAMES frames: 250 is OBS's Simple mode, with
scene-cut detection on as there) and pushes RTMP to every URL given (tee muxer).

The first two frames are grey (see main). Usage: [GOP_FRAMES=N] clock_pusher.py SECONDS RTMP_URL [RTMP_URL ...]
"""

import os
import subprocess
import sys
import time

WIDTH, HEIGHT, FPS = 640, 360, 30
BLOCK, COLUMNS, ROWS = 40, 16, 3


def frame(millis):
    value = millis % (1 << 40)
    data = value.to_bytes(5, "big")
    bits = (value << 8) | (sum(data) % 256)
    lines = []
    for row in range(ROWS):
        line = bytearray()
        for column in range(COLUMNS):
            bit = (bits >> (47 - (row * COLUMNS + column))) & 1
            line += bytes([255 if bit else 0]) * BLOCK
        lines.append(bytes(line) * BLOCK)
    rest = bytes([128]) * (WIDTH * (HEIGHT - ROWS * BLOCK))
    return b"".join(lines) + rest


def main():
    seconds, urls = float(sys.argv[1]), sys.argv[2:]
    gop = int(os.environ.get("GOP_FRAMES", 2 * FPS))
    # A fixed 2 s GOP as the box asks; anything else as OBS's x264 sends it (min 1 frame,
    # scene cuts on).
    gop_args = (["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"] if gop == 2 * FPS
                else ["-g", str(gop), "-sc_threshold", "40"])
    tee = "|".join(f"[f=flv:onfail=ignore]{u}" for u in urls)
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
         "-s", f"{WIDTH}x{HEIGHT}", "-framerate", str(FPS), "-i", "-",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
         *gop_args, "-b:v", "1M",
         # tee does not ask the encoder for global headers; FLV needs them (avcC).
         "-flags:v", "+global_header", "-map", "0:v", "-f", "tee", tee],
        stdin=subprocess.PIPE)
    start = time.time()
    n = 0
    # ffmpeg connects to the servers only once it has read the first frame, and reads the
    # second after that (a frame is larger than the pipe): the first two frames are made
    # before the push is up, so they carry no clock (grey: unreadable), and the clock and
    # the schedule start with the third. OBS too connects before it encodes anything;
    # without this, the seconds ffmpeg takes to start would be painted into the stream as
    # latency that players starting at its first keyframe keep.
    blank = bytes([128]) * (WIDTH * HEIGHT)
    try:
        while time.time() - start < seconds:
            if n == 2:
                start = time.time() - n / FPS
            due = start + n / FPS
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            ffmpeg.stdin.write(frame(int(time.time() * 1000)) if n >= 2 else blank)
            ffmpeg.stdin.flush()
            n += 1
    except BrokenPipeError:
        pass
    finally:
        try:
            ffmpeg.stdin.close()
        except BrokenPipeError:
            pass
        ffmpeg.wait()


if __name__ == "__main__":
    main()
