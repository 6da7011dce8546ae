//! Configuration: embedded defaults, an optional TOML file, then command-line overrides.
//!
//! The daemon must run with no file at all (a venue operator never hand-edits config before
//! the first stream), so every field has a default, and the commented default file is
//! embedded in the binary and printed by `commeowd generate-config`.

pub mod console;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default configuration, as shipped.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default-config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The file this came from, if any: the console's drop-in is laid over it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `None` until resolved: `$STATE_DIRECTORY` under systemd, else `./data`.
    pub data_dir: Option<PathBuf>,
    pub http: HttpConfig,
    pub rtmp: RtmpConfig,
    pub hls: HlsConfig,
    pub auth: AuthConfig,
    pub channels: ChannelsConfig,
    pub chat: ChatConfig,
    pub points: PointsConfig,
    pub kakao_pay: KakaoPayConfig,
    pub onboarding: OnboardingConfig,
    pub fleet: FleetConfig,
    pub transcode: TranscodeConfig,
    pub metrics: MetricsConfig,
    pub webrtc: WebrtcConfig,
}

/// "In the room" playback: WebRTC (WHEP) on the LAN, one UDP port for every viewer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    pub enabled: bool,
    /// The UDP port every WebRTC viewer's media goes through (bound on all IPv4
    /// interfaces; 0 takes any free one, for tests).
    pub port: u16,
    /// Addresses offered to browsers as ICE host candidates. Empty: every IPv4 address of
    /// the box's interfaces (loopback only to a browser on the box itself).
    pub addresses: Vec<std::net::IpAddr>,
    /// WebRTC viewers at once on the box, and on one channel; past either, the page plays
    /// LL-HLS.
    pub max_viewers: usize,
    pub max_viewers_per_channel: usize,
    /// WebRTC sessions one client address may hold (a phone with a few tabs).
    pub max_viewers_per_device: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            enabled: true,
            port: 8189,
            addresses: Vec::new(),
            // SRTP is encrypted once per viewer: ~1 % of a Pi 4 core per 2.5 Mbps viewer
            // (bench/README.md), and the Wi-Fi runs out well before 50 of them.
            max_viewers: 50,
            max_viewers_per_channel: 50,
            max_viewers_per_device: 4,
        }
    }
}

/// `/metrics` (Prometheus text): from the box itself always; from the LAN only with the
/// token in `token_file` as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A file holding the scrape token (one line); without it, only loopback may scrape.
    pub token_file: Option<PathBuf>,
}

/// Whether the ladder runs: `"auto"` turns it on where the probe finds a hardware H.264
/// encoder that works, and leaves it off where only libx264 does (a small board's CPU is
/// the venue's to spend, knowingly); `true` runs it on whatever the probe picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SwitchWord")]
pub enum TranscodeSwitch {
    Auto,
    On,
    Off,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SwitchWord {
    Flag(bool),
    Word(String),
}

impl TryFrom<SwitchWord> for TranscodeSwitch {
    type Error = String;
    fn try_from(word: SwitchWord) -> Result<Self, Self::Error> {
        match word {
            SwitchWord::Flag(true) => Ok(TranscodeSwitch::On),
            SwitchWord::Flag(false) => Ok(TranscodeSwitch::Off),
            SwitchWord::Word(w) if w == "auto" => Ok(TranscodeSwitch::Auto),
            SwitchWord::Word(w) => Err(format!("`{w}`: use true, false or \"auto\"")),
        }
    }
}

/// The H.264 encoders the ladder knows, in the order `"auto"` tries them: the boards'
/// hardware encoders (Pi 4, Intel, Jetson, NVIDIA, Intel Quick Sync), then software.
pub const ENCODERS: [&str; 6] = [
    "h264_v4l2m2m",
    "h264_vaapi",
    "h264_nvmpi",
    "h264_nvenc",
    "h264_qsv",
    "libx264",
];

/// The adaptive ladder: renditions below the source, made in the process with one decode
/// and a scale and encode per rung.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    pub enabled: TranscodeSwitch,
    /// Encoders to try, in order; `"auto"` stands for all of [`ENCODERS`] in their order.
    pub encoders: Vec<String>,
    /// libx264's preset (always with `tune=zerolatency` and no B-frames).
    pub x264_preset: String,
    pub ladder: Vec<RungConfig>,
}

/// One rendition of the ladder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Its name in URLs (`/hls/<channel>/<name>/…`): a-z, 0-9, up to 16.
    pub name: String,
    /// Picture height; the width keeps the source's aspect ratio (even). A rung at or
    /// above the source's height is skipped.
    pub height: u32,
    pub video_kbps: u32,
    /// Frames per second at most (a 60 fps source gives 30 on a rung that says 30).
    #[serde(default = "default_max_fps")]
    pub max_fps: f64,
    /// Tests only: each frame's encode is made this much slower (an overloaded encoder).
    #[serde(default)]
    pub test_slowdown_ms: u64,
}

fn default_max_fps() -> f64 {
    30.0
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: TranscodeSwitch::Auto,
            encoders: vec!["auto".into()],
            x264_preset: "ultrafast".into(),
            ladder: vec![
                RungConfig {
                    name: "720p".into(),
                    height: 720,
                    video_kbps: 2500,
                    max_fps: 30.0,
                    test_slowdown_ms: 0,
                },
                RungConfig {
                    name: "480p".into(),
                    height: 480,
                    video_kbps: 1000,
                    max_fps: 30.0,
                    test_slowdown_ms: 0,
                },
            ],
        }
    }
}

impl TranscodeConfig {
    /// The encoders to try, in order, `"auto"` expanded.
    pub fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in &self.encoders {
            let names: Vec<String> = if name == "auto" {
                ENCODERS.iter().map(|s| s.to_string()).collect()
            } else {
                vec![name.clone()]
            };
            for name in names {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.encoders.is_empty() {
            return invalid(
                "transcode.encoders",
                "name at least one, or \"auto\"".into(),
            );
        }
        for name in &self.encoders {
            if name != "auto" && !ENCODERS.contains(&name.as_str()) {
                return invalid(
                    "transcode.encoders",
                    format!("`{name}`: use \"auto\" or some of {}", ENCODERS.join(", ")),
                );
            }
        }
        const PRESETS: [&str; 10] = [
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
            "placebo",
        ];
        if !PRESETS.contains(&self.x264_preset.as_str()) {
            return invalid(
                "transcode.x264_preset",
                format!("`{}`: use one of {}", self.x264_preset, PRESETS.join(", ")),
            );
        }
        for (i, rung) in self.ladder.iter().enumerate() {
            let name_ok = !rung.name.is_empty()
                && rung.name.len() <= 16
                && rung
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && rung.name != "source";
            if !name_ok || self.ladder[..i].iter().any(|r| r.name == rung.name) {
                return invalid(
                    "transcode.ladder.name",
                    format!(
                        "`{}`: 1 to 16 of a-z and 0-9, unique, not `source`",
                        rung.name
                    ),
                );
            }
            if !(144..=2160).contains(&rung.height) || rung.height % 2 != 0 {
                return invalid(
                    "transcode.ladder.height",
                    format!(
                        "{} (rung {}): an even height within 144..=2160",
                        rung.height, rung.name
                    ),
                );
            }
            if !(100..=20_000).contains(&rung.video_kbps) {
                return invalid(
                    "transcode.ladder.video_kbps",
                    format!(
                        "{} (rung {}): within 100..=20000",
                        rung.video_kbps, rung.name
                    ),
                );
            }
            if !(1.0..=120.0).contains(&rung.max_fps) {
                return invalid(
                    "transcode.ladder.max_fps",
                    format!("{} (rung {}): within 1..=120", rung.max_fps, rung.name),
                );
            }
        }
        Ok(())
    }
}

/// The fleet relay: the outbox's events to the central service over MQTT. Off by default:
/// a box works fully without it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    pub enabled: bool,
    /// `mqtts://host:8883` (or `mqtt://` on a trusted network and in tests).
    pub broker: String,
    /// This box's id in the fleet: its certificate's CN. 1 to 64 of a-z, 0-9 and -.
    pub box_id: String,
    /// The fleet CA, this box's certificate and its key. Unset: the service's systemd
    /// credentials `fleet_ca.pem`, `fleet_box.pem`, `fleet_box.key` (the card image loads
    /// its `/etc/commeowd/fleet/` so, the key readable by the service alone).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Events per message.
    pub batch: usize,
    /// Events sent and not yet acknowledged, at most.
    pub window: usize,
    /// With events in flight and no acknowledgement for this long, send again from the
    /// oldest unacknowledged one.
    pub ack_timeout_seconds: f64,
    pub keepalive_seconds: u64,
    /// Status is republished this often.
    pub status_seconds: u64,
    /// Past this many unacknowledged events, the box says so loudly (status, logs,
    /// `/healthz`). Nothing is dropped.
    pub outbox_warn: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            enabled: false,
            broker: String::new(),
            box_id: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            batch: 200,
            window: 2000,
            ack_timeout_seconds: 10.0,
            keepalive_seconds: 15,
            status_seconds: 10,
            outbox_warn: 100_000,
        }
    }
}

impl FleetConfig {
    /// Where and how to reach the broker, with each TLS file from the config or else from
    /// the systemd credential of that name.
    pub fn broker(&self) -> fleet_proto::broker::Broker {
        let or_credential = |set: &Option<PathBuf>, name: &str| {
            set.clone().or_else(|| {
                let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")?;
                Some(Path::new(&credentials).join(name)).filter(|p| p.is_file())
            })
        };
        fleet_proto::broker::Broker {
            url: self.broker.clone(),
            ca_file: or_credential(&self.ca_file, "fleet_ca.pem"),
            cert_file: or_credential(&self.cert_file, "fleet_box.pem"),
            key_file: or_credential(&self.key_file, "fleet_box.key"),
        }
    }

    /// Reads the broker's TLS files as the relay will, so `check-config` reports a bad
    /// certificate or key before the box runs on it.
    pub fn check_broker(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        self.broker()
            .options(&self.box_id, Duration::from_secs(self.keepalive_seconds))
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                key: "fleet.broker",
                message: e.to_string(),
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        if fleet_proto::BoxId::new(&self.box_id).is_err() {
            return Err(invalid("fleet.box_id", "use 1 to 64 of a-z, 0-9 and -"));
        }
        if !(self.broker.starts_with("mqtt://") || self.broker.starts_with("mqtts://")) {
            return Err(invalid(
                "fleet.broker",
                "use mqtts://host:port or mqtt://host:port",
            ));
        }
        if self.batch == 0 || self.window < self.batch {
            return Err(invalid(
                "fleet.window",
                "must be at least fleet.batch (>= 1)",
            ));
        }
        if !(0.1..=3600.0).contains(&self.ack_timeout_seconds) {
            return Err(invalid(
                "fleet.ack_timeout_seconds",
                "must be within 0.1..=3600",
            ));
        }
        if self.keepalive_seconds < 5 || self.status_seconds == 0 {
            return Err(invalid(
                "fleet.keepalive_seconds",
                "keepalive at least 5 s, status_seconds at least 1",
            ));
        }
        Ok(())
    }
}

/// The first visitor's set-up of a fresh box (the image's first boot).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnboardingConfig {
    /// The one-time setup code's file. Unset: systemd's `setup-code` credential when the
    /// unit passes one (the image does), else no web onboarding (use the CLI).
    pub setup_code_file: Option<PathBuf>,
}

impl OnboardingConfig {
    /// The file to read the setup code from, if there is one.
    pub fn code_file(&self) -> Option<PathBuf> {
        if let Some(path) = &self.setup_code_file {
            return Some(path.clone());
        }
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        Some(Path::new(&credentials).join("setup-code")).filter(|p| p.is_file())
    }
}

/// Kakao Pay top-ups: where the API is, the merchant's credentials, and what is for sale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KakaoPayConfig {
    pub base_url: String,
    /// Merchant code (`TC0ONETIME` is Kakao Pay's test merchant).
    pub cid: String,
    /// File holding the secret key; top-ups are off until it is set.
    pub secret_key_file: Option<PathBuf>,
    /// How long one call to Kakao Pay may take.
    pub timeout_seconds: f64,
    /// How often pending orders nobody is looking at are confirmed with Kakao Pay.
    pub recheck_seconds: u64,
    /// The catalog: the only prices the box will ever charge.
    pub products: Vec<Product>,
}

/// A top-up the viewer can buy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: String,
    pub points: i64,
    pub price_krw: i64,
}

impl Default for KakaoPayConfig {
    fn default() -> Self {
        let product = |points| Product {
            id: format!("points-{points}"),
            points,
            price_krw: points,
        };
        KakaoPayConfig {
            base_url: "https://open-api.kakaopay.com".into(),
            cid: "TC0ONETIME".into(),
            secret_key_file: None,
            timeout_seconds: 10.0,
            recheck_seconds: 60,
            products: vec![product(1_000), product(5_000), product(10_000)],
        }
    }
}

impl KakaoPayConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }

    pub fn recheck_interval(&self) -> Duration {
        Duration::from_secs(self.recheck_seconds)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return invalid("kakao_pay.base_url", "must be an http(s) URL".into());
        }
        if self.cid.is_empty() || self.cid.len() > 10 {
            return invalid("kakao_pay.cid", "must be 1 to 10 characters".into());
        }
        if !(0.1..=120.0).contains(&self.timeout_seconds) {
            return invalid(
                "kakao_pay.timeout_seconds",
                "must be within 0.1..=120".into(),
            );
        }
        if !(1..=86_400).contains(&self.recheck_seconds) {
            return invalid(
                "kakao_pay.recheck_seconds",
                "must be within 1..=86400".into(),
            );
        }
        for (i, product) in self.products.iter().enumerate() {
            let id_ok = (1..=40).contains(&product.id.len())
                && product
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return invalid(
                    "kakao_pay.products",
                    format!(
                        "id `{}`: use 1-40 characters a-z, 0-9, '-' and '_'",
                        product.id
                    ),
                );
            }
            if self.products[..i].iter().any(|p| p.id == product.id) {
                return invalid(
                    "kakao_pay.products",
                    format!("id `{}` is listed twice", product.id),
                );
            }
            if product.points <= 0 || product.price_krw <= 0 {
                return invalid(
                    "kakao_pay.products",
                    format!("`{}`: points and price_krw must be positive", product.id),
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Channels one streamer may create (admins are not bound).
    pub per_streamer: usize,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig { per_streamer: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PointsConfig {
    /// Smallest and largest donation, in points.
    pub donation_min: i64,
    pub donation_max: i64,
    /// Longest donation message, in characters.
    pub message_max_chars: usize,
}

impl Default for PointsConfig {
    fn default() -> Self {
        PointsConfig {
            donation_min: 100,
            donation_max: 1_000_000,
            message_max_chars: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Messages a joining socket receives first.
    pub history: usize,
    /// Longest message, in characters.
    pub max_chars: usize,
    /// At most `rate_messages` per `rate_seconds` per user, else muted for `mute_seconds`.
    pub rate_messages: usize,
    pub rate_seconds: f64,
    pub mute_seconds: u64,
    /// Messages a socket may fall behind the room before it is dropped.
    pub socket_queue: usize,
    /// How long one write to a socket may take before the socket is dropped.
    pub write_timeout_seconds: f64,
    /// Sockets are pinged this often; one silent for two intervals is closed.
    pub ping_seconds: f64,
    /// Chat sockets one client address may hold open, on all channels together.
    pub sockets_per_address: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history: 50,
            max_chars: 300,
            rate_messages: 3,
            rate_seconds: 2.0,
            mute_seconds: 10,
            socket_queue: 256,
            write_timeout_seconds: 10.0,
            ping_seconds: 30.0,
            sockets_per_address: 8,
        }
    }
}

impl ChatConfig {
    pub fn rate_window(&self) -> Duration {
        Duration::from_secs_f64(self.rate_seconds)
    }

    pub fn mute(&self) -> Duration {
        Duration::from_secs(self.mute_seconds)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout_seconds)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub access_token_seconds: u64,
    pub refresh_token_days: u64,
    /// Password hashes (argon2id, 19 MiB each) computed at once, at most.
    pub password_hash_threads: usize,
    /// How long a login or sign-up waits for a hashing thread before `503 busy`.
    pub password_hash_wait_seconds: f64,
    /// Live sessions (logins) one account may hold; a new login ends the oldest past this.
    pub sessions_per_user: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_seconds: 900,
            refresh_token_days: 30,
            password_hash_threads: 2,
            password_hash_wait_seconds: 3.0,
            sessions_per_user: 10,
        }
    }
}

impl AuthConfig {
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_seconds)
    }

    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_days * 86_400)
    }

    pub fn password_hash_wait(&self) -> Duration {
        Duration::from_secs_f64(self.password_hash_wait_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Open HTTP connections at most; past it a new one is refused at once (503).
    pub max_connections: usize,
    /// Open HTTP connections one client address may hold.
    pub connections_per_address: usize,
    /// Seconds a request's headers may take to arrive, and an idle keep-alive connection
    /// may wait for its next request.
    pub header_timeout_seconds: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub listen: SocketAddr,
    pub public_host: String,
    pub max_connections: usize,
    /// Open RTMP connections one address may hold (OBS needs one per stream).
    pub connections_per_address: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    pub target_duration: f64,
    pub part_target: f64,
    pub window_segments: usize,
    pub linger_seconds: u64,
    /// Blocking-reload requests (LL-HLS playlists and preload-hinted parts) held at once;
    /// past it a new one gets 503 with Retry-After at once.
    pub max_held_requests: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            // A Pi 4 with 1 GB: about 16 KB a connection, so 2048 is ~32 MB at worst, well
            // inside the unit's descriptors (LimitNOFILE) and memory; a phone's browser
            // opens at most 6 to one host, hls.js 2-3.
            max_connections: 2048,
            connections_per_address: 64,
            header_timeout_seconds: 10.0,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            public_host: String::new(),
            max_connections: 64,
            connections_per_address: 4,
        }
    }
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: 2.0,
            part_target: 0.2,
            window_segments: 5,
            linger_seconds: 30,
            max_held_requests: 1024,
        }
    }
}

impl HlsConfig {
    pub fn target(&self) -> Duration {
        Duration::from_secs_f64(self.target_duration)
    }

    pub fn part_target(&self) -> Duration {
        Duration::from_secs_f64(self.part_target)
    }

    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.linger_seconds)
    }
}

impl Config {
    /// Parses a TOML document. Errors name the offending key (`hls.target_duration: …`).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| parse_error(e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().message().trim().to_string();
            parse_error(format!("key `{key}`: {inner}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let target = self.hls.target_duration;
        if !(0.5..=30.0).contains(&target) {
            return Err(ConfigError::Invalid {
                key: "hls.target_duration",
                message: format!("{target} is outside 0.5..=30 seconds"),
            });
        }
        let part = self.hls.part_target;
        if !(0.1..=2.0).contains(&part) || part >= target {
            return Err(ConfigError::Invalid {
                key: "hls.part_target",
                message: format!(
                    "{part} must be within 0.1..=2 seconds and below hls.target_duration"
                ),
            });
        }
        if !(3..=100).contains(&self.hls.window_segments) {
            return Err(ConfigError::Invalid {
                key: "hls.window_segments",
                message: format!(
                    "{} is outside 3..=100 (RFC 8216 wants at least three target durations)",
                    self.hls.window_segments
                ),
            });
        }
        if !(1..=86_400).contains(&self.auth.access_token_seconds) {
            return Err(ConfigError::Invalid {
                key: "auth.access_token_seconds",
                message: format!("{} is outside 1..=86400", self.auth.access_token_seconds),
            });
        }
        if !(1..=365).contains(&self.auth.refresh_token_days) {
            return Err(ConfigError::Invalid {
                key: "auth.refresh_token_days",
                message: format!("{} is outside 1..=365", self.auth.refresh_token_days),
            });
        }
        if !(1..=64).contains(&self.auth.password_hash_threads) {
            return Err(ConfigError::Invalid {
                key: "auth.password_hash_threads",
                message: format!(
                    "{} is outside 1..=64 (each one may hold 19 MiB)",
                    self.auth.password_hash_threads
                ),
            });
        }
        if !(0.1..=60.0).contains(&self.auth.password_hash_wait_seconds) {
            return Err(ConfigError::Invalid {
                key: "auth.password_hash_wait_seconds",
                message: format!(
                    "{} is outside 0.1..=60",
                    self.auth.password_hash_wait_seconds
                ),
            });
        }
        if !(1..=1000).contains(&self.auth.sessions_per_user) {
            return Err(ConfigError::Invalid {
                key: "auth.sessions_per_user",
                message: format!("{} is outside 1..=1000", self.auth.sessions_per_user),
            });
        }
        if !(1..=1000).contains(&self.channels.per_streamer) {
            return Err(ConfigError::Invalid {
                key: "channels.per_streamer",
                message: format!("{} is outside 1..=1000", self.channels.per_streamer),
            });
        }
        let chat = &self.chat;
        let checks: [(&'static str, bool, &str); 9] = [
            ("chat.history", chat.history <= 1000, "at most 1000"),
            (
                "chat.max_chars",
                (1..=10_000).contains(&chat.max_chars),
                "within 1..=10000",
            ),
            ("chat.rate_messages", chat.rate_messages >= 1, "at least 1"),
            (
                "chat.rate_seconds",
                (0.1..=3600.0).contains(&chat.rate_seconds),
                "within 0.1..=3600",
            ),
            (
                "chat.mute_seconds",
                chat.mute_seconds <= 86_400,
                "at most 86400",
            ),
            (
                "chat.socket_queue",
                (16..=65_536).contains(&chat.socket_queue),
                "within 16..=65536",
            ),
            (
                "chat.write_timeout_seconds",
                (0.1..=300.0).contains(&chat.write_timeout_seconds),
                "within 0.1..=300",
            ),
            (
                "chat.ping_seconds",
                (0.5..=600.0).contains(&chat.ping_seconds),
                "within 0.5..=600",
            ),
            (
                "chat.sockets_per_address",
                (1..=10_000).contains(&chat.sockets_per_address),
                "within 1..=10000",
            ),
        ];
        let points = &self.points;
        let checks = checks.into_iter().chain([
            (
                "points.donation_min",
                points.donation_min >= 1,
                "at least 1",
            ),
            (
                "points.donation_max",
                points.donation_max >= points.donation_min,
                "at least points.donation_min",
            ),
            (
                "points.message_max_chars",
                points.message_max_chars <= 1000,
                "at most 1000",
            ),
        ]);
        if let Some((key, _, message)) = checks.into_iter().find(|(_, ok, _)| !ok) {
            return Err(ConfigError::Invalid {
                key,
                message: format!("must be {message}"),
            });
        }
        self.kakao_pay.validate()?;
        self.fleet.validate()?;
        self.transcode.validate()?;
        if self.webrtc.max_viewers_per_channel > self.webrtc.max_viewers {
            return Err(ConfigError::Invalid {
                key: "webrtc.max_viewers_per_channel",
                message: "must be at most webrtc.max_viewers".into(),
            });
        }
        if self.http.max_connections == 0
            || !(1..=self.http.max_connections).contains(&self.http.connections_per_address)
        {
            return Err(ConfigError::Invalid {
                key: "http.connections_per_address",
                message: "must be at least 1 and at most http.max_connections".into(),
            });
        }
        if !(0.5..=300.0).contains(&self.http.header_timeout_seconds) {
            return Err(ConfigError::Invalid {
                key: "http.header_timeout_seconds",
                message: format!("{} is outside 0.5..=300", self.http.header_timeout_seconds),
            });
        }
        if self.hls.max_held_requests == 0 {
            return Err(ConfigError::Invalid {
                key: "hls.max_held_requests",
                message: "must be at least 1".into(),
            });
        }
        if self.rtmp.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "rtmp.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if !(1..=self.rtmp.max_connections).contains(&self.rtmp.connections_per_address) {
            return Err(ConfigError::Invalid {
                key: "rtmp.connections_per_address",
                message: "must be at least 1 and at most rtmp.max_connections".into(),
            });
        }
        Ok(())
    }

    /// The data directory: the configured one, else `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`, first entry), else `./data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dirs) if !dirs.is_empty() => {
                let dirs = dirs.to_string_lossy().into_owned();
                PathBuf::from(dirs.split(':').next().unwrap_or("data"))
            }
            _ => PathBuf::from("data"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn embedded_default_file_matches_the_built_in_defaults() {
        let from_file = parse(DEFAULT_CONFIG_TOML).expect("embedded config parses");
        // Every section, every key: the file a venue edits must say what runs.
        assert_eq!(
            format!("{from_file:#?}"),
            format!("{:#?}", Config::default())
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").expect("empty is valid");
        assert_eq!(config.http.listen.port(), 8080);
        assert_eq!(config.rtmp.listen.port(), 1935);
    }

    #[test]
    fn bad_value_names_its_key() {
        let err = parse("[http]\nlisten = \"nonsense\"\n").expect_err("must fail");
        assert!(err.to_string().contains("http.listen"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[hls]\ntarget_durration = 2.0\n").expect_err("must fail");
        assert!(err.to_string().contains("target_durration"), "{err}");
    }

    #[test]
    fn transcode_takes_auto_or_a_flag_and_checks_its_rungs() {
        let on = parse("[transcode]\nenabled = true\n").expect("true");
        assert_eq!(on.transcode.enabled, TranscodeSwitch::On);
        assert_eq!(Config::default().transcode.enabled, TranscodeSwitch::Auto);
        let err = parse("[transcode]\nenabled = \"yes\"\n").expect_err("yes");
        assert!(err.to_string().contains("auto"), "{err}");
        // "auto" expands in order; a name given first keeps its place, once.
        let config = parse("[transcode]\nencoders = [\"libx264\", \"auto\"]\n").expect("list");
        let candidates = config.transcode.candidates();
        assert_eq!(candidates.first().map(String::as_str), Some("libx264"));
        assert_eq!(candidates.len(), ENCODERS.len());
        for (text, key) in [
            (
                "[transcode]\nencoders = [\"h265_magic\"]\n",
                "transcode.encoders",
            ),
            (
                "[transcode]\nx264_preset = \"turbo\"\n",
                "transcode.x264_preset",
            ),
            (
                "[[transcode.ladder]]\nname = \"source\"\nheight = 360\nvideo_kbps = 600\n",
                "transcode.ladder.name",
            ),
            (
                "[[transcode.ladder]]\nname = \"odd\"\nheight = 361\nvideo_kbps = 600\n",
                "transcode.ladder.height",
            ),
            (
                "[[transcode.ladder]]\nname = \"a\"\nheight = 360\nvideo_kbps = 600\n\
                 [[transcode.ladder]]\nname = \"a\"\nheight = 240\nvideo_kbps = 300\n",
                "transcode.ladder.name",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn out_of_range_value_names_its_key() {
        let err = parse("[hls]\ntarget_duration = 0\n").expect_err("must fail");
        assert!(err.to_string().contains("hls.target_duration"), "{err}");
    }
}
