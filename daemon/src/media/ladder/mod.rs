//! The adaptive ladder: renditions below the source, made in the process. One decode
//! thread reads the packets the remuxing pipeline taps off (never making it wait), and
//! hands each picture by reference to one worker per rung, which scales it, encodes it on
//! the encoder the probe chose, and packages it through the same pipeline code as the
//! source, cutting where the source's segments were cut.

pub mod encoder;
pub mod libav;
pub mod probe;
pub mod rung;
pub mod tap;

use crate::config::{TranscodeConfig, TranscodeSwitch};
use crate::hls::Broadcast;
use crate::media::mux;
use crate::system::{Activity, Health};
use bytes::Bytes;
use ffmpeg_next as ff;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use tap::Tap;

/// Pictures a rung may be behind the decode by before it drops to the next segment: a
/// third of a second at 30 fps. Each one queued holds a decoded source picture (3 MB at
/// 1080p), so this bounds the ladder's memory as much as its latency.
const RUNG_QUEUE: usize = 10;
/// A rung busy in one call (its encoder) this long is wedged: shed, its encoder
/// blocklisted. Well under the daemon's watchdog, which never sees the rungs.
const WEDGED: Duration = Duration::from_secs(3);
/// Video packets the decoder may take without giving a picture (10 s at 30 fps) before
/// the source is taken as one this box cannot decode.
const UNDECODABLE_AFTER: u32 = 300;
/// A rung whose queue overflowed in this many source segments in a row cannot keep up
/// with real time (~6 s of it at 2 s segments): shed. One overflow is a glitch: a gap.
const OVERFLOWS_TO_SHED: usize = 3;

/// The ladder's settings and what the probe found, shared by every publish.
pub struct Plan {
    config: TranscodeConfig,
    report: Mutex<Option<Report>>,
    /// Signalled when the startup probe has reported.
    probed: std::sync::Condvar,
    /// The rungs of each live channel, by slug.
    live: Mutex<BTreeMap<String, Vec<rung::Shared>>>,
}

/// What `GET /api/system/transcode` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The startup probe (`None` while it runs).
    pub probe: Option<Report>,
    /// Each live channel's rungs.
    pub live: BTreeMap<String, Vec<rung::Status>>,
}

impl Plan {
    pub fn new(config: TranscodeConfig) -> Arc<Plan> {
        Arc::new(Plan {
            config,
            report: Mutex::new(None),
            probed: std::sync::Condvar::new(),
            live: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs the startup probe (blocking: call it off the async runtime) and keeps its
    /// report.
    pub fn probe(&self) -> Report {
        let report = probe_ladder(&self.config, false);
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        self.probed.notify_all();
        report
    }

    /// Whether a publish starting now may get the ladder: it is not off in the config, and
    /// the startup probe said yes or has not finished (a streamer who connects in the
    /// first second after boot gets it too: see [`Plan::wait_enabled`]).
    pub fn may_run(&self) -> bool {
        self.config.enabled != TranscodeSwitch::Off
            && self
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|r| r.enabled)
    }

    /// Whether the ladder runs, once the startup probe has said (it waits for it, on a
    /// ladder thread, never on the runtime or the source's pipeline).
    fn wait_enabled(&self) -> bool {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + 4 * probe::DEADLINE;
        while report.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            report = self
                .probed
                .wait_timeout(report, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        report.as_ref().is_some_and(|r| r.enabled)
    }

    /// For systemd's `STATUS=`: the probe's verdict, and rungs shed in live channels.
    pub fn status_line(&self) -> Option<String> {
        let report = self
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let mut line = report.status_line();
        let shed: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(slug, rungs)| {
                rungs.iter().filter_map(move |r| {
                    let status = r.lock().unwrap_or_else(|e| e.into_inner());
                    (status.state == "shed").then(|| format!("{slug} {}", status.name))
                })
            })
            .collect();
        if !shed.is_empty() {
            line.push_str(&format!(" (shed: {})", shed.join(", ")));
        }
        Some(line)
    }

    pub fn overview(&self) -> Overview {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(slug, rungs)| {
                let statuses = rungs
                    .iter()
                    .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .collect();
                (slug.clone(), statuses)
            })
            .collect();
        Overview {
            probe: self
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            live,
        }
    }
}

fn behind_real_time() -> String {
    format!(
        "fell behind real time: its queue overflowed in {OVERFLOWS_TO_SHED} segments in a row (its encoder is too slow for this board)"
    )
}

/// Starts the ladder of one publish: its decode thread, which starts the rungs once it
/// knows the source's picture size. Returns the source pipeline's end of the tap.
pub fn start(
    plan: &Arc<Plan>,
    broadcast: &Arc<Broadcast>,
    target: Duration,
    part_target: Duration,
    health: &Arc<Health>,
) -> Option<Tap> {
    let (queue, inbox) = std::sync::mpsc::sync_channel(tap::TAP_QUEUE);
    let activity = health.register(format!("ladder decode `{}`", broadcast.slug));
    let decode = Decode {
        plan: plan.clone(),
        broadcast: broadcast.clone(),
        target,
        part_target,
        decoder: None,
        undecodable: false,
        audio_config: None,
        rungs: None,
        marks: BTreeMap::new(),
        segment: 0,
        undecoded: 0,
    };
    let name = format!("ladder-{}", broadcast.slug);
    let span = tracing::info_span!("ladder", channel = %broadcast.slug, broadcast = %broadcast.id);
    match std::thread::Builder::new().name(name).spawn(move || {
        let _entered = span.enter();
        decode.run(&inbox, &activity);
    }) {
        Ok(_) => Some(Tap::new(queue)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the ladder: passthrough only");
            None
        }
    }
}

/// A running rung, as the decode thread holds it.
struct RungHandle {
    name: String,
    queue: Option<SyncSender<rung::Input>>,
    status: rung::Shared,
    activity: Arc<Activity>,
    /// Dropping pictures until the next source segment begins (its queue was full).
    skipping: bool,
    /// The source segments in which its queue overflowed, the last few.
    overflowed_in: Vec<u64>,
}

impl RungHandle {
    /// Its worker has its encoder open. Until then pictures are not queued for it: it
    /// begins at a source segment anyway, and a queue of decoded pictures is memory.
    fn ready(&self) -> bool {
        self.status
            .lock()
            .map(|s| s.state == "running")
            .unwrap_or(false)
    }

    /// Its queue was full during source segment `segment`; true when that has happened in
    /// [`OVERFLOWS_TO_SHED`] segments in a row.
    fn overflowed(&mut self, segment: u64) -> bool {
        if !self.skipping {
            tracing::warn!(rung = %self.name, "rung queue full: skipping to the next segment");
        }
        self.skipping = true;
        rung::update(&self.status, |s| s.overflowed += 1);
        if self.overflowed_in.last() != Some(&segment) {
            self.overflowed_in.push(segment);
        }
        let n = self.overflowed_in.len();
        if n > OVERFLOWS_TO_SHED {
            self.overflowed_in.drain(..n - OVERFLOWS_TO_SHED);
        }
        self.overflowed_in.len() == OVERFLOWS_TO_SHED
            && self.overflowed_in.windows(2).all(|w| w[1] == w[0] + 1)
    }

    /// Queues `input` for the worker. Media (`media`) that finds the queue full makes the
    /// rung skip to the next source segment, and sheds it after [`OVERFLOWS_TO_SHED`]
    /// such segments in a row; configuration that finds it full is dropped.
    fn send(&mut self, input: rung::Input, media: bool, segment: u64, broadcast: &Broadcast) {
        let Some(queue) = self.queue.as_ref() else {
            return;
        };
        match queue.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) if media => {
                if self.overflowed(segment) {
                    self.shed(broadcast, behind_real_time());
                }
            }
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.queue = None,
        }
    }

    /// Ends the rung's playlists (the master stops offering it) and says why; its worker
    /// stops at its next picture.
    fn shed(&mut self, broadcast: &Broadcast, why: String) {
        self.queue = None;
        if let Some(variant) = broadcast
            .variants()
            .into_iter()
            .find(|v| v.name == self.name)
        {
            variant.end();
        }
        tracing::warn!(rung = %self.name, reason = %why, "rung shed");
        rung::update(&self.status, |s| {
            s.state = "shed";
            s.reason = Some(why);
        });
    }
}

/// The decode thread: the source's packets in, pictures out to every rung by reference.
struct Decode {
    plan: Arc<Plan>,
    broadcast: Arc<Broadcast>,
    target: Duration,
    part_target: Duration,
    decoder: Option<ff::decoder::Video>,
    /// The source cannot be decoded here: passthrough only.
    undecodable: bool,
    audio_config: Option<Bytes>,
    /// Started at the first decoded picture.
    rungs: Option<Vec<RungHandle>>,
    /// What is known of packets sent to the decoder, by pts.
    marks: BTreeMap<i64, rung::Mark>,
    /// The source segment the last decoded picture belongs to.
    segment: u64,
    /// Packets sent to the decoder since it last gave a picture.
    undecoded: u32,
}

impl Decode {
    fn run(mut self, inbox: &Receiver<tap::Tapped>, activity: &Activity) {
        // The startup probe's verdict first, not counted as busy: a board whose encoders
        // hang can take its deadlines to answer, and the watchdog must not see that.
        if !self.plan.wait_enabled() {
            tracing::info!("the probe turned the ladder off: passthrough only");
            while inbox.recv().is_ok() {}
            return;
        }
        loop {
            match inbox.recv_timeout(Duration::from_millis(500)) {
                Ok(event) => {
                    let _busy = activity.begin();
                    self.handle(event);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.shed_wedged();
        }
        // The publish ended: each rung finishes its last segment when its queue closes.
        self.plan
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.broadcast.slug);
        tracing::info!("ladder ended");
    }

    fn handle(&mut self, event: tap::Tapped) {
        match event {
            tap::Tapped::VideoConfig(avcc) => self.open_decoder(&avcc),
            tap::Tapped::AudioConfig(asc) => {
                self.audio_config = Some(asc.clone());
                self.each_rung(|| rung::Input::AudioConfig(asc.clone()), false);
            }
            tap::Tapped::Audio(frame) => {
                self.each_rung(|| rung::Input::Audio(frame.clone()), true);
            }
            tap::Tapped::Video {
                dts,
                pts,
                keyframe,
                data,
                arrived,
                begins,
            } => {
                if self.undecodable || self.decoder.is_none() {
                    return;
                }
                self.marks.insert(
                    pts,
                    rung::Mark {
                        keyframe,
                        begins,
                        arrived: Some(arrived),
                    },
                );
                let Some(decoder) = self.decoder.as_mut() else {
                    return;
                };
                let mut packet = ff::Packet::copy(&data);
                packet.set_pts(Some(pts));
                packet.set_dts(Some(dts));
                if keyframe {
                    packet.set_flags(ff::packet::Flags::KEY);
                }
                if let Err(e) = decoder.send_packet(&packet) {
                    tracing::debug!(error = %e, pts, "the decoder refused a packet");
                }
                let mut pictures = Vec::new();
                let mut picture = ff::frame::Video::empty();
                while decoder.receive_frame(&mut picture).is_ok() {
                    pictures.push(std::mem::replace(&mut picture, ff::frame::Video::empty()));
                }
                // Ten seconds of packets and not one picture: this stream does not decode.
                self.undecoded = if pictures.is_empty() {
                    self.undecoded + 1
                } else {
                    0
                };
                if self.undecoded > UNDECODABLE_AFTER {
                    self.passthrough_only(format!("{UNDECODABLE_AFTER} packets gave no picture"));
                    return;
                }
                for picture in pictures {
                    self.dispatch(picture);
                }
            }
        }
    }

    fn open_decoder(&mut self, avcc: &[u8]) {
        let opened = mux::parameters(ff::media::Type::Video, ff::codec::Id::H264, avcc)
            .map_err(|e| e.to_string())
            .and_then(|params| {
                let mut context = ff::codec::context::Context::from_parameters(params)
                    .map_err(|e| e.to_string())?;
                context.set_time_base(ff::Rational(1, 1000));
                context.decoder().video().map_err(|e| e.to_string())
            });
        match opened {
            Ok(decoder) => {
                self.decoder = Some(decoder);
                self.undecodable = false;
            }
            Err(why) => self.passthrough_only(format!("its decoder does not open: {why}")),
        }
    }

    /// The source cannot be decoded here: no rungs for this publish, and every rung's
    /// status says why (the source variant is untouched).
    fn passthrough_only(&mut self, why: String) {
        tracing::warn!(reason = %why, "the source cannot be decoded here: passthrough only");
        self.decoder = None;
        self.undecodable = true;
        let reason = format!("the source cannot be decoded here ({why}): passthrough only");
        if self.rungs.is_none() {
            let statuses: Vec<rung::Shared> = self
                .plan
                .config
                .ladder
                .iter()
                .map(|r| {
                    let mut status = rung::Status::probing(r, None);
                    status.state = "off";
                    status.reason = Some(reason.clone());
                    Arc::new(Mutex::new(status))
                })
                .collect();
            self.plan
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.broadcast.slug.clone(), statuses);
            self.rungs = Some(Vec::new());
        }
        if let Some(rungs) = self.rungs.as_mut() {
            for rung in rungs.iter_mut() {
                rung.queue = None;
                rung::update(&rung.status, |s| {
                    s.state = "off";
                    s.reason = Some(reason.clone());
                });
            }
        }
    }

    /// Sends `make()` to every rung that takes input. Media (`media`: audio here) goes only
    /// to rungs that are running, and a full queue makes the rung skip to the next source
    /// segment; configuration goes to all.
    fn each_rung(&mut self, make: impl Fn() -> rung::Input, media: bool) {
        let Some(rungs) = self.rungs.as_mut() else {
            return;
        };
        for rung in rungs.iter_mut() {
            if (!media || rung.ready()) && rung.queue.is_some() {
                rung.send(make(), media, self.segment, &self.broadcast);
            }
        }
    }

    /// One decoded picture to every rung, by reference; the rungs start at the first.
    fn dispatch(&mut self, picture: ff::frame::Video) {
        let Some(pts) = picture.pts().or_else(|| picture.timestamp()) else {
            return;
        };
        let mark = self.marks.remove(&pts).unwrap_or_default();
        if let Some(segment) = mark.begins {
            self.segment = segment;
        }
        // Packets the decoder dropped leave marks behind: keep the last few seconds.
        self.marks = self.marks.split_off(&pts.saturating_sub(5_000));
        if self.rungs.is_none() {
            self.start_rungs((picture.width(), picture.height()));
        }
        let Some(rungs) = self.rungs.as_mut() else {
            return;
        };
        for rung in rungs.iter_mut() {
            if !rung.ready() || rung.queue.is_none() {
                continue;
            }
            if rung.skipping {
                if mark.begins.is_none() {
                    rung::update(&rung.status, |s| s.overflowed += 1);
                    continue;
                }
                rung.skipping = false;
            }
            let Some(shared) = libav::share(&picture) else {
                continue;
            };
            let input = rung::Input::Picture {
                picture: shared,
                pts,
                mark,
            };
            rung.send(input, true, self.segment, &self.broadcast);
        }
    }

    fn start_rungs(&mut self, source: (u32, u32)) {
        let config = &self.plan.config;
        let candidates = config.candidates();
        let mut rungs = Vec::new();
        for rung_config in &config.ladder {
            let size = rung_size(source, rung_config.height);
            let status = Arc::new(Mutex::new(rung::Status::probing(rung_config, size)));
            let activity = Activity::new(format!("rung {}", rung_config.name));
            let mut handle = RungHandle {
                name: rung_config.name.clone(),
                queue: None,
                status: status.clone(),
                activity: activity.clone(),
                skipping: false,
                overflowed_in: Vec::new(),
            };
            let Some((width, height)) = size else {
                rung::update(&status, |s| {
                    s.state = "off";
                    s.reason = Some(format!("not below the source ({}x{})", source.0, source.1));
                });
                rungs.push(handle);
                continue;
            };
            let setup = rung::Setup {
                spec: encoder::Spec {
                    encoder: String::new(),
                    width,
                    height,
                    fps: rung_config.max_fps,
                    kbps: rung_config.video_kbps,
                    x264_preset: config.x264_preset.clone(),
                },
                candidates: candidates.clone(),
                slowdown: Duration::from_millis(rung_config.test_slowdown_ms),
                broadcast: self.broadcast.clone(),
                variant: self.broadcast.add_variant(&rung_config.name),
                target: self.target,
                part_target: self.part_target,
                audio_config: self.audio_config.clone(),
            };
            let (queue, inbox) = std::sync::mpsc::sync_channel(RUNG_QUEUE);
            let span = tracing::info_span!("rung", rung = %rung_config.name);
            let thread_status = status.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rung-{}-{}", self.broadcast.slug, rung_config.name))
                .spawn(move || {
                    let _entered = span.enter();
                    rung::run(setup, inbox, thread_status, activity);
                });
            match spawned {
                Ok(_) => handle.queue = Some(queue),
                Err(e) => rung::update(&status, |s| {
                    s.state = "off";
                    s.reason = Some(format!("cannot start its thread: {e}"));
                }),
            }
            rungs.push(handle);
        }
        self.plan
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                self.broadcast.slug.clone(),
                rungs.iter().map(|r| r.status.clone()).collect(),
            );
        self.rungs = Some(rungs);
    }

    /// A rung stuck in one call past [`WEDGED`] is shed and its encoder blocklisted; its
    /// thread is left to the driver.
    fn shed_wedged(&mut self) {
        let Some(rungs) = self.rungs.as_mut() else {
            return;
        };
        for rung in rungs.iter_mut() {
            if rung.queue.is_none() || rung.activity.busy_for().is_none_or(|b| b <= WEDGED) {
                continue;
            }
            rung.queue = None;
            let encoder = rung
                .status
                .lock()
                .map(|s| s.encoder.clone())
                .unwrap_or_default();
            if let Some(name) = &encoder {
                probe::abandon(name);
            }
            tracing::error!(rung = %rung.name, encoder = ?encoder, "rung wedged: shed, its encoder not used again until restart");
            let why = format!(
                "wedged: one call took over {} s; {} is not used again until restart",
                WEDGED.as_secs(),
                encoder.as_deref().unwrap_or("its encoder")
            );
            rung.shed(&self.broadcast, why);
        }
    }
}

/// What the probe found for the configured ladder, and whether the ladder runs: for the
/// operator (`commeowd transcode probe`, `GET /api/system/transcode`, systemd's status
/// line, the dashboard).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `[transcode] enabled` as configured: `auto`, `on` or `off`.
    pub configured: &'static str,
    /// Whether publishes get the ladder.
    pub enabled: bool,
    /// Why, in words.
    pub why: String,
    pub rungs: Vec<RungReport>,
    pub probed_at: String,
}

/// One configured rung, probed at a 16:9 picture of its height (at each publish it is
/// probed again at the source's real shape).
#[derive(Debug, Clone, Serialize)]
pub struct RungReport {
    pub name: String,
    pub video_kbps: u32,
    #[serde(flatten)]
    pub choice: probe::Choice,
}

impl Report {
    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        let chosen: Vec<String> = self
            .rungs
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.name,
                    r.choice.encoder.as_deref().unwrap_or("no encoder")
                )
            })
            .collect();
        if self.enabled {
            format!("ladder on: {}", chosen.join(", "))
        } else {
            format!("ladder off: {}", self.why)
        }
    }
}

/// The size a rung is probed at before any source is seen: 16:9 at its height.
fn nominal_size(height: u32) -> (u32, u32) {
    rung_size((height * 16 / 9 + 2, height + 1), height).unwrap_or((height, height))
}

/// Probes every configured rung and decides whether the ladder runs (see
/// [`TranscodeSwitch`]). With the ladder off in the config nothing is probed unless
/// `force` (the operator's `transcode probe`).
pub fn probe_ladder(config: &TranscodeConfig, force: bool) -> Report {
    let configured = match config.enabled {
        TranscodeSwitch::Auto => "auto",
        TranscodeSwitch::On => "on",
        TranscodeSwitch::Off => "off",
    };
    let probed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if config.enabled == TranscodeSwitch::Off && !force {
        return Report {
            configured,
            enabled: false,
            why: "off in the config ([transcode] enabled = false)".into(),
            rungs: Vec::new(),
            probed_at,
        };
    }
    // `auto` asks only whether a hardware encoder works: at boot it does not spend a
    // software test encode it would not use (the operator's `transcode probe` tries all).
    let hardware_only = config.enabled == TranscodeSwitch::Auto && !force;
    let candidates: Vec<String> = config
        .candidates()
        .into_iter()
        .filter(|name| !(hardware_only && name == "libx264"))
        .collect();
    let rungs: Vec<RungReport> = config
        .ladder
        .iter()
        .map(|rung| {
            let (width, height) = nominal_size(rung.height);
            let spec = encoder::Spec {
                encoder: String::new(),
                width,
                height,
                fps: rung.max_fps,
                kbps: rung.video_kbps,
                x264_preset: config.x264_preset.clone(),
            };
            RungReport {
                name: rung.name.clone(),
                video_kbps: rung.video_kbps,
                choice: probe::choose(&candidates, &spec),
            }
        })
        .collect();
    let all_found = !rungs.is_empty() && rungs.iter().all(|r| r.choice.encoder.is_some());
    let all_hardware = all_found && rungs.iter().all(|r| r.choice.is_hardware());
    let (enabled, why) = match config.enabled {
        _ if rungs.is_empty() => (false, "no rungs in [[transcode.ladder]]".to_string()),
        TranscodeSwitch::Auto if hardware_only && !all_found => (
            false,
            "auto: no hardware encoder works here; set [transcode] enabled = true to spend the CPU on libx264"
                .into(),
        ),
        _ if !all_found => (false, "no encoder passed the probe for every rung".to_string()),
        TranscodeSwitch::Off => (false, "off in the config ([transcode] enabled = false)".into()),
        TranscodeSwitch::On => (true, "on in the config".to_string()),
        TranscodeSwitch::Auto if all_hardware => (true, "auto: a hardware encoder works".into()),
        TranscodeSwitch::Auto => (
            false,
            "auto: no hardware encoder works here, only libx264; set [transcode] enabled = true to spend the CPU on it"
                .into(),
        ),
    };
    Report {
        configured,
        enabled,
        why,
        rungs,
        probed_at,
    }
}

/// A rung's picture size for a source of `source` (width, height): `height` tall, as wide
/// as keeps the source's aspect ratio, rounded to even (H.264 4:2:0 wants even sizes).
/// `None` when the rung is not below the source.
pub fn rung_size(source: (u32, u32), height: u32) -> Option<(u32, u32)> {
    let (width, source_height) = source;
    if height >= source_height || width == 0 || height == 0 {
        return None;
    }
    let exact = f64::from(width) * f64::from(height) / f64::from(source_height);
    let even = ((exact / 2.0).round() as u32).max(1) * 2;
    Some((even, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::Broadcasts;
    use crate::media::{Cuts, Frame, MediaEvent, Pipeline};

    /// A rung's pipeline fed as a worker feeds it, with real libx264 output: segments 0
    /// and 1, then (its queue having overflowed) segment 4. The skipped 2 and 3 become gaps
    /// that share the time between, and segment 1 ends after its own last frame instead
    /// of claiming the skipped span.
    #[test]
    fn a_rung_that_skipped_segments_publishes_gaps_of_the_time_it_missed() {
        let _ = ff::init();
        let broadcasts = Broadcasts::new(5, Duration::from_secs(2), Duration::from_millis(334));
        let broadcast = broadcasts.begin("stage").expect("broadcast");
        let variant = broadcast.add_variant("360p");
        let mut pipeline = Pipeline::new(
            broadcast.clone(),
            variant.clone(),
            Duration::from_secs(2),
            Duration::from_millis(334),
            Cuts::Follow { next: None },
        );
        let spec = encoder::Spec {
            encoder: "libx264".into(),
            width: 640,
            height: 360,
            fps: 30.0,
            kbps: 500,
            x264_preset: "ultrafast".into(),
        };
        let mut encoder = encoder::Encoder::open(&spec).expect("libx264");
        let mut feed = |pipeline: &mut Pipeline, n: i64, begins: Option<u64>| {
            let pts = n * 1000 / 30;
            let mut picture = probe::test_picture(640, 360, n as usize);
            picture.set_pts(Some(pts));
            for encoded in encoder
                .encode(&mut picture, begins.is_some())
                .expect("encode")
            {
                if let Some(config) = encoded.config {
                    pipeline.handle(MediaEvent::VideoConfig(Bytes::from(config)));
                }
                if let Some(sequence) = begins {
                    pipeline.handle(MediaEvent::SegmentStart(sequence));
                }
                pipeline.handle(MediaEvent::Video(Frame {
                    dts: encoded.pts,
                    pts: encoded.pts,
                    keyframe: encoded.unit.idr,
                    data: Bytes::from(encoded.unit.data),
                    arrived: chrono::Utc::now(),
                }));
            }
        };
        // Segments 0 and 1 (60 pictures each), nothing for 2 and 3, then 4 and 5.
        for n in (0..120).chain(240..360) {
            let begins = (n % 60 == 0).then_some((n / 60) as u64);
            feed(&mut pipeline, n, begins);
        }
        pipeline.finish_timeline();
        let listed: Vec<(u64, u64, bool)> = (0..6)
            .filter_map(|sequence| variant.classic.segment(sequence))
            .map(|s| (s.sequence, s.duration.as_millis() as u64, s.gap))
            .collect();
        let close = |a: u64, b: u64| a.abs_diff(b) <= 34;
        assert_eq!(listed.len(), 6, "{listed:?}");
        assert!(
            listed.iter().all(|(_, ms, _)| close(*ms, 2000)),
            "{listed:?}"
        );
        let gaps: Vec<u64> = listed.iter().filter(|s| s.2).map(|s| s.0).collect();
        assert_eq!(gaps, [2, 3], "{listed:?}");
        let text = variant.classic.media_playlist();
        assert!(format!("{text:?}").contains("EXT-X-GAP"));
    }

    #[test]
    fn rungs_keep_the_aspect_ratio_with_even_widths_and_stay_below_the_source() {
        assert_eq!(rung_size((1920, 1080), 720), Some((1280, 720)));
        assert_eq!(rung_size((1920, 1080), 480), Some((854, 480)));
        assert_eq!(rung_size((1280, 720), 360), Some((640, 360)));
        // 4:3 and a phone held upright.
        assert_eq!(rung_size((1440, 1080), 480), Some((640, 480)));
        assert_eq!(rung_size((1080, 1920), 720), Some((406, 720)));
        // Odd arithmetic rounds to even: 1366x768 -> 480 tall is 853.75 wide.
        assert_eq!(rung_size((1366, 768), 480), Some((854, 480)));
        // At or above the source: no rung.
        assert_eq!(rung_size((1280, 720), 720), None);
        assert_eq!(rung_size((1280, 720), 1080), None);
        assert_eq!(rung_size((0, 0), 480), None);
    }
}
