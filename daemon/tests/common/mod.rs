//! Test harness: the real `commeowd` binary on ephemeral loopback ports, the real `ffmpeg`
//! as the OBS stand-in, `ffprobe` as the player stand-in.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod whep;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test: cargo's build, or `$COMMEOWD_BIN` (the aarch64 build, say), run
/// through `$COMMEOWD_BIN_RUNNER` when set (`qemu-aarch64-static`). The web tests read the
/// same `$COMMEOWD_BIN`.
pub fn bin() -> (Vec<String>, String) {
    let bin = std::env::var("COMMEOWD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_commeowd").to_string());
    let runner = std::env::var("COMMEOWD_BIN_RUNNER")
        .map(|r| r.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    (runner, bin)
}

/// A `commeowd` command (see [`bin`]), started through `wrapper` when it is not empty.
pub fn commeowd_through(wrapper: &[String]) -> Command {
    let (runner, bin) = bin();
    let mut argv = wrapper.iter().chain(&runner);
    match argv.next() {
        None => Command::new(bin),
        Some(program) => {
            let mut command = Command::new(program);
            command.args(argv).arg(bin);
            command
        }
    }
}

/// A `commeowd` command for the operator's subcommands and the daemon alike.
pub fn commeowd() -> Command {
    commeowd_through(&[])
}

/// How a test starts the daemon beyond its defaults.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A program and its arguments that start commeowd (`systemd-socket-activate …`).
    pub wrapper: Vec<String>,
    /// Extra environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, …).
    pub env: Vec<(String, String)>,
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `commeowd` on `dir` (config `dir/commeowd.toml`, data `dir/data`), on ephemeral
/// loopback ports, with its log lines copied into `logs`.
fn spawn(dir: &Path, launch: &Launch, logs: Arc<Mutex<Vec<String>>>) -> Child {
    let mut child = commeowd_through(&launch.wrapper)
        .arg("--config")
        .arg(dir.join("commeowd.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--rtmp-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info,commeow=debug")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start commeowd");
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[commeowd] {line}");
            logs.lock().expect("logs").push(line);
        }
    });
    child
}

/// Polls `fetch` every 50 ms until what it returns satisfies `done`, and returns that;
/// fails the test, naming `what` and the last value seen, after `timeout`.
pub fn poll_until<T: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut fetch: impl FnMut() -> Option<T>,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = fetch();
        last.as_ref().is_some_and(&done)
    });
    assert!(ok, "{what}: last seen {last:?}");
    last.expect("value")
}

/// A running daemon with its own data directory.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    launch: Launch,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts with `config` (TOML text) as its config file.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, Launch::default())
    }

    /// Starts with `config`, launched as `launch` says.
    pub fn start_with(config: &str, launch: Launch) -> Daemon {
        Daemon::start_on(config, launch, |_| {})
    }

    /// Starts with `config` after `prepare` has made its data directory (a small
    /// filesystem mounted there, say).
    pub fn start_on(config: &str, launch: Launch, prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        prepare(&dir.path().join("data"));
        // Every test client comes from 127.0.0.1 and stands for many devices at once (a
        // burst of 1,000 donations is 1,000 phones): the per-address connection bound is
        // lifted unless the test sets `[http]` (or `[rtmp]`) itself (tests/connections.rs
        // does).
        let mut config = config.to_string();
        if !config.contains("[http]") {
            config.push_str("\n[http]\nconnections_per_address = 2048\n");
        }
        if !config.contains("[rtmp]") {
            config.push_str("\n[rtmp]\nconnections_per_address = 64\n");
        }
        // Tests run side by side: each daemon's WebRTC port is any free one.
        if !config.contains("[webrtc]") {
            config.push_str("\n[webrtc]\nport = 0\n");
        }
        std::fs::write(dir.path().join("commeowd.toml"), config).expect("write config");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(dir.path(), &launch, logs.clone());
        let mut daemon = Daemon {
            child,
            dir,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            rtmp: SocketAddr::from(([0, 0, 0, 0], 0)),
            launch,
            logs,
        };
        daemon.await_listeners();
        daemon
    }

    /// SIGKILL, no goodbye, and no restart.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGKILL, no goodbye; then a new process on the same data directory and config.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        // A fresh log: the old process's reader may still be draining its pipe.
        self.logs = Arc::new(Mutex::new(Vec::new()));
        self.child = spawn(self.dir.path(), &self.launch, self.logs.clone());
        self.await_listeners();
    }

    fn await_listeners(&mut self) {
        self.http.set_port(0);
        self.rtmp.set_port(0);
        let found = wait_until(Duration::from_secs(20), || {
            self.http = self.logged_addr("http listening").unwrap_or(self.http);
            self.rtmp = self.logged_addr("rtmp listening").unwrap_or(self.rtmp);
            self.http.port() != 0 && self.rtmp.port() != 0
        });
        assert!(found, "commeowd did not report its listeners");
    }

    /// The UDP port of WebRTC viewers' media, as the daemon reported it.
    pub fn webrtc_addr(&self) -> SocketAddr {
        let mut addr = self
            .logged_addr("webrtc listening")
            .expect("commeowd reported no WebRTC port");
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        addr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn logged_addr(&self, what: &str) -> Option<SocketAddr> {
        let logs = self.logs.lock().expect("logs");
        let line = logs.iter().find(|l| l.contains(what))?;
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Index of the first log line containing `needle`.
    pub fn log_position(&self, needle: &str) -> Option<usize> {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .position(|l| l.contains(needle))
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Runs an operator command against this daemon's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        commeowd()
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run commeowd cli")
    }

    /// Creates a channel and returns its stream key.
    pub fn add_channel(&self, slug: &str) -> String {
        let out = self.cli(&[
            "channel",
            "add",
            slug,
            "--title",
            &format!("Title of {slug}"),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "channel add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["stream_key"].as_str().expect("stream_key").to_string()
    }

    /// Creates an account with the operator's CLI and logs it in; returns the login answer
    /// (`access_token`, `refresh_token`, …).
    pub fn add_user(&self, name: &str, role: &str) -> serde_json::Value {
        let mut add = commeowd()
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["user", "add", name, "--role", role, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run cli");
        std::io::Write::write_all(
            &mut add.stdin.take().expect("stdin"),
            b"correct horse battery\n",
        )
        .expect("password");
        assert!(add.wait().expect("wait").success());
        let login = self.post(
            "/api/auth/login",
            serde_json::json!({"username": name, "password": "correct horse battery"}),
            None,
        );
        assert_eq!(login.status, 200, "{}", login.text());
        login.json()
    }

    /// Logs in again as a user [`Daemon::add_user`] made; returns the access token.
    pub fn login(&self, name: &str) -> String {
        let login = self.post(
            "/api/auth/login",
            serde_json::json!({"username": name, "password": "correct horse battery"}),
            None,
        );
        assert_eq!(login.status, 200, "{}", login.text());
        login.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// [`Daemon::add_user`]'s access token.
    pub fn add_user_token(&self, name: &str, role: &str) -> String {
        self.add_user(name, role)["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Creates streamer `name`, who creates channel `slug` over the API; returns the
    /// streamer's access token.
    pub fn add_streamer_channel(&self, name: &str, slug: &str) -> String {
        let streamer = self.add_user_token(name, "streamer");
        let created = self.post(
            "/api/channels",
            serde_json::json!({"slug": slug, "title": format!("Title of {slug}")}),
            Some(&streamer),
        );
        assert_eq!(created.status, 201, "{}", created.text());
        streamer
    }

    /// Opens a chat socket on channel `slug`, with a bearer header if `token` is given.
    pub fn chat(&self, slug: &str, token: Option<&str>) -> Result<ChatClient, Response> {
        ChatClient::connect(self.http, slug, token)
    }

    /// Every ledger invariant, as the operator checks it (`commeowd wallet check`).
    pub fn assert_ledger_balances(&self) {
        let check = self.cli(&["wallet", "check"]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&check.stdout).trim(),
            "The ledger balances."
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, key)
    }

    pub fn get(&self, path: &str) -> Response {
        get(&self.url(path))
    }

    /// POSTs `body` as JSON to `path`, optionally with a bearer token.
    pub fn post(&self, path: &str, body: serde_json::Value, token: Option<&str>) -> Response {
        send_json("POST", &self.url(path), Some(&body), token)
    }

    pub fn ll_playlist(&self, slug: &str, query: &str) -> Option<LlPlaylist> {
        let response = self.get(&format!("/hls/{slug}/ll/index.m3u8{query}"));
        (response.status == 200).then(|| LlPlaylist::parse(&response.text()))
    }

    pub fn media_playlist(&self, slug: &str) -> Option<MediaPlaylist> {
        let response = self.get(&format!("/hls/{slug}/source/index.m3u8"));
        (response.status == 200).then(|| MediaPlaylist::parse(&response.text()))
    }

    pub fn channel_live(&self, slug: &str) -> bool {
        let channels: serde_json::Value =
            serde_json::from_slice(&self.get("/api/channels").body).expect("json");
        channels
            .as_array()
            .expect("array")
            .iter()
            .any(|c| c["slug"] == slug && c["live"] == true)
    }

    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text())
    }
}

impl Response {
    /// The `error.code` of a JSON error answer, or "".
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    agent_following(10)
}

fn agent_following(redirects: u32) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(redirects)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn read(response: ureq::http::Response<ureq::Body>) -> Response {
    try_read(response).expect("body")
}

/// A whole response, or `None` if its body was cut off.
fn try_read(mut response: ureq::http::Response<ureq::Body>) -> Option<Response> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .ok()?;
    Some(Response {
        status,
        headers,
        body,
    })
}

/// Sends `body` as JSON with `method`, optionally with a bearer token.
pub fn send_json(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    bearer: Option<&str>,
) -> Response {
    send_json_with(method, url, body, bearer, &[])
}

/// [`send_json`] with extra headers.
pub fn send_json_with(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> Response {
    try_send_json_with(method, url, body, bearer, headers).expect("http request")
}

/// [`send_json_with`], or `None` if the request got no answer (connection refused or cut).
pub fn try_send_json_with(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<Response> {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut extra: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &authorization {
        extra.push(("authorization", a));
    }
    let response = match method {
        "GET" => {
            let mut request = agent().get(url);
            for (name, value) in &extra {
                request = request.header(*name, *value);
            }
            request.call()
        }
        "DELETE" => {
            let mut request = agent().delete(url);
            for (name, value) in &extra {
                request = request.header(*name, *value);
            }
            request.call()
        }
        "PUT" => {
            let mut request = agent().put(url).header("content-type", "application/json");
            for (name, value) in &extra {
                request = request.header(*name, *value);
            }
            request.send(body.map_or(String::new(), |b| b.to_string()))
        }
        _ => {
            let mut request = agent().post(url).header("content-type", "application/json");
            for (name, value) in &extra {
                request = request.header(*name, *value);
            }
            request.send(body.map_or(String::new(), |b| b.to_string()))
        }
    };
    try_read(response.ok()?)
}

/// A POST of `body` as `content_type` (not JSON: an SDP offer, say).
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> Response {
    read(
        agent()
            .post(url)
            .header("content-type", content_type)
            .send(body)
            .expect("http request"),
    )
}

/// A browser's form POST (no body), without following the redirect it answers with.
pub fn post_form_no_redirect(url: &str) -> Response {
    read(
        agent_following(0)
            .post(url)
            .send_empty()
            .expect("http request"),
    )
}

/// A GET that does not follow redirects.
pub fn get_no_redirect(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = agent_following(0).get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call().expect("http request"))
}

pub fn get(url: &str) -> Response {
    get_with(url, &[])
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call().expect("http request"))
}

/// A pusher standing in for OBS.
pub struct Push {
    pub child: Child,
}

impl Push {
    /// Pushes `seconds` of test pattern and tone at `size` (e.g. "320x240"), 30 fps,
    /// a keyframe every second, in real time.
    pub fn start(url: &str, seconds: u32, size: &str) -> Push {
        let x264 = [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
        ];
        Push::start_with(url, seconds, size, &x264, true)
    }

    /// Pushes `seconds` of test pattern at `size`, encoded with `video` (ffmpeg output
    /// options), with a tone if `audio`: AAC unless `video` names an audio codec (`-c:a`).
    pub fn start_with(url: &str, seconds: u32, size: &str, video: &[&str], audio: bool) -> Push {
        let input = format!("testsrc2=size={size}:rate=30");
        Push::start_from("ffmpeg", &input, url, seconds, video, audio)
    }

    /// The same with a newer FFmpeg (7.0, static, fetched by `.ci/setup-debian`), which
    /// pushes HEVC and AV1 over Enhanced RTMP as newer OBS and FFmpeg do.
    pub fn with_newer_ffmpeg(url: &str, seconds: u32, size: &str, video: &[&str]) -> Push {
        let program = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/tools/ffmpeg-enhanced-rtmp"
        );
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run .ci/setup-debian"
        );
        let input = format!("testsrc2=size={size}:rate=30");
        Push::start_from(program, &input, url, seconds, video, true)
    }

    /// What OBS's Simple output mode sends (x264 `veryfast`, its default keyframe interval
    /// of 250 frames, scene-cut detection on, AAC), of a picture that changes scene after
    /// `cut` seconds: x264 puts a keyframe there.
    pub fn like_obs_simple_mode(url: &str, seconds: u32, size: &str, cut: u32) -> Push {
        let input = format!(
            "testsrc2=size={size}:rate=30:duration={cut}[a];\
             smptebars=size={size}:rate=30[b];[a][b]concat=n=2:v=1:a=0[out0]"
        );
        let x264 = [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "250",
            "-sc_threshold",
            "40",
            "-pix_fmt",
            "yuv420p",
        ];
        Push::start_from("ffmpeg", &input, url, seconds, &x264, true)
    }

    fn start_from(
        program: &str,
        input: &str,
        url: &str,
        seconds: u32,
        video: &[&str],
        audio: bool,
    ) -> Push {
        let mut command = Command::new(program);
        command
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", input]);
        if audio {
            command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
        }
        command.args(["-t", &seconds.to_string()]).args(video);
        if audio && !video.contains(&"-c:a") {
            command.args(["-c:a", "aac", "-b:a", "64k"]);
        }
        let child = command
            .args(["-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg");
        Push { child }
    }

    /// Waits for ffmpeg to exit; its status and what it printed.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait ffmpeg") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return (status, stderr);
            }
            assert!(
                Instant::now() < deadline,
                "ffmpeg did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `ffprobe` finds behind a URL: (codec_type, codec_name, width) per stream.
pub fn ffprobe(url: &str) -> Vec<(String, String, Option<u64>)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_u64(),
            )
        })
        .collect()
}

/// A parsed HLS media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    pub version: Option<u32>,
    pub target_duration: Option<u64>,
    pub media_sequence: Option<u64>,
    /// EXT-X-DISCONTINUITY-SEQUENCE (0 when absent).
    pub discontinuity_sequence: u64,
    pub segments: Vec<SegmentEntry>,
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct SegmentEntry {
    pub duration: f64,
    pub uri: String,
    pub program_date_time: Option<String>,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
}

impl MediaPlaylist {
    pub fn parse(text: &str) -> MediaPlaylist {
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("#EXTM3U"),
            "playlist must start with #EXTM3U:\n{text}"
        );
        let mut playlist = MediaPlaylist {
            version: None,
            target_duration: None,
            media_sequence: None,
            discontinuity_sequence: 0,
            segments: Vec::new(),
            ended: false,
        };
        let mut duration = None;
        let mut date = None;
        let mut discontinuity = false;
        for line in lines {
            if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
                playlist.version = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.target_duration = Some(v.parse().expect("integer target duration"));
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                playlist.media_sequence = Some(v.parse().expect("integer media sequence"));
            } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                playlist.discontinuity_sequence = v.parse().expect("integer sequence");
            } else if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                date = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                duration = Some(
                    v.trim_end_matches(',')
                        .parse::<f64>()
                        .expect("EXTINF duration"),
                );
            } else if line == "#EXT-X-ENDLIST" {
                playlist.ended = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                playlist.segments.push(SegmentEntry {
                    duration: duration.take().expect("URI without EXTINF"),
                    uri: line.to_string(),
                    program_date_time: date.take(),
                    discontinuity: std::mem::take(&mut discontinuity),
                });
            }
        }
        playlist
    }

    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

/// A parsed LL-HLS media playlist.
#[derive(Debug, Clone, Default)]
pub struct LlPlaylist {
    pub text: String,
    pub version: Option<u32>,
    pub target_duration: f64,
    pub part_target: f64,
    pub server_control: String,
    pub media_sequence: u64,
    pub map: Option<String>,
    pub skipped: usize,
    /// Closed segments: (sequence, duration, uri, parts listed for it).
    pub segments: Vec<(u64, f64, String, Vec<LlPart>)>,
    /// Parts of the segment being built.
    pub open_parts: Vec<LlPart>,
    pub dates: usize,
    pub preload_hint: Option<String>,
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct LlPart {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split([':', ','])
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

impl LlPlaylist {
    pub fn parse(text: &str) -> LlPlaylist {
        assert!(text.starts_with("#EXTM3U\n"), "not a playlist: {text}");
        let mut p = LlPlaylist {
            text: text.to_string(),
            ..LlPlaylist::default()
        };
        let mut parts = Vec::new();
        let mut duration = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
                p.version = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = v.parse().expect("target duration");
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
                p.part_target = attribute(v, "PART-TARGET")
                    .expect("PART-TARGET")
                    .parse()
                    .expect("number");
            } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
                p.server_control = v.to_string();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().expect("media sequence");
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                p.map = attribute(v, "URI").map(str::to_string);
            } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
                p.skipped = attribute(v, "SKIPPED-SEGMENTS")
                    .expect("count")
                    .parse()
                    .expect("number");
            } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
                p.dates += 1;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
                parts.push(LlPart {
                    duration: attribute(v, "DURATION")
                        .expect("DURATION")
                        .parse()
                        .expect("number"),
                    uri: attribute(v, "URI").expect("URI").to_string(),
                    independent: v.contains("INDEPENDENT=YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                assert_eq!(attribute(v, "TYPE"), Some("PART"));
                p.preload_hint = attribute(v, "URI").map(str::to_string);
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                duration = Some(v.trim_end_matches(',').parse::<f64>().expect("EXTINF"));
            } else if line == "#EXT-X-ENDLIST" {
                p.ended = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                let sequence = p.media_sequence + (p.skipped + p.segments.len()) as u64;
                p.segments.push((
                    sequence,
                    duration.take().expect("EXTINF before URI"),
                    line.to_string(),
                    std::mem::take(&mut parts),
                ));
            }
        }
        p.open_parts = parts;
        p
    }

    /// The newest part: (segment sequence, index within it).
    pub fn newest_part(&self) -> Option<(u64, usize)> {
        if !self.open_parts.is_empty() {
            let sequence = self.media_sequence + (self.skipped + self.segments.len()) as u64;
            return Some((sequence, self.open_parts.len() - 1));
        }
        let (sequence, _, _, parts) = self.segments.last()?;
        Some((*sequence, parts.len().checked_sub(1)?))
    }

    pub fn all_parts(&self) -> impl Iterator<Item = &LlPart> {
        self.segments
            .iter()
            .flat_map(|s| s.3.iter())
            .chain(self.open_parts.iter())
    }
}

/// A real WebSocket chat client (blocking tungstenite over a loopback TCP socket).
pub struct ChatClient {
    pub ws: tungstenite::WebSocket<std::net::TcpStream>,
}

impl ChatClient {
    /// Connects; an HTTP refusal comes back as the server's response.
    pub fn connect(
        http: SocketAddr,
        slug: &str,
        token: Option<&str>,
    ) -> Result<ChatClient, Response> {
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{http}/api/channels/{slug}/chat")
            .into_client_request()
            .expect("request");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        // Each chat client is its own device, as phones are: the box counts viewers by
        // address and caps sockets per address.
        let stream = connect_from(new_device(), http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        match tungstenite::client(request, stream) {
            Ok((ws, _)) => Ok(ChatClient { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(Response {
                    status: response.status().as_u16(),
                    headers: Vec::new(),
                    body: response.body().clone().unwrap_or_default(),
                })
            }
            Err(e) => panic!("chat handshake: {e}"),
        }
    }

    pub fn send(&mut self, frame: serde_json::Value) {
        self.ws
            .send(tungstenite::Message::text(frame.to_string()))
            .expect("send frame");
    }

    /// The next JSON frame within `timeout`, `None` if none came; panics if the socket
    /// closed (see [`ChatClient::next_event`] to observe that).
    pub fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        match self.next_event(timeout) {
            ChatEvent::Frame(frame) => Some(frame),
            ChatEvent::Quiet => None,
            ChatEvent::Closed(why) => panic!("chat socket closed: {why:?}"),
        }
    }

    pub fn next_event(&mut self, timeout: Duration) -> ChatEvent {
        let deadline = Instant::now() + timeout;
        loop {
            // Control frames (pings) do not count: the deadline is for a data frame.
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return ChatEvent::Quiet;
            };
            self.ws
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    return ChatEvent::Frame(
                        serde_json::from_str(text.as_str()).expect("frame is JSON"),
                    )
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    return ChatEvent::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    )
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return ChatEvent::Quiet
                }
                Err(_) => return ChatEvent::Closed(None),
            }
        }
    }

    /// The next frame of type `kind`, skipping others (viewer counts, other chatter).
    pub fn next_of(&mut self, kind: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(frame) if frame["type"] == kind => return frame,
                Some(_) => {}
                None => panic!("no `{kind}` frame within {timeout:?}"),
            }
        }
    }

    /// The `hello` frame and the history frames after it.
    pub fn hello(&mut self) -> (serde_json::Value, Vec<serde_json::Value>) {
        let hello = self.next(Duration::from_secs(10)).expect("hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        let count = hello["history"].as_u64().expect("history count");
        let history = (0..count)
            .map(|_| self.next(Duration::from_secs(10)).expect("history frame"))
            .collect();
        (hello, history)
    }

    /// Asserts nothing of type `kind` arrives within `quiet`.
    pub fn assert_no(&mut self, kind: &str, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let ChatEvent::Frame(frame) = self.next_event(left) {
                assert_ne!(frame["type"], kind, "unexpected {frame}");
            } else {
                return;
            }
        }
    }
}

#[derive(Debug)]
pub enum ChatEvent {
    Frame(serde_json::Value),
    Quiet,
    /// Close code and reason, if the server sent a close frame.
    Closed(Option<(u16, String)>),
}

/// A TCP connection to `to` (IPv4) from `source`; `None` if it cannot be made.
pub fn connect_from(source: std::net::Ipv4Addr, to: SocketAddr) -> Option<std::net::TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        return None;
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // The port is picked at connect, knowing the destination: bind(0) alone would search
    // for a port free towards every destination, which slows to milliseconds once a
    // source address holds thousands of sockets.
    let _ =
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )
    .ok()?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).ok()?;
    Some(std::net::TcpStream::from(fd))
}

/// A loopback address no other caller in this test process got: one more device on the
/// venue network (127.0.100.1, 127.0.100.2, …).
pub fn new_device() -> std::net::Ipv4Addr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::net::Ipv4Addr::new(
        127,
        100 + (n / 62_500) as u8,
        (n / 250 % 250) as u8,
        1 + (n % 250) as u8,
    )
}

/// One HTTP/1.1 request on a new connection from `source` (any 127.x.y.z address is this
/// machine, so tests can play many clients on the venue network); `None` if the
/// connection was refused or cut before a whole answer.
pub fn request_from(
    source: std::net::Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<Response> {
    use std::io::{Read, Write};
    let mut stream = connect_from(source, to)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    // The body goes from another thread while this one reads: a server that refuses a body
    // answers before reading it, and its answer still counts.
    let mut writer = stream.try_clone().ok()?;
    let body = body.to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Runs `work(i)` for `i` in `0..n` on `n` threads released at the same instant (a
/// check-then-act race shows only then); returns the results in order of `i`.
pub fn all_at_once<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let start = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (work, start) = (work.clone(), start.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    work(i)
                })
                .expect("thread")
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field")
}
