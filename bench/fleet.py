#!/usr/bin/env python3
"""Fleet relay: events from a box's outbox to central over a real mosquitto, measured.

Runs the release commeowd (with [fleet]), the release commeow-central and a mosquitto on
loopback ports. Phases:
  steady   donations through the HTTP API from 8 threads; throughput of the box's own
           durable donations vs the relay's delivery, and latency from the box's commit
           (the event's `at`) to central's row (`received_at`), p50/p99;
  outage   the broker is stopped, N donations are made, the broker comes back: time until
           the box's outbox is empty and central holds every event;
  baseline `mosquitto_pub -q 1`, one process per event (what a shell script would do):
           events/s for the same count;
  direct   rumqttc QoS 1 straight from where events happen, no outbox (bench/load's
           mqttdirect), through an outage of the same kind: what it loses.
Every run checks: zero lost, zero duplicated (central's rows = the box's events).
Run through bench/fleet.sh.
"""

import argparse
import concurrent.futures
import datetime
import json
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import BIN, OUT, ROOT, Commeowd, cpu_seconds, free_port, percentile, wait_listening, write_report

CENTRAL = ROOT / "target" / "release" / "commeow-central"
DIRECT = ROOT / "target" / "release" / "mqttdirect"


class Broker:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp())
        self.port = free_port()
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def url(self):
        return f"mqtt://127.0.0.1:{self.port}"


def post(url, body, token=None, headers=None):
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", **(headers or {})})
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def box_outbox(data):
    with sqlite3.connect(f"file:{data}/commeow.db?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def central_rows(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT seq, event_id, at, received_at FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []


def parse(at):
    return datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def donate_many(box, fan, count, start):
    url = box.url("/api/channels/stage/donations")

    def one(n):
        post(url, {"amount": 100, "message": "bench"}, fan, {"idempotency-key": f"b-{n}"})

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(start, start + count)))
    return time.monotonic() - began


def memory_mib(pid):
    """The process's resident memory now and its peak (VmRSS, VmHWM), MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def venue(box, points):
    """Streamer djay with channel stage, viewer fan granted `points`: fan's token."""
    subprocess.run([str(BIN), "--data-dir", str(box.data), "user", "add", "djay", "--role", "streamer",
                    "--password-stdin"], input="bench password 1\n", text=True, check=True,
                   stdout=subprocess.DEVNULL)
    streamer = post(box.url("/api/auth/login"), {"username": "djay", "password": "bench password 1"})
    post(box.url("/api/channels"), {"slug": "stage", "title": "Stage"}, streamer["access_token"])
    fan = box.add_user("fan")
    subprocess.run([str(BIN), "--data-dir", str(box.data), "wallet", "grant", "fan", str(points),
                    "--reason", "bench"], check=True, stdout=subprocess.DEVNULL)
    return fan


def steady_cost(box, fan, count, start):
    """Donations from 8 clients: rate, box CPU ms per 1,000, RSS at the end and peak."""
    cpu = cpu_seconds([box.proc.pid])
    seconds = donate_many(box, fan, count, start)
    used = cpu_seconds([box.proc.pid]) - cpu
    rss, peak = memory_mib(box.proc.pid)
    return {"rate": count / seconds, "cpu_ms_per_1000": used * 1000 / count * 1000, "cpu_share": used / seconds,
            "rss_mib": rss, "peak_mib": peak}


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steady", type=int, default=5000, help="donations in the steady phase")
    parser.add_argument("--outage", type=int, nargs="+", default=[10000], help="backlogs to catch up")
    parser.add_argument("--baseline", type=int, default=2000, help="mosquitto_pub runs")
    parser.add_argument("--direct", type=int, default=20000, help="events the no-outbox baseline publishes")
    parser.add_argument("--direct-outage", type=float, default=5.0, help="seconds its broker is away")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    # The same box with no [fleet]: what the donations alone cost it, for the relay's share.
    box = Commeowd(log_level="warn")
    try:
        fan = venue(box, 100 * args.steady)
        alone = steady_cost(box, fan, args.steady, 0)
    finally:
        box.stop()

    broker = Broker()
    central_db = Path(tempfile.mkdtemp()) / "central.db"
    central = subprocess.Popen([str(CENTRAL), "--db", str(central_db), "serve", "--broker", broker.url()],
                               stdout=subprocess.DEVNULL, stderr=open(OUT / "central.log", "w"))
    box = Commeowd(log_level="warn", config=(
        f'[fleet]\nenabled = true\nbroker = "{broker.url()}"\nbox_id = "bench-1"\n'))
    total = args.steady + sum(args.outage)
    try:
        fan = venue(box, 100 * total)
        baseline_events = 2  # channel_created, grant
        wait_for(lambda: box_outbox(box.data) == 0, 30)

        # Steady: the box's own durable donation rate, and the relay keeping up with it.
        cpu_before = cpu_seconds([box.proc.pid])
        relaying = steady_cost(box, fan, args.steady, 0)
        made = args.steady + baseline_events
        drained = wait_for(lambda: len(central_rows(central_db)) >= made and box_outbox(box.data) == 0, 120)
        # Until central holds the last event: what relaying added to the donations' cost.
        relaying["cpu_ms_per_1000_relayed"] = (cpu_seconds([box.proc.pid]) - cpu_before) * 1000 / args.steady * 1000
        rows = central_rows(central_db)
        latencies = [parse(received) - parse(at) for _, _, at, received in rows[baseline_events:]]
        relayed = rows[baseline_events:]
        received = sorted(parse(r) for _, _, _, r in relayed)
        steady = {
            "donations": args.steady, "box_rate": relaying["rate"], "alone": alone, "relaying": relaying,
            "relayed_all": drained,
            "latency_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "latency_p99_ms": percentile(latencies, 99) * 1000,
            # Central's rows arrive as fast as the box makes them, or faster: then the
            # relay's rate is the box's and the lag at the end is small.
            "relay_rate": len(relayed) / max(1e-9, received[-1] - received[0]) if received else 0,
            "lag_after_last_ms": (received[-1] - max(parse(a) for _, _, a, _ in relayed)) * 1000 if received else 0,
        }

        outages = []
        start = args.steady
        for backlog in args.outage:
            broker.stop()
            donate_many(box, fan, backlog, start)
            start += backlog
            made += backlog
            held = box_outbox(box.data)
            rss_before, _ = memory_mib(box.proc.pid)
            cpu = cpu_seconds([box.proc.pid])
            broker.start()
            restarted = time.time()
            began = time.monotonic()
            caught_up = wait_for(lambda: box_outbox(box.data) == 0 and len(central_rows(central_db)) >= made, 300)
            drain_cpu = cpu_seconds([box.proc.pid]) - cpu
            rss_after, peak = memory_mib(box.proc.pid)
            backlog_rows = central_rows(central_db)[-backlog:]
            arrivals = sorted(parse(r) for _, _, _, r in backlog_rows)
            outages.append({"backlog": backlog, "held_during": held, "caught_up": caught_up,
                            "seconds": time.monotonic() - began,
                            # The relay waits out its backoff before reconnecting (jittered,
                            # up to 30 s after a long outage), then drains.
                            "reconnect_s": arrivals[0] - restarted if arrivals else float("nan"),
                            "drain_s": arrivals[-1] - arrivals[0] if arrivals else float("nan"),
                            "box_cpu_s": drain_cpu, "rss_before_mib": rss_before,
                            "rss_after_mib": rss_after, "peak_mib": peak})
        rows = central_rows(central_db)
        seqs = [seq for seq, _, _, _ in rows]
        ids = {event_id for _, event_id, _, _ in rows}
        with sqlite3.connect(f"file:{box.data}/commeow.db?mode=ro", uri=True) as db:
            made = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
        integrity = {"made": made, "central_rows": len(rows), "distinct_ids": len(ids),
                     "contiguous": seqs == list(range(1, len(seqs) + 1))}
    finally:
        box.stop()
        central.terminate()
        central.wait(timeout=15)

    # Baseline: one mosquitto_pub process per event, QoS 1.
    began = time.monotonic()
    for n in range(args.baseline):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                        "-t", "bench/baseline", "-m", json.dumps({"seq": n})], check=True)
    baseline_rate = args.baseline / (time.monotonic() - began)
    broker.stop()

    # The no-outbox baseline: 2,000 events/s published straight with rumqttc, the broker
    # stopped a third of the way through and back after --direct-outage seconds.
    broker.start()
    direct = subprocess.Popen([str(DIRECT), "--port", str(broker.port), "--events", str(args.direct),
                               "--rate", "2000"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5 + args.direct / 2000 / 3)
    broker.stop()
    time.sleep(args.direct_outage)
    broker.start()
    out, _ = direct.communicate(timeout=120)
    broker.stop()
    direct_result = json.loads(out)

    lines = [
        "# Fleet relay: box outbox → mosquitto → central (loopback, release builds)",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| box's own durable donation rate (8 HTTP clients) | {steady['box_rate']:.0f} /s |",
        f"| relay delivery rate over the same run | {steady['relay_rate']:.0f} /s |",
        f"| relay behind the box when the last donation was made | {steady['lag_after_last_ms']:.0f} ms |",
        f"| box commit → central row, p50 | {steady['latency_p50_ms']:.1f} ms |",
        f"| box commit → central row, p99 | {steady['latency_p99_ms']:.1f} ms |",
    ]
    a, r = steady["alone"], steady["relaying"]
    lines += [
        f"| box CPU per 1,000 donations, no [fleet] / relaying (until central holds them) | "
        f"{a['cpu_ms_per_1000']:.0f} ms / {r['cpu_ms_per_1000_relayed']:.0f} ms "
        f"(×{r['cpu_ms_per_1000_relayed'] / a['cpu_ms_per_1000']:.2f}) |",
        f"| box RSS after the steady donations, no [fleet] / relaying (peak) | "
        f"{a['rss_mib']:.0f} MiB ({a['peak_mib']:.0f}) / {r['rss_mib']:.0f} MiB ({r['peak_mib']:.0f}) |",
        f"| box's own donation rate with no [fleet], same run | {a['rate']:.0f} /s |",
    ]
    for o in outages:
        lines.append(f"| {o['backlog']:,} events held through an outage: reconnect after the broker is back "
                     f"(backoff) / drain / total | {o['reconnect_s']:.2f} s / {o['drain_s']:.2f} s "
                     f"({o['backlog'] / max(o['drain_s'], 1e-9):.0f} /s) / {o['seconds']:.2f} s |")
        lines.append(f"| {o['backlog']:,} events: box CPU for the whole catch-up / RSS before → after (peak) | "
                     f"{o['box_cpu_s']:.2f} s / {o['rss_before_mib']:.0f} → {o['rss_after_mib']:.0f} MiB "
                     f"({o['peak_mib']:.0f}) |")
    lines += [
        f"| baseline: `mosquitto_pub -q 1`, one process per event | {baseline_rate:.0f} /s |",
        f"| baseline: rumqttc QoS 1 with no outbox, {direct_result['sent']:,} events at 2,000/s through a "
        f"{args.direct_outage:.0f} s outage: lost | {direct_result['lost']:,} "
        f"({direct_result['refused_at_once']:,} refused at once, {direct_result['duplicates']} duplicated) |",
        "",
        f"Integrity: {integrity['made']} events made, central holds {integrity['central_rows']} rows, "
        f"{integrity['distinct_ids']} distinct ids, sequences contiguous: {integrity['contiguous']}.",
    ]
    write_report("fleet", "\n".join(lines) + "\n",
                 {"steady": steady, "outages": outages, "baseline_rate": baseline_rate,
                  "direct": direct_result, "integrity": integrity})


if __name__ == "__main__":
    main()
