#!/usr/bin/env python3
"""One phone (or many) on the venue Wi-Fi against the box's accounts: the security review's
reproductions (issue 21), measured on a fresh daemon each, for commeowd's release build and,
given with --baseline, another build side by side (an older commit, to show before/after).

Each scenario releases its requests at the same instant from threads behind a barrier;
"many addresses" uses 127.0.x.y source addresses (all this machine). Peak memory is the
daemon's VmHWM after the scenario; RSS is VmRSS. Run through bench/abuse.sh.
"""

import argparse
import http.client
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from harness import BIN, OUT, free_port, wait_listening, write_report

PASSWORD = "correct horse battery"


class Daemon:
    def __init__(self, binary):
        self.data = OUT / "abuse-data"
        subprocess.run(["rm", "-rf", str(self.data)], check=True)
        self.port, rtmp = free_port(), free_port()
        self.proc = subprocess.Popen(
            [str(binary), "--data-dir", str(self.data), "--http-listen", f"127.0.0.1:{self.port}",
             "--rtmp-listen", f"127.0.0.1:{rtmp}"],
            stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
        wait_listening(self.port)
        self.binary = binary

    def memory(self, field):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def add_user(self, name):
        subprocess.run([str(self.binary), "--data-dir", str(self.data), "user", "add", name, "--role",
                        "viewer", "--password-stdin"], input=PASSWORD + "\n", text=True, check=True,
                       stdout=subprocess.DEVNULL)

    def post(self, path, body, source="127.0.0.1"):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120,
                                                source_address=(source, 0))
        try:
            connection.request("POST", path, body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError:
            # The box refused the body and closed while it was still being sent.
            return "cut"
        finally:
            connection.close()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def address(n):
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def at_once(n, work):
    """Runs work(i) on n threads released together; returns {status: count}."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: str(kv[0])))


def login_body(name, password="guess12345"):
    return json.dumps({"username": name, "password": password}).encode()


def scenarios(binary):
    rows = []

    d = Daemon(binary)
    start = d.memory("VmHWM")
    counts = at_once(300, lambda i: d.post("/api/auth/login", login_body(f"nobody{i}")))
    rows.append(("300 logins, unknown users, one address", start, d.memory("VmHWM"), counts))
    d.stop()

    d = Daemon(binary)
    start = d.memory("VmHWM")
    counts = at_once(300, lambda i: d.post("/api/auth/login", login_body(f"nobody{i}"), address(i)))
    rows.append(("300 logins, unknown users, 300 addresses", start, d.memory("VmHWM"), counts))
    d.stop()

    d = Daemon(binary)
    start = d.memory("VmHWM")
    counts = at_once(100, lambda i: d.post("/api/auth/signup", json.dumps(
        {"username": f"user{i}", "password": PASSWORD, "nickname": f"u{i}"}).encode()))
    rows.append(("100 sign-ups, one address", start, d.memory("VmHWM"), counts))
    d.stop()

    d = Daemon(binary)
    d.add_user("minji")
    d.post("/api/auth/login", login_body("minji", "wrong guess"))
    time.sleep(1.2)  # the scenario: the first penalty has just run out
    start = d.memory("VmHWM")
    counts = at_once(150, lambda i: (time.sleep(0.02) if i == 149 else None) or d.post(
        "/api/auth/login", login_body("minji", PASSWORD if i == 149 else f"wrong guess {i}")))
    rows.append(("1 wrong, then 150 guesses at once (right one last)", start, d.memory("VmHWM"), counts))
    d.stop()

    d = Daemon(binary)
    d.post("/api/auth/login", login_body("warmup"))
    start = d.memory("VmRSS")
    # Just under axum's default 2 MiB body limit, as in the review: a bigger body was
    # refused even before.
    huge = "x" * (2 * 1024 * 1024 - 100)
    counts = at_once(200, lambda i: d.post("/api/auth/login", login_body(f"{huge}{i}"), address(i)))
    time.sleep(2)  # let the allocator settle before reading RSS
    rows.append(("200 logins with 2 MB usernames (RSS)", start, d.memory("VmRSS"), counts))
    d.stop()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="another commeowd binary to measure side by side")
    args = parser.parse_args()
    builds = [("this build", BIN)]
    if args.baseline:
        builds.insert(0, ("baseline", Path(args.baseline)))
    lines = ["| scenario | build | memory before MB | memory after MB | answers |", "|---|---|---|---|---|"]
    data = []
    for label, binary in builds:
        for name, before, after, counts in scenarios(binary):
            answers = ", ".join(f"{k}×{v}" for k, v in counts.items())
            lines.append(f"| {name} | {label} | {before:.0f} | {after:.0f} | {answers} |")
            data.append({"scenario": name, "build": label, "before_mb": before, "after_mb": after,
                         "answers": {str(k): v for k, v in counts.items()}})
    write_report("abuse", "\n".join(lines) + "\n", data)


if __name__ == "__main__":
    main()
