"""What the benchmarks share: the servers they compare, started on free loopback ports
(commeowd's release build, and nginx with libnginx-mod-rtmp configured as its users
typically do), and the measuring and reporting helpers."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BIN = Path(os.environ.get("COMMEOWD_BIN", ROOT / "target" / "release" / "commeowd"))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime of these processes so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, IndexError):
            pass
    return total / CLK_TCK


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


def write_report(name, markdown, data=None):
    """bench/out/<name>.md (and .json), and the report on stdout."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(markdown)
    if data is not None:
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=2))
    print(markdown)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for_url(url, timeout=30.0):
    """Polls until `url` answers 200 (a playlist that exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class Nginx:
    """nginx-rtmp: RTMP on `rtmp_port`, its HLS at http://127.0.0.1:`http_port`/hls/<name>.m3u8."""

    def __init__(self):
        OUT.mkdir(parents=True, exist_ok=True)
        self.rtmp_port, self.http_port = free_port(), free_port()
        for d in ("nginx-hls", "nginx-tmp"):
            (OUT / d).mkdir(exist_ok=True)
            os.chmod(OUT / d, 0o777)
            for f in (OUT / d).iterdir():
                f.unlink()
        conf = (ROOT / "bench" / "nginx-rtmp.conf.in").read_text()
        conf = (conf.replace("@OUT@", str(OUT)).replace("@RTMP_PORT@", str(self.rtmp_port))
                .replace("@HTTP_PORT@", str(self.http_port)))
        (OUT / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-p", str(OUT), "-c", str(OUT / "nginx.conf")])
        wait_listening(self.rtmp_port)
        wait_listening(self.http_port)

    def rtmp_url(self, name):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}"

    def pids(self):
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [self.proc.pid] + [int(p) for p in children.stdout.split()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)


class Commeowd:
    """commeowd with a fresh data directory and one channel, `slug`."""

    def __init__(self, slug="bench", log_level="warn", config="", data_name="commeowd-data"):
        OUT.mkdir(parents=True, exist_ok=True)
        data = OUT / data_name
        subprocess.run(["rm", "-rf", str(data)], check=True)
        added = subprocess.run([str(BIN), "--data-dir", str(data), "channel", "add", slug, "--json"],
                               check=True, capture_output=True, text=True)
        self.slug = slug
        self.key = json.loads(added.stdout)["stream_key"]
        self.http_port, self.rtmp_port = free_port(), free_port()
        self.log = OUT / f"{data_name.replace('-data', '')}.log"
        self.data = data
        config_file = OUT / f"{data_name.replace('-data', '')}.toml"
        # WebRTC on any free UDP port, told to browsers in each answer.
        config_file.write_text(config + ("" if "[webrtc]" in config else "\n[webrtc]\nport = 0\n"))
        self.proc = subprocess.Popen(
            [str(BIN), "--config", str(config_file), "--data-dir", str(data),
             "--http-listen", f"127.0.0.1:{self.http_port}",
             "--rtmp-listen", f"127.0.0.1:{self.rtmp_port}"],
            stderr=open(self.log, "w"), env={**os.environ, "RUST_LOG": log_level})
        wait_listening(self.http_port)
        wait_listening(self.rtmp_port)

    def rtmp_url(self):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{self.key}"

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"

    def add_user(self, name, role="viewer", password="bench password 1"):
        """Creates an account with the operator CLI, logs it in, returns the access token."""
        subprocess.run([str(BIN), "--data-dir", str(self.data), "user", "add", name, "--role", role,
                        "--password-stdin"], input=password + "\n", text=True, check=True,
                       stdout=subprocess.DEVNULL)
        request = urllib.request.Request(
            self.url("/api/auth/login"), method="POST",
            data=json.dumps({"username": name, "password": password}).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["access_token"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
