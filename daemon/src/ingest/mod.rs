//! RTMP ingest: where OBS connects.
//!
//! Each TCP connection is a task that feeds bytes to rml_rtmp's sans-IO handshake and
//! server session and acts on the events they raise: the stream key is checked against the
//! store at publish time, one publisher per channel is enforced by [`Broadcasts::begin`],
//! and media is parsed ([`flv`]) and handed to the broadcast's pipeline thread.
//!
//! Limits: a semaphore caps open connections; a handshake must finish within
//! [`HANDSHAKE_TIMEOUT`] and a connection that sends nothing for [`IDLE_TIMEOUT`] is closed
//! (half-open sockets cost nothing for long). Addresses that keep sending wrong keys are
//! slowed down ([`Throttle`]). The queue to the pipeline is bounded; when it is full, media
//! is dropped until the next keyframe, so a stalled pipeline never stalls the socket loop
//! and never buffers without bound.

pub mod flv;

use crate::config::HlsConfig;
use crate::hls::{Broadcast, Broadcasts};
use crate::media::{self, Frame, MediaEvent};
use crate::store::{StoreError, StoreHandle, StreamKey};
use crate::throttle::Throttle;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a connection may send before its publish is accepted. OBS needs a few hundred
/// (connect, createStream, publish); the cap stops an unauthenticated socket from making the
/// RTMP parser buffer messages of up to 16 MB.
pub const MAX_BYTES_BEFORE_PUBLISH: usize = 64 * 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// From connect to an accepted publish: OBS takes well under a second; a socket that
/// trickles bytes to stay under [`IDLE_TIMEOUT`] and never publishes is cut here.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
const APP_NAME: &str = "live";
const READ_BUFFER: usize = 64 * 1024;
/// How long a refused publisher has to read why before the connection is closed.
const HANG_UP_WAIT: Duration = Duration::from_secs(2);
/// A stream-key penalty this short is waited out by the connection instead of refused.
const WAIT_OUT_PENALTY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("handshake did not finish in {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("nothing received for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("no publish within {PUBLISH_TIMEOUT:?} of connecting")]
    NoPublish,
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP: {0}")]
    Session(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("sent {0} bytes without publishing")]
    TooMuchBeforePublish(usize),
    #[error("malformed RTMP stream: the parser gave up on it")]
    ParserPanic,
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What every connection shares.
pub struct Ingest {
    pub store: StoreHandle,
    pub broadcasts: Arc<Broadcasts>,
    pub hls: HlsConfig,
    /// Failed publishes (wrong keys) per source address.
    pub throttle: Throttle<IpAddr>,
    pub connections: Arc<Semaphore>,
    /// Open connections per address, and the bound.
    pub per_address: Arc<crate::throttle::Occupancy<IpAddr>>,
    pub connections_per_address: usize,
    /// Media pipelines register here, so the watchdog sees a wedged one.
    pub health: Arc<crate::system::Health>,
    /// The transcoding ladder: each publish gets it when the probe turned it on.
    pub ladder: Arc<media::ladder::Plan>,
    pub tracker: TaskTracker,
    /// Daemon shutdown: ends linger timers early.
    pub shutdown: CancellationToken,
}

/// An `onStatus` error for the publishing stream, serialized on its own: a full (type 0)
/// chunk header needs nothing from the session's earlier chunks, and the message is sent in
/// chunks of the size the session announced. rml_rtmp numbers a connection's first stream
/// 1, and a publishing connection has one stream.
fn publish_error(description: &str) -> Result<Vec<u8>, String> {
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::RtmpMessage;
    use rml_rtmp::rml_amf0::Amf0Value;
    use rml_rtmp::time::RtmpTimestamp;
    let mut status = std::collections::HashMap::new();
    status.insert("level".to_string(), Amf0Value::Utf8String("error".into()));
    status.insert(
        "code".to_string(),
        Amf0Value::Utf8String("NetStream.Publish.Rejected".into()),
    );
    status.insert(
        "description".to_string(),
        Amf0Value::Utf8String(description.to_string()),
    );
    let message = RtmpMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), 1)
        .map_err(|e| format!("{e:?}"))?;
    let mut serializer = ChunkSerializer::new();
    serializer
        .set_max_chunk_size(ServerSessionConfig::new().chunk_size, RtmpTimestamp::new(0))
        .map_err(|e| format!("{e:?}"))?;
    let packet = serializer
        .serialize(&payload, true, false)
        .map_err(|e| format!("{e:?}"))?;
    Ok(packet.bytes)
}

/// How often a live publish checks that its stream key is still its channel's.
const KEY_RECHECK: Duration = Duration::from_secs(2);

/// The rule that a rotated key ends the publish using it, whoever rotated it: the
/// dashboard (which also stops the publish at once), the operator's CLI in another process,
/// or a fleet command. While the publish lives, this looks its key up every
/// [`KEY_RECHECK`]; once the key no longer opens this channel, the broadcast is stopped and
/// the connection ends. Dropping the returned guard (the publish ended) ends the watch.
fn watch_key(
    ingest: &Arc<Ingest>,
    stop: CancellationToken,
    key: StreamKey,
    slug: String,
) -> tokio_util::sync::DropGuard {
    let done = ingest.shutdown.child_token();
    let (store, ended) = (ingest.store.clone(), done.clone());
    ingest.tracker.spawn(async move {
        let mut every = tokio::time::interval(KEY_RECHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = ended.cancelled() => return,
                _ = every.tick() => {}
            }
            let key = key.clone();
            match store.read(move |store| store.channel_for_key(&key)).await {
                Ok(Some(channel)) if channel.slug == slug => {}
                Ok(_) => {
                    stop.cancel();
                    return;
                }
                // The store being away for a moment is not a reason to cut a streamer.
                Err(e) => tracing::warn!(error = %e, "cannot recheck the stream key"),
            }
        }
    });
    done.drop_guard()
}

/// Accepts RTMP connections until `shutdown`.
pub async fn serve(listener: TcpListener, ingest: Arc<Ingest>) {
    let shutdown = ingest.shutdown.clone();
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = ingest.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "rtmp connection refused: too many open connections");
            continue;
        };
        let Some(seat) = ingest
            .per_address
            .take(peer.ip(), ingest.connections_per_address)
        else {
            tracing::warn!(%peer, "rtmp connection refused: too many from this address");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let span = tracing::info_span!("rtmp", %peer, channel = tracing::field::Empty);
        let ingest_for_task = ingest.clone();
        let shutdown = shutdown.child_token();
        ingest.tracker.spawn(
            async move {
                let _held = (permit, seat);
                match Connection::new(socket, peer, ingest_for_task)
                    .run(shutdown)
                    .await
                {
                    Ok(()) | Err(IngestError::Closed) => tracing::debug!("rtmp connection closed"),
                    Err(e) => tracing::info!(reason = %e, "rtmp connection closed"),
                }
            }
            .instrument(span),
        );
    }
}

/// A publish's frame counters (registered once per publish, not looked up per frame).
struct Counted {
    video: metrics::Counter,
    audio: metrics::Counter,
    dropped: metrics::Counter,
}

impl Counted {
    fn for_channel(slug: &str) -> Counted {
        let label = [("channel", slug.to_string())];
        Counted {
            video: metrics::counter!("commeow_ingest_video_frames_total", &label),
            audio: metrics::counter!("commeow_ingest_audio_frames_total", &label),
            dropped: metrics::counter!("commeow_ingest_dropped_frames_total", &label),
        }
    }
}

/// A publish in progress on this connection.
struct Publishing {
    broadcast: Arc<Broadcast>,
    /// Ends this publish from outside (the broadcast's token for it).
    stop: CancellationToken,
    media: mpsc::Sender<MediaEvent>,
    pipeline: std::thread::JoinHandle<()>,
    video_clock: Clock,
    audio_clock: Clock,
    /// Set when the pipeline queue overflowed: drop media until the next keyframe.
    skipping: bool,
    dropped: u64,
    /// `/metrics`: frames in and dropped, this channel's series.
    counted: Counted,
    /// Ends the stream-key watch when the publish ends.
    _key_watch: tokio_util::sync::DropGuard,
}

struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    ingest: Arc<Ingest>,
    publishing: Option<Publishing>,
}

impl Connection {
    fn new(socket: TcpStream, peer: SocketAddr, ingest: Arc<Ingest>) -> Connection {
        Connection {
            socket,
            peer,
            ingest,
            publishing: None,
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        let result = tokio::select! {
            result = self.serve() => result,
            _ = shutdown.cancelled() => Ok(()),
        };
        // A publish the box ends (a codec it cannot serve, a rotated key) is told why in an
        // onStatus error before the connection closes, so OBS has words to show.
        if let (Err(IngestError::Refused(why)), Some(publishing)) = (&result, &self.publishing) {
            // What the media made impossible is the streamer's to fix: the dashboard says it
            // too. (A rotated key is not: the dashboard knows that already.)
            if publishing.broadcast.refusal().is_some() {
                self.ingest
                    .broadcasts
                    .note_refusal(&publishing.broadcast.slug, why);
            }
            if let Ok(status) = publish_error(why) {
                self.say_and_hang_up(&status).await;
            }
        }
        self.end_publish().await;
        result
    }

    async fn serve(&mut self) -> Result<(), IngestError> {
        let connected = Instant::now();
        let mut buffer = vec![0u8; READ_BUFFER];
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut buffer))
            .await
            .map_err(|_| IngestError::HandshakeTimeout)??;

        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        self.act_on(&mut session, initial).await?;
        let mut received_before_publish = leftover.len();
        let publish_by = connected + PUBLISH_TIMEOUT;
        let results = parse(&mut session, &leftover)?;
        self.act_on(&mut session, results).await?;

        loop {
            let broadcast = self.publishing.as_ref().map(|p| p.broadcast.clone());
            let stop = self.publishing.as_ref().map(|p| p.stop.clone());
            let stopped = async {
                match &stop {
                    Some(stop) => stop.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            // Until it publishes, a connection also has the publish deadline.
            let wait = match self.publishing {
                Some(_) => IDLE_TIMEOUT,
                None => publish_by
                    .checked_duration_since(Instant::now())
                    .ok_or(IngestError::NoPublish)?
                    .min(IDLE_TIMEOUT),
            };
            let read = tokio::select! {
                read = tokio::time::timeout(wait, self.socket.read(&mut buffer)) => read,
                () = stopped => {
                    if let Some(why) = broadcast.and_then(|b| b.refusal()) {
                        return Err(IngestError::Refused(why));
                    }
                    tracing::info!("publish ended: the stream key was rotated");
                    return Err(IngestError::Refused("the stream key was rotated".into()));
                }
            };
            let read = read.map_err(|_| match self.publishing {
                Some(_) => IngestError::Idle,
                None if Instant::now() >= publish_by => IngestError::NoPublish,
                None => IngestError::Idle,
            })??;
            if read == 0 {
                return Err(IngestError::Closed);
            }
            if self.publishing.is_none() {
                received_before_publish += read;
                if received_before_publish > MAX_BYTES_BEFORE_PUBLISH {
                    return Err(IngestError::TooMuchBeforePublish(received_before_publish));
                }
            }
            let results = parse(&mut session, &buffer[..read])?;
            if self.act_on(&mut session, results).await? == Flow::Stop {
                return Ok(());
            }
        }
    }

    /// Sends `message`, then stops sending and reads (discarding) until the publisher
    /// closes or [`HANG_UP_WAIT`] passes. A publisher learns of an error when it next reads,
    /// which it does between writes: closing at once would fail its write first (a broken
    /// pipe, and the words lost).
    async fn say_and_hang_up(&mut self, message: &[u8]) {
        let said = async {
            self.socket.write_all(message).await?;
            self.socket.shutdown().await?;
            let mut sink = [0u8; 16 * 1024];
            while self.socket.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(HANG_UP_WAIT, said).await;
    }

    async fn handshake(&mut self, buffer: &mut [u8]) -> Result<Vec<u8>, IngestError> {
        let mut handshake = Handshake::new(PeerType::Server);
        loop {
            let read = self.socket.read(buffer).await?;
            if read == 0 {
                return Err(IngestError::Closed);
            }
            let step = contain_parser(|| handshake.process_bytes(&buffer[..read]))?;
            match step.map_err(|e| IngestError::Handshake(format!("{e:?}")))? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    /// Sends what the session wants sent and acts on the events it raised, in order.
    async fn act_on(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<Flow, IngestError> {
        let mut flow = Flow::Continue;
        let mut pending = std::collections::VecDeque::from(results);
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.socket.write_all(&packet.bytes).await?
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let (more, next) = self.on_event(session, event).await?;
                    // Responses to this event go out before anything queued after it.
                    for result in more.into_iter().rev() {
                        pending.push_front(result);
                    }
                    if next == Flow::Stop {
                        flow = Flow::Stop;
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(flow)
    }

    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<(Vec<ServerSessionResult>, Flow), IngestError> {
        let session_error =
            |e: rml_rtmp::sessions::ServerSessionError| IngestError::Session(format!("{e:?}"));
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name != APP_NAME {
                    tracing::warn!(app = %app_name, "connect refused: unknown application (OBS server must end in /live)");
                    let results = session
                        .reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "unknown application: use rtmp://<box>/live",
                        )
                        .map_err(session_error)?;
                    return Ok((results, Flow::Stop));
                }
                Ok((
                    session.accept_request(request_id).map_err(session_error)?,
                    Flow::Continue,
                ))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                match self.begin_publish(&stream_key).await {
                    Ok(()) => Ok((
                        session.accept_request(request_id).map_err(session_error)?,
                        Flow::Continue,
                    )),
                    Err(reason) => {
                        let results = session
                            .reject_request(request_id, "NetStream.Publish.BadName", &reason)
                            .map_err(session_error)?;
                        // Answer, then close: the refusal reaches OBS before the socket ends.
                        for result in &results {
                            if let ServerSessionResult::OutboundResponse(packet) = result {
                                self.socket.write_all(&packet.bytes).await?;
                            }
                        }
                        Err(IngestError::Refused(reason))
                    }
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.end_publish().await;
                Ok((Vec::new(), Flow::Stop))
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                let resolution = metadata.video_width.zip(metadata.video_height);
                let frame_rate = metadata
                    .video_frame_rate
                    .map(f64::from)
                    .filter(|f| *f > 0.0);
                self.forward(
                    MediaEvent::Metadata {
                        resolution,
                        frame_rate,
                    },
                    false,
                );
                Ok((Vec::new(), Flow::Continue))
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.on_video(data, timestamp.value)?;
                Ok((Vec::new(), Flow::Continue))
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.on_audio(data, timestamp.value)?;
                Ok((Vec::new(), Flow::Continue))
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let results = session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "playback is over HLS: open http://<box>/",
                    )
                    .map_err(session_error)?;
                Ok((results, Flow::Stop))
            }
            _ => Ok((Vec::new(), Flow::Continue)),
        }
    }

    /// Checks the key and claims the channel. Errors are the refusal sent to the client.
    async fn begin_publish(&mut self, stream_key: &str) -> Result<(), String> {
        if self.publishing.is_some() {
            return Err("this connection is already publishing".into());
        }
        // Reserved before the key is looked up, like a login: parallel connections from one
        // address get one key checked at a time, and wrong keys cost a growing wait. A short
        // wait is waited out rather than refused, so a streamer who fixes a typo at once
        // still goes live; a connection told to wait a second time is refused.
        let ingest = self.ingest.clone();
        let mut waited = false;
        let attempt = loop {
            match ingest.throttle.reserve(&self.peer.ip(), Instant::now()) {
                Ok(attempt) => break attempt,
                Err(wait) if !waited && wait <= WAIT_OUT_PENALTY => {
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
                Err(wait) => {
                    tracing::warn!("publish refused: too many wrong stream keys from this address");
                    return Err(format!(
                        "too many wrong stream keys from this address; try again in {} s",
                        wait.as_secs().max(1)
                    ));
                }
            }
        };
        let key = StreamKey::from_publish(stream_key);
        let lookup = key.clone();
        let channel = self
            .ingest
            .store
            .read(move |store| store.channel_for_key(&lookup))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "publish refused: store unavailable");
                "server error".to_string()
            })?;
        let Some(channel) = channel else {
            // A key that was this channel's before a rotation is not a guess: OBS keeps
            // retrying it after a disconnect. It costs the address nothing, and the
            // streamer's dashboard says to paste the new one.
            let stale = key.clone();
            let replaced = self
                .ingest
                .store
                .read(move |store| store.channel_for_previous_key(&stale))
                .await
                .ok()
                .flatten();
            if let Some(slug) = replaced {
                let noted = slug.clone();
                let _ = self
                    .ingest
                    .store
                    .write(move |store| store.note_previous_key_seen(&noted))
                    .await;
                drop(attempt);
                tracing::warn!(channel = %slug, "publish refused: the stream key was replaced");
                return Err(
                    "this stream key was replaced: paste the new one from the dashboard".into(),
                );
            }
            let failures = attempt.count();
            // Never log the key itself: a typo of a real key is most of a real key.
            tracing::warn!(failures, "publish refused: unknown stream key");
            return Err("unknown stream key".into());
        };
        attempt.clear();
        tracing::Span::current().record("channel", channel.slug.as_str());
        let broadcast = self.ingest.broadcasts.begin(&channel.slug).map_err(|e| {
            tracing::warn!("publish refused: channel is already live from another connection");
            e.to_string()
        })?;
        let (media, inbox) = mpsc::channel(media::MEDIA_QUEUE);
        let pipeline = media::spawn(
            broadcast.clone(),
            self.ingest.hls.target(),
            self.ingest.hls.part_target(),
            inbox,
            &self.ingest.health,
            Some(&self.ingest.ladder),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the media thread");
            self.linger(broadcast.clone());
            "server error".to_string()
        })?;
        tracing::info!(broadcast = %broadcast.id, "publish started");
        let stop = broadcast.stop_token();
        let key_watch = watch_key(&self.ingest, stop.clone(), key, channel.slug.clone());
        self.publishing = Some(Publishing {
            _key_watch: key_watch,
            stop,
            broadcast,
            media,
            pipeline,
            video_clock: Clock::default(),
            audio_clock: Clock::default(),
            skipping: false,
            dropped: 0,
            counted: Counted::for_channel(&channel.slug),
        });
        Ok(())
    }

    fn on_video(&mut self, data: Bytes, timestamp: u32) -> Result<(), IngestError> {
        let Some(publishing) = self.publishing.as_mut() else {
            return Ok(());
        };
        let dts = publishing.video_clock.extend(timestamp);
        let event = match flv::parse_video(&data) {
            Ok(flv::VideoTag::Config(config)) => {
                publishing.broadcast.measure(|m| {
                    m.video_config(
                        crate::media::codec::avc_codec_string(&config),
                        crate::media::codec::avc_dimensions(&config),
                    )
                });
                MediaEvent::VideoConfig(config)
            }
            Ok(flv::VideoTag::Frame {
                keyframe,
                cts,
                data,
            }) => {
                let size = data.len();
                publishing
                    .broadcast
                    .measure(|m| m.video(std::time::Instant::now(), dts, cts, keyframe, size));
                MediaEvent::Video(Frame {
                    dts,
                    pts: dts + i64::from(cts),
                    keyframe,
                    data,
                    arrived: chrono::Utc::now(),
                })
            }
            Ok(flv::VideoTag::Ignored) => return Ok(()),
            Err(e) => return Err(self.refuse_media(e)),
        };
        let keyframe = matches!(&event, MediaEvent::Video(f) if f.keyframe);
        self.forward(event, keyframe);
        Ok(())
    }

    fn on_audio(&mut self, data: Bytes, timestamp: u32) -> Result<(), IngestError> {
        let Some(publishing) = self.publishing.as_mut() else {
            return Ok(());
        };
        let dts = publishing.audio_clock.extend(timestamp);
        let event = match flv::parse_audio(&data) {
            Ok(flv::AudioTag::Config(config)) => {
                publishing
                    .broadcast
                    .measure(|m| m.audio_config(crate::media::codec::aac_codec_string(&config)));
                MediaEvent::AudioConfig(config)
            }
            Ok(flv::AudioTag::Frame(data)) => {
                let size = data.len();
                publishing
                    .broadcast
                    .measure(|m| m.audio(std::time::Instant::now(), size));
                MediaEvent::Audio(Frame {
                    dts,
                    pts: dts,
                    keyframe: true,
                    data,
                    arrived: chrono::Utc::now(),
                })
            }
            Err(e) => return Err(self.refuse_media(e)),
        };
        self.forward(event, false);
        Ok(())
    }

    /// Codecs the box does not take: the broadcast records why, as the pipeline does for a
    /// configuration it cannot mux, so both reach OBS and the dashboard the same way.
    fn refuse_media(&self, error: flv::FlvError) -> IngestError {
        tracing::error!(%error, "stream refused");
        if let Some(publishing) = &self.publishing {
            publishing.broadcast.refuse(error.to_string());
        }
        IngestError::Refused(error.to_string())
    }

    /// Hands an event to the pipeline without ever waiting on it.
    fn forward(&mut self, event: MediaEvent, keyframe: bool) {
        let Some(publishing) = self.publishing.as_mut() else {
            return;
        };
        let is_media = matches!(event, MediaEvent::Video(_) | MediaEvent::Audio(_));
        match event {
            MediaEvent::Video(_) => publishing.counted.video.increment(1),
            MediaEvent::Audio(_) => publishing.counted.audio.increment(1),
            _ => {}
        }
        if publishing.skipping && is_media {
            if !keyframe {
                publishing.dropped += 1;
                publishing.counted.dropped.increment(1);
                return;
            }
            tracing::warn!(
                dropped = publishing.dropped,
                "media pipeline caught up; resuming at a keyframe"
            );
            publishing.skipping = false;
            publishing.dropped = 0;
        }
        match publishing.media.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !publishing.skipping {
                    tracing::warn!(
                        "media pipeline is behind; dropping media until the next keyframe"
                    );
                }
                publishing.skipping = true;
                publishing.dropped += 1;
                publishing.counted.dropped.increment(1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("media pipeline stopped unexpectedly");
            }
        }
    }

    /// Ends the publish, if any: the pipeline closes its last segment and ends the
    /// playlist; the media is dropped after the linger period.
    async fn end_publish(&mut self) {
        let Some(publishing) = self.publishing.take() else {
            return;
        };
        let Publishing {
            broadcast,
            media,
            pipeline,
            ..
        } = publishing;
        drop(media);
        let _ = tokio::task::spawn_blocking(move || pipeline.join()).await;
        tracing::info!("publish ended");
        self.linger(broadcast);
    }

    /// The publisher left: the broadcast's playlists stay open for the linger time, so
    /// players wait through a short drop and the publisher can come back to the same
    /// playlists (see `hls`). Then they end, and after as long again (players polling see
    /// the end), the media is dropped. At shutdown, both at once.
    fn linger(&self, broadcast: Arc<Broadcast>) {
        let number = broadcast.off_air();
        let broadcasts = self.ingest.broadcasts.clone();
        let linger = self.ingest.hls.linger();
        let shutdown = self.ingest.shutdown.clone();
        self.ingest.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = shutdown.cancelled() => {}
            }
            if !broadcasts.end_if_idle(&broadcast, number) {
                return; // the publisher is back
            }
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = shutdown.cancelled() => {}
            }
            broadcasts.remove(&broadcast);
        });
    }
}

/// Feeds bytes to the RTMP session.
fn parse(
    session: &mut ServerSession,
    bytes: &[u8],
) -> Result<Vec<ServerSessionResult>, IngestError> {
    contain_parser(|| session.handle_input(bytes))?
        .map_err(|e| IngestError::Session(format!("{e:?}")))
}

/// Runs rml_rtmp on untrusted bytes. Its session (0.8) panics on crafted input at five
/// places the fuzzer found (two length underflows in the chunk deserializer, an index past
/// a slice in the AMF0 command reader, a `@setDataFrame` with fewer than two values;
/// `daemon/fuzz/findings/rtmp`); a panic must cost only the connection that sent it,
/// never the daemon. The session is dropped afterwards, so no
/// state from the panicked call is reused.
fn contain_parser<T>(parse: impl FnOnce() -> T) -> Result<T, IngestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .map_err(|_| IngestError::ParserPanic)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Extends RTMP's 32-bit millisecond timestamps, which wrap after 49.7 days, to 64 bits.
#[derive(Debug, Default)]
struct Clock {
    last: Option<u32>,
    epoch: i64,
}

impl Clock {
    fn extend(&mut self, timestamp: u32) -> i64 {
        if let Some(last) = self.last {
            // A large backwards jump is a wrap; a small one is reordering and stays put.
            if timestamp < last && last - timestamp > u32::MAX / 2 {
                self.epoch += 1 << 32;
            } else if timestamp > last && timestamp - last > u32::MAX / 2 && self.epoch > 0 {
                self.epoch -= 1 << 32;
            }
        }
        self.last = Some(timestamp);
        self.epoch + i64::from(timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, Clock, IngestError};
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig};

    /// A type-0 chunk header on `csid` announcing a message of `length` bytes, then `body`.
    fn chunk(csid: u8, length: u32, body: &[u8]) -> Vec<u8> {
        let [_, a, b, c] = length.to_be_bytes();
        let mut bytes = vec![csid, 0, 0, 0, a, b, c, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_parser_panic_is_contained_as_an_error() {
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).expect("session");
        // Part of a 300-byte message on chunk stream 3, interrupted by a 10-byte message on
        // chunk stream 4: rml_rtmp 0.8 underflows and panics on this.
        let mut crafted = chunk(3, 300, &[0x17; 128]);
        crafted.extend(chunk(4, 10, &[0x17; 10]));
        let result = parse(&mut session, &crafted);
        assert!(
            matches!(result, Err(IngestError::ParserPanic)),
            "{result:?}"
        );
    }

    #[test]
    fn clock_extends_across_the_wrap() {
        let mut clock = Clock::default();
        assert_eq!(clock.extend(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.extend(5), (1i64 << 32) + 5);
        assert_eq!(
            clock.extend(u32::MAX - 2),
            i64::from(u32::MAX) - 2,
            "late packet from before the wrap"
        );
        assert_eq!(clock.extend(40), (1i64 << 32) + 40);
    }

    #[test]
    fn clock_keeps_small_reorderings() {
        let mut clock = Clock::default();
        assert_eq!(clock.extend(1000), 1000);
        assert_eq!(clock.extend(990), 990);
    }
}
