//! "In the room" playback: WebRTC viewers on the venue's network, a few tenths of a second
//! behind the stage, through WHEP (an SDP offer posted over HTTP, answered with SDP).
//!
//! The box is ICE-lite with host candidates only: it is on the same LAN as the phones, so
//! no STUN or TURN server is involved, and every viewer's media shares one UDP port
//! ([`socket`]). Each viewer is a task ([`peer`]) reading its variant's real-time feed
//! (see [`crate::hls::realtime`]): the source's H.264 as it came when it has no B-frames,
//! else a ladder rung's (which never has them and makes a keyframe when asked), and the
//! source's audio as Opus. Viewers are bounded per box and per channel; past either, a
//! join is refused and the page plays LL-HLS.

pub mod peer;
pub mod socket;

use crate::config::WebrtcConfig;
use crate::hls::{Broadcast, Broadcasts, Variant};
use rand::Rng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::{Candidate, IceCreds, RtcConfig};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("WebRTC playback is off on this box")]
    Off,
    #[error("channel `{0}` is not live")]
    NotLive(String),
    #[error("{0}")]
    Full(String),
    /// The stream has no video a WebRTC viewer can be sent.
    #[error("{0}")]
    NoVideo(String),
    #[error("the SDP offer cannot be used: {0}")]
    BadOffer(String),
}

/// One viewer's place, from its join until its task ends.
struct Session {
    slug: String,
    client: IpAddr,
    stop: tokio_util::sync::CancellationToken,
}

pub struct Webrtc {
    config: WebrtcConfig,
    /// The box's DTLS certificate, made once at start and shown to every viewer: a key
    /// pair and a certificate per join would be work for nothing, done for every offer
    /// anyone posts (each session still agrees its own keys). None, like `port`, when
    /// WebRTC is off.
    cert: Option<DtlsCert>,
    broadcasts: Arc<Broadcasts>,
    port: Option<Arc<socket::Port>>,
    sessions: Mutex<HashMap<String, Session>>,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

/// A viewer that joined: its resource's id and the SDP answer.
#[derive(Debug)]
pub struct Joined {
    pub id: String,
    pub answer: String,
}

impl Webrtc {
    /// Takes the UDP port systemd opened (`commeowd-webrtc.socket`), or binds
    /// `webrtc.port`, when enabled, and starts reading it. A port that cannot be had leaves
    /// WebRTC off, said in the log: viewers play LL-HLS, and the box runs.
    pub fn start(
        config: WebrtcConfig,
        inherited: Option<std::net::UdpSocket>,
        broadcasts: Arc<Broadcasts>,
        shutdown: tokio_util::sync::CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> Arc<Webrtc> {
        let cert = match config.enabled.then(certificate) {
            Some(Ok(cert)) => Some(cert),
            Some(Err(e)) => {
                tracing::error!(error = %e, "WebRTC is off");
                None
            }
            None => None,
        };
        let bound = cert.is_some().then(|| match inherited {
            Some(socket) => socket::Port::from_std(socket),
            None => std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], config.port)))
                .and_then(socket::Port::from_std),
        });
        let port = match bound {
            Some(Ok(port)) => {
                tracing::info!(addr = %SocketAddr::from(([0, 0, 0, 0], port.port)), "webrtc listening");
                tracker.spawn(port.clone().run(shutdown.clone()));
                Some(port)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, port = config.port, "WebRTC is off: its UDP port cannot be bound");
                None
            }
            None => None,
        };
        Arc::new(Webrtc {
            config,
            cert: port.as_ref().and(cert),
            broadcasts,
            port,
            sessions: Mutex::new(HashMap::new()),
            shutdown,
            tracker,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// WebRTC viewers now, on the box and by channel.
    pub fn viewers(&self) -> (usize, HashMap<String, usize>) {
        let sessions = self.sessions();
        let mut by_channel = HashMap::new();
        for session in sessions.values() {
            *by_channel.entry(session.slug.clone()).or_insert(0) += 1;
        }
        (sessions.len(), by_channel)
    }

    /// Datagrams the port dropped: from no viewer (garbage, scans), and for a viewer
    /// whose inbox was full.
    pub fn dropped(&self) -> (u64, u64) {
        self.port.as_ref().map_or((0, 0), |p| {
            (
                p.dropped.unknown.load(std::sync::atomic::Ordering::Relaxed),
                p.dropped.full.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// A viewer at `client` offers `offer` to watch `slug`: the answer, or why not.
    pub fn join(
        self: &Arc<Self>,
        slug: &str,
        offer: &str,
        client: IpAddr,
    ) -> Result<Joined, JoinError> {
        let (Some(port), Some(cert)) = (self.port.clone(), self.cert.as_ref()) else {
            return Err(JoinError::Off);
        };
        let broadcast = self
            .broadcasts
            .get(slug)
            .filter(|b| b.is_live())
            .ok_or_else(|| JoinError::NotLive(slug.to_string()))?;
        let variant = video_for_webrtc(&broadcast)?;
        // Refused before the offer is parsed and answered, so a flood of offers past the
        // limits costs little; checked again where the place is taken.
        self.check_place(&self.sessions(), slug, client)?;
        let candidates: Vec<SocketAddr> = self
            .candidate_addresses(client)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port.port))
            .collect();
        let profile = variant.realtime.traits().map_or(0, |t| t.profile_level_id);
        let Answered {
            rtc,
            answer,
            tracks,
            ufrag,
        } = answer_offer(offer, &candidates, profile, cert)?;
        let id = random_token(16);
        let stop = self.shutdown.child_token();
        {
            let mut sessions = self.sessions();
            self.check_place(&sessions, slug, client)?;
            sessions.insert(
                id.clone(),
                Session {
                    slug: slug.to_string(),
                    client,
                    stop: stop.clone(),
                },
            );
        }
        let (inbox_tx, inbox) = tokio::sync::mpsc::channel(socket::INBOX);
        port.route(&ufrag, inbox_tx);
        let viewer = peer::Peer {
            rtc,
            port: port.clone(),
            inbox,
            tracks,
            video: variant.realtime.subscribe(),
            audio: broadcast.realtime_audio.subscribe(),
            variant: Arc::downgrade(&variant),
            broadcast: Arc::downgrade(&broadcast),
            stop,
        };
        let this = self.clone();
        let session = id.clone();
        let slug = slug.to_string();
        let variant_name = variant.name.clone();
        tracing::info!(channel = %slug, session = %session, variant = %variant_name, %client, "WebRTC viewer joined");
        self.tracker.spawn(async move {
            let ended = viewer.run().await;
            port.unroute(&ufrag);
            this.sessions().remove(&session);
            tracing::info!(channel = %slug, session = %session, ?ended, "WebRTC viewer left");
        });
        Ok(Joined { id, answer })
    }

    /// Whether a viewer at `client` may join `slug` with the sessions open now.
    fn check_place(
        &self,
        sessions: &HashMap<String, Session>,
        slug: &str,
        client: IpAddr,
    ) -> Result<(), JoinError> {
        let on_channel = sessions.values().filter(|s| s.slug == slug).count();
        let from_client = sessions.values().filter(|s| s.client == client).count();
        // Places are few: one device posting offers in a loop must not take them all.
        if from_client >= self.config.max_viewers_per_device {
            return Err(JoinError::Full(format!(
                "this device has {} WebRTC sessions open already",
                self.config.max_viewers_per_device
            )));
        }
        if sessions.len() >= self.config.max_viewers {
            return Err(JoinError::Full(format!(
                "the box has its {} WebRTC viewers",
                self.config.max_viewers
            )));
        }
        if on_channel >= self.config.max_viewers_per_channel {
            return Err(JoinError::Full(format!(
                "the channel has its {} WebRTC viewers",
                self.config.max_viewers_per_channel
            )));
        }
        Ok(())
    }

    /// Ends a viewer's session (`DELETE` on its resource). Whether it existed.
    pub fn leave(&self, slug: &str, id: &str) -> bool {
        let mut sessions = self.sessions();
        match sessions.get(id) {
            Some(session) if session.slug == slug => {
                session.stop.cancel();
                // Its place is free now; the task finishes its goodbye by itself.
                sessions.remove(id);
                true
            }
            _ => false,
        }
    }

    /// The box's addresses offered to a viewer at `client`: the configured ones, else every
    /// IPv4 interface address, loopback only to a browser on the box itself.
    fn candidate_addresses(&self, client: IpAddr) -> Vec<IpAddr> {
        if !self.config.addresses.is_empty() {
            return self.config.addresses.clone();
        }
        let local_client = client.is_loopback() || client.to_canonical().is_loopback();
        let mut addresses: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .map(|interfaces| {
                interfaces
                    .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
                    .filter(|ip| local_client || !ip.is_loopback())
                    .collect()
            })
            .unwrap_or_default();
        addresses.sort();
        addresses.dedup();
        addresses
    }
}

/// A session that answered an offer: the SDP answer, the tracks it will send, and its
/// side of the ICE username (how the port knows its datagrams).
#[derive(Debug)]
pub struct Answered {
    pub rtc: str0m::Rtc,
    pub answer: String,
    pub tracks: peer::Tracks,
    pub ufrag: String,
}

/// The certificate a box shows its viewers in DTLS (self-signed; the browser checks it
/// against the fingerprint in the answer). Sets the crypto every session uses: RustCrypto
/// and dimpl (see Cargo.toml).
pub fn certificate() -> Result<DtlsCert, String> {
    let crypto = str0m::crypto::from_feature_flags();
    let dtls = crypto.dtls_provider;
    crypto.install_process_default();
    dtls.generate_certificate()
        .ok_or_else(|| "its DTLS certificate could not be made".to_string())
}

/// The box's side of a viewer's session for an `offer`, offering `candidates` (ICE-lite,
/// H.264 and Opus only), with the video track matched to `profile` where the offer allows,
/// showing `cert` (see [`certificate`]). What the HTTP handler and the fuzzer
/// (`daemon/fuzz`) call with an offer from anyone.
pub fn answer_offer(
    offer: &str,
    candidates: &[SocketAddr],
    profile: u32,
    cert: &DtlsCert,
) -> Result<Answered, JoinError> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| JoinError::BadOffer(e.to_string()))?;
    let creds = IceCreds {
        ufrag: random_token(8),
        pass: random_token(24),
    };
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .set_ice_lite(true)
        .set_local_ice_credentials(creds.clone())
        .set_dtls_cert(cert.clone())
        // Packets kept for resends (NACK): ~1.5 s at 2.5 Mb/s, and a whole 1080p keyframe,
        // is plenty on a LAN; str0m's default (1,000) is 1.2 MB a viewer.
        .set_send_buffer_video(400)
        .build(std::time::Instant::now());
    for &address in candidates {
        match Candidate::host(address, "udp") {
            Ok(candidate) => {
                rtc.add_local_candidate(candidate);
            }
            Err(e) => tracing::debug!(error = %e, %address, "address not offered"),
        }
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| JoinError::BadOffer(e.to_string()))?
        .to_sdp_string();
    let added = answered_media(&answer);
    let tracks = peer::Tracks::negotiated(&mut rtc, &added, profile).ok_or_else(|| {
        JoinError::BadOffer("it receives no H.264 video (packetization-mode=1)".into())
    })?;
    Ok(Answered {
        rtc,
        answer,
        tracks,
        ufrag: creds.ufrag,
    })
}

/// The media lines of an SDP answer, by mid (str0m tells them as events only once the
/// session runs; the join must know before it answers).
fn answered_media(answer: &str) -> Vec<(str0m::media::Mid, str0m::media::MediaKind)> {
    let mut media = Vec::new();
    let mut kind = None;
    for line in answer.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            kind = match rest.split(' ').next() {
                Some("video") => Some(str0m::media::MediaKind::Video),
                Some("audio") => Some(str0m::media::MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), kind) {
            media.push((str0m::media::Mid::from(mid.trim()), k));
            kind = None;
        }
    }
    media
}

/// The variant whose video WebRTC viewers get: the source when WebRTC can carry it (no
/// B-frames), else the highest ladder rung running.
fn video_for_webrtc(broadcast: &Broadcast) -> Result<Arc<Variant>, JoinError> {
    let variants = broadcast.variants();
    let usable = |v: &Arc<Variant>| {
        v.realtime.unusable().is_none()
            && !v.is_ended()
            && v.realtime.traits().is_some_and(|t| !t.reordered)
    };
    if let Some(variant) = variants.iter().find(|v| usable(v)) {
        return Ok(variant.clone());
    }
    let source = broadcast.source();
    let why = match (source.realtime.unusable(), source.realtime.traits()) {
        (Some(why), _) => why,
        (None, Some(traits)) if traits.reordered => {
            "the stream has B-frames, which WebRTC cannot carry, and no ladder rung is \
             running (in OBS: Settings > Output, set B-frames to 0, or use the \
             \"baseline\" profile)"
                .to_string()
        }
        _ => "the stream's video has not started".to_string(),
    };
    Err(JoinError::NoVideo(why))
}

fn random_token(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
