#!/usr/bin/env python3
"""Donations at the store: commeowd's ledger writer vs PostgreSQL with SELECT ... FOR UPDATE.

Both sides make the same donation — 100 points from one of 1,000 donors to one hot
streamer — durably: commeowd with SQLite synchronous=FULL through its real writer
(bench/load ledgerload: StoreHandle::write → group commit → Store::donate, which also
writes the double-entry rows, the donation and an outbox event); PostgreSQL 15 from Debian
with fsync=on and synchronous_commit=on, the seed's transaction (lock the streamer's row,
lock the donor's, two UPDATEs, one INSERT), driven by pgbench clients = a connection pool.
Both databases live on the same disk (bench/out). Run through bench/ledger.sh.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import OUT, ROOT, free_port, percentile, write_report

LEDGERLOAD = ROOT / "target" / "release" / "ledgerload"
DONORS = 1000

SCHEMA = """
CREATE TABLE users (id integer PRIMARY KEY, points bigint NOT NULL CHECK (points >= 0));
CREATE TABLE donations (id bigserial PRIMARY KEY, donor integer NOT NULL, streamer integer NOT NULL,
                        amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users SELECT g, 1000000000 FROM generate_series(0, %d) g;
""" % DONORS

# The seed's donation, as its service did it: lock the streamer's points row, lock the
# donor's, move the points, record the donation. One transaction per donation.
DONATION = """\\set donor random(1, %d)
BEGIN;
SELECT points FROM users WHERE id = 0 FOR UPDATE;
SELECT points FROM users WHERE id = :donor FOR UPDATE;
UPDATE users SET points = points - 100 WHERE id = :donor;
UPDATE users SET points = points + 100 WHERE id = 0;
INSERT INTO donations (donor, streamer, amount) VALUES (:donor, 0, 100);
COMMIT;
""" % DONORS


def as_postgres(command, **kw):
    """Runs a PostgreSQL tool; as the postgres user when we are root (it refuses root)."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--"] + command
    return subprocess.run(command, check=True, **kw)


class Postgres:
    def __init__(self):
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self.dir = OUT / "pg"
        self.sockets = OUT / "pg-sockets"
        for d in (self.dir, self.sockets):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        os.chmod(OUT, 0o755)
        self.port = free_port()
        as_postgres([str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres"],
                    stdout=subprocess.DEVNULL)
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses='' -c fsync=on "
                   f"-c synchronous_commit=on -c max_connections=300 -c shared_buffers=256MB")
        as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-o", options, "-w",
                     "-l", str(self.sockets / "pg.log"), "start"], stdout=subprocess.DEVNULL)

    def psql(self, sql):
        as_postgres(["psql", "-q", "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres",
                     "-v", "ON_ERROR_STOP=1", "-c", sql], stdout=subprocess.DEVNULL)

    def bench(self, clients, seconds):
        script = OUT / "pg-donation.sql"
        script.write_text(DONATION)
        os.chmod(script, 0o644)
        logs = OUT / "pg-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        if os.geteuid() == 0:
            shutil.chown(logs, "postgres", "postgres")
        run = as_postgres(["pgbench", "-n", "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres",
                           "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", str(script),
                           "-l", "--log-prefix", str(logs / "tx"), "postgres"],
                          capture_output=True, text=True, cwd=str(logs))
        latencies = []
        for log in logs.iterdir():
            for line in log.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3:
                    latencies.append(int(fields[2]) / 1000.0)  # µs -> ms
        count = len(latencies)
        return {"concurrency": clients, "donations": count, "per_second": count / seconds,
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies) if latencies else float("nan"),
                "pgbench": run.stdout.strip().splitlines()[-3:]}

    def stop(self):
        as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "stop"],
                    stdout=subprocess.DEVNULL)


def commeowd(concurrency, seconds):
    data = OUT / "ledger-data"
    shutil.rmtree(data, ignore_errors=True)
    done = subprocess.run([str(LEDGERLOAD), "--data-dir", str(data), "--donors", str(DONORS),
                           "--concurrency", str(concurrency), "--seconds", str(seconds)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--pools", default="4,8,16,64", help="connection pool sizes / concurrency")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    pools = [int(p) for p in args.pools.split(",")]
    rows = []
    results = {"commeowd": {}, "postgresql": {}}
    postgres = Postgres()
    try:
        postgres.psql(SCHEMA)
        for pool in pools:
            print(f"concurrency {pool}: commeowd...", file=sys.stderr)
            ours = commeowd(pool, args.seconds)
            print(f"concurrency {pool}: postgresql...", file=sys.stderr)
            theirs = postgres.bench(pool, args.seconds)
            results["commeowd"][pool] = ours
            results["postgresql"][pool] = theirs
            ratio = ours["per_second"] / theirs["per_second"] if theirs["per_second"] else float("nan")
            for name, r in (("commeowd (SQLite, group commit)", ours), ("PostgreSQL, FOR UPDATE", theirs)):
                rows.append(f"| {pool} | {name} | {r['per_second']:,.0f} | {r['p50_ms']:.2f} | "
                            f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} |")
            rows.append(f"| {pool} | **ratio** | **×{ratio:.1f}** | | | |")
        print("concurrency 1000: commeowd...", file=sys.stderr)
        results["commeowd"][1000] = thousand = commeowd(1000, args.seconds)
    finally:
        postgres.stop()
    # Each at its best pool size: what an operator tuning either would run.
    best_ours = max(results["commeowd"][p]["per_second"] for p in pools)
    best_theirs = max(results["postgresql"][p]["per_second"] for p in pools)
    best = (f"Each at its best pool size: commeowd {best_ours:,.0f}/s, PostgreSQL {best_theirs:,.0f}/s, "
            f"**×{best_ours / best_theirs:.1f}**." if best_theirs else "")
    markdown = f"""# Donations at the store: commeowd vs PostgreSQL (seed's approach)

{args.seconds} s per run, 1,000 donors, one hot streamer, both durable (fsync on). Concurrency =
donations in flight (PostgreSQL: pgbench clients, i.e. the connection pool).

| concurrency | store | donations/s | p50 ms | p99 ms | max ms |
|---|---|---|---|---|---|
{chr(10).join(rows)}
| 1000 | commeowd (SQLite, group commit) | {thousand['per_second']:,.0f} | {thousand['p50_ms']:.2f} | {thousand['p99_ms']:.2f} | {thousand['max_ms']:.1f} |

{best}

Ledger problems after the commeowd runs: {sum(len(r['ledger_problems']) for r in results['commeowd'].values())}.
Rerun: `bench/ledger.sh [seconds]`.
"""
    write_report("ledger", markdown, results)


if __name__ == "__main__":
    main()
