#!/usr/bin/env python3
"""Donations per second through the real HTTP API, committed durably, from 1,000 clients.

commeowd (release) with one streamer-owned channel; 1,000 donor accounts signed up and
logged in over the API, each given points with the operator CLI; donationload (bench/load)
keeps one HTTP/1.1 connection per donor and offers stepped total rates (open loop: latency
counts from when a donation was due). Run through bench/donations.sh.
"""

import argparse
import http.client
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from harness import BIN, OUT, ROOT, Commeowd, write_report

DONATIONLOAD = ROOT / "target" / "release" / "donationload"
DONORS = 1000


def post(url, body, token=None, source=None):
    """POSTs JSON; from `source` (a loopback address) when given: each donor is its own
    phone, as the box throttles sign-ups and logins per address."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request("POST", parts.path, body=json.dumps(body).encode(), headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST {parts.path}: {response.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-seconds", type=float, default=10)
    parser.add_argument("--rates", default="500,1000,2000,3000,4000,5000,6000,8000")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    server = Commeowd(slug="unused")
    try:
        streamer = server.add_user("streamer", role="streamer")
        post(server.url("/api/channels"), {"slug": "stage", "title": "Bench"}, streamer)

        def donor(n):
            name = f"donor{n}"
            phone = f"127.0.{1 + n // 250}.{1 + n % 250}"
            post(server.url("/api/auth/signup"), {"username": name, "password": "bench password 1",
                                                  "nickname": name}, source=phone)
            return post(server.url("/api/auth/login"), {"username": name, "password": "bench password 1"},
                        source=phone)["access_token"]

        print(f"signing up {DONORS} donors...", file=sys.stderr)
        with ThreadPoolExecutor(8) as pool:
            tokens = list(pool.map(donor, range(DONORS)))
        print("granting points...", file=sys.stderr)
        for n in range(DONORS):
            subprocess.run([str(BIN), "--data-dir", str(server.data), "wallet", "grant", f"donor{n}",
                            "100000000", "--reason", "bench"], check=True, stdout=subprocess.DEVNULL)
        tokens_file = OUT / "donation-tokens.txt"
        tokens_file.write_text("\n".join(tokens) + "\n")
        print("offering donations...", file=sys.stderr)
        run = subprocess.run([str(DONATIONLOAD), "--addr", f"127.0.0.1:{server.http_port}",
                              "--tokens-file", str(tokens_file), "--rates", args.rates,
                              "--step-seconds", str(args.step_seconds)],
                             check=True, capture_output=True, text=True)
        result = json.loads(run.stdout)
        check = subprocess.run([str(BIN), "--data-dir", str(server.data), "wallet", "show", "streamer",
                                "--json"], check=True, capture_output=True, text=True)
        earnings = json.loads(check.stdout)["earnings"]
    finally:
        server.stop()
    rows = []
    passing = None
    for step in result["steps"]:
        ok = step["p99_ms"] <= 50 and step["not_created"] == 0
        if ok:
            passing = step
        rows.append(f"| {step['offered_per_s']:,.0f} | {step['created_per_s']:,.0f} | {step['p50_ms']:.2f} | "
                    f"{step['p99_ms']:.2f} | {step['max_ms']:.1f} | {step['not_created']} |")
    best = (f"{passing['created_per_s']:,.0f} donations/s at p99 {passing['p99_ms']:.1f} ms"
            if passing else "no step met p99 ≤ 50 ms")
    markdown = f"""# Donations end to end: {DONORS} clients, one channel, HTTP API, fsync on

Best step with p99 ≤ 50 ms and every donation created: {best}. Streamer earnings after the
run: {earnings:,} points.

| offered /s | created /s | p50 ms | p99 ms | max ms | not created |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Rerun: `bench/donations.sh [step seconds]`.
"""
    result["earnings"] = earnings
    write_report("donations", markdown, result)


if __name__ == "__main__":
    main()
