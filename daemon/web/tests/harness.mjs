// Test harness for the web app: the real commeowd (built by cargo), the fake Kakao Pay
// binary, ffmpeg standing in for OBS, and Debian's Chromium driven by playwright-core.
// Everything binds ephemeral loopback ports and is cleaned up by `close()`.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "../../..");
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
export const BIN = process.env.COMMEOWD_BIN ?? join(TARGET, "debug", "commeowd");
const FAKE = join(TARGET, "debug", "fake-kakaopay");
/// Screenshots land here: test artifacts, not committed.
export const ARTIFACTS = join(TARGET, "web-artifacts");
mkdirSync(ARTIFACTS, { recursive: true });

const PASSWORD = "correct horse battery";

/// Resolves with the first line of `stream` matching `pattern` (its match), or rejects after
/// `ms`.
function lineMatching(child, stream, pattern, ms, log) {
  return new Promise((resolvePromise, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} in ${ms} ms:\n${log.join("")}`)), ms);
    child[stream].on("data", (chunk) => {
      buffer += chunk;
      const match = buffer.match(pattern);
      if (match) { clearTimeout(timer); resolvePromise(match); }
    });
  });
}

export class Daemon {
  static async start(config = "") {
    const daemon = new Daemon();
    daemon.dir = mkdtempSync(join(tmpdir(), "commeow-web-"));
    // Tests run one after another, each daemon on any free WebRTC port unless the test says.
    const webrtc = config.includes("[webrtc]") ? "" : "\n[webrtc]\nport = 0\n";
    writeFileSync(join(daemon.dir, "commeowd.toml"), config + webrtc);
    daemon.log = [];
    daemon.child = spawn(BIN, ["--config", join(daemon.dir, "commeowd.toml"), "--data-dir", join(daemon.dir, "data"),
      "--http-listen", "127.0.0.1:0", "--rtmp-listen", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
    daemon.child.stderr.setEncoding("utf8");
    daemon.child.stderr.on("data", (chunk) => daemon.log.push(chunk));
    const [http, rtmp] = await Promise.all([
      lineMatching(daemon.child, "stderr", /http listening addr=(\S+)/, 20000, daemon.log),
      lineMatching(daemon.child, "stderr", /rtmp listening addr=(\S+)/, 20000, daemon.log),
    ]);
    daemon.base = `http://${http[1]}`;
    daemon.rtmp = `rtmp://${rtmp[1]}/live`;
    return daemon;
  }

  cli(args, input) {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(BIN, ["--data-dir", join(this.dir, "data"), ...args], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (c) => { out += c; });
      child.stderr.on("data", (c) => { err += c; });
      child.on("close", (code) => (code === 0 ? resolvePromise(out) : reject(new Error(`commeowd ${args.join(" ")}: ${err}`))));
      child.stdin.end(input ?? "");
    });
  }

  async api(method, path, body, token, headers = {}) {
    const response = await fetch(this.base + path, {
      method,
      headers: { ...(body ? { "content-type": "application/json" } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  }

  /// Creates a user with the operator's CLI and logs it in; returns the token pair.
  async user(name, role = "viewer") {
    await this.cli(["user", "add", name, "--role", role, "--password-stdin", "--nickname", name], `${PASSWORD}\n`);
    return this.api("POST", "/api/auth/login", { username: name, password: PASSWORD });
  }

  async close() {
    this.child.kill("SIGKILL");
    await new Promise((r) => (this.child.exitCode !== null ? r() : this.child.once("exit", r)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export { PASSWORD };

/// The fake Kakao Pay server as a process; `base` is its URL, `secretFile` its key file.
export class FakeKakaoPay {
  static async start() {
    const fake = new FakeKakaoPay();
    fake.dir = mkdtempSync(join(tmpdir(), "fake-kakaopay-"));
    fake.secretFile = join(fake.dir, "secret");
    writeFileSync(fake.secretFile, "DEV-WEB-TEST-SECRET\n");
    fake.child = spawn(FAKE, ["--secret-key-file", fake.secretFile], { stdio: ["ignore", "pipe", "inherit"] });
    fake.child.stdout.setEncoding("utf8");
    fake.base = (await lineMatching(fake.child, "stdout", /(http:\/\/\S+)/, 10000, []))[1];
    return fake;
  }

  async close() {
    this.child.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/// ffmpeg pushing a test pattern (640x360 unless `size`) with a tone, a keyframe every `gop`
/// frames (every second by default; OBS's Simple mode sends 250, with x264's scene-cut
/// detection on), at x264's own bit rate unless `bitrate` (e.g. "3M").
export function push(url, seconds = 120, gop = 30, { size = "640x360", bitrate } = {}) {
  const child = spawn("ffmpeg", ["-hide_banner", "-loglevel", "error", "-nostdin", "-re",
    "-f", "lavfi", "-i", `testsrc2=size=${size}:rate=30`, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
    "-t", String(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", String(gop), "-sc_threshold", "40",
    ...(bitrate ? ["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate] : []),
    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url], { stdio: ["ignore", "ignore", "inherit"] });
  return {
    child,
    stop: () => new Promise((r) => { child.once("exit", r); child.kill("SIGINT"); }),
  };
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

/// A phone-sized browser context, logged in with `tokens` if given (as the page keeps them).
export async function phone(browserInstance, daemon, tokens) {
  const context = await browserInstance.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, locale: "ko-KR" });
  if (tokens) {
    await context.addInitScript(([access, refresh]) => {
      if (!localStorage.getItem("access_token")) {
        localStorage.setItem("access_token", access);
        localStorage.setItem("refresh_token", refresh);
      }
    }, [tokens.access_token, tokens.refresh_token]);
  }
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  page.on("console", (m) => m.type() === "error" && page.errors.push(`${m.text()} (${m.location().url})`));
  return { context, page, base: daemon.base };
}

/// Waits until the page's video has advanced `seconds` of playback with decoded frames.
export async function assertPlays(page, seconds = 1.5) {
  const start = await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v && v.currentTime > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0 && v.currentTime;
  }, null, { timeout: 30000 });
  const from = await start.jsonValue();
  await page.waitForFunction((t) => {
    const v = document.getElementById("video");
    return v.currentTime > t && v.getVideoPlaybackQuality().totalVideoFrames > 10;
  }, from + seconds, { timeout: 30000 });
}
