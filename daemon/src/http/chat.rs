//! Chat over WebSocket: `GET /api/channels/<slug>/chat`.
//!
//! One task per socket moves frames between the socket and its [`Room`]. Anyone may
//! connect and read; a socket authenticates with an `Authorization: Bearer` header at
//! connect (non-browser clients) or an `auth` frame (browsers cannot set headers on a
//! WebSocket), and may then send. What the room refuses comes back as an `error` frame on
//! that socket only.
//!
//! The socket's slow-consumer policy: messages are read from the room's ring and written
//! in batches; a socket that falls `chat.socket_queue` messages behind, or whose write
//! does not finish within `chat.write_timeout_seconds`, is closed. A socket that has sent
//! nothing (not even a pong) for two `chat.ping_seconds` is presumed gone (a phone that
//! left the Wi-Fi) and closed, so the viewer count stays honest.

use super::auth::{authenticate, bearer, invalid_token};
use super::{ApiError, AppState};
use crate::chat::frames::{Inbound, Outbound};
use crate::chat::{self, Author, Membership, Moderation, ModerationError, Refusal, Room, Viewer};
use axum::extract::ws::{
    close_code, rejection::WebSocketUpgradeRejection, CloseFrame, Message, Utf8Bytes, WebSocket,
    WebSocketUpgrade,
};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Frames written per flush at most, so one busy socket cannot hog its worker thread.
const BATCH: usize = 64;
/// WebSocket read buffer: chat frames are small, and this is memory every socket holds.
const READ_BUFFER: usize = 4096;
/// Frames are gathered up to this many bytes before a write (a flush writes them anyway).
const WRITE_BUFFER: usize = 4096;
/// A socket's outgoing buffer may grow to this while its writes are stuck, and no further.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

pub async fn connect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let room = state
        .chat
        .room(&slug, &state.store)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel `{slug}`")))?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("chat is a WebSocket endpoint: {e}"),
        )
    })?;
    let slot = state.chat.admit(peer.ip()).map_err(|refusal| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            refusal.code(),
            refusal.to_string(),
        )
    })?;
    // A bad header token is refused before the upgrade, with the same JSON as the API.
    let author = match bearer(&headers) {
        Some(token) => Some(Identity::check(&state, token).await?),
        None => None,
    };
    // A message of max_chars characters, each escaped as \uXXXX at worst, plus the frame
    // around it; an auth frame's token is far smaller.
    let max_message = state.chat.limits.max_chars * 6 + 1024;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            // Counted by the daemon's task tracker, so shutdown waits for the goodbye.
            let task = state.tracker.token();
            async move {
                let viewer = match &author {
                    Some(identity) => Viewer::Account(identity.author.id),
                    None => Viewer::Device(peer.ip()),
                };
                let membership = room.join(viewer);
                ChatSocket {
                    socket,
                    membership,
                    identity: author,
                    inbound: InboundBudget::new(&state.chat.limits),
                    state,
                }
                .run()
                .await;
                drop(slot);
                drop(task);
            }
        }))
}

/// Who a socket speaks as, until when its token says so, and its session.
struct Identity {
    author: Author,
    expires: u64,
    session: String,
    claims: crate::auth::Claims,
}

impl Identity {
    async fn check(state: &AppState, token: &str) -> Result<Identity, ApiError> {
        let claims = authenticate(state, token).await?;
        let author = Author::from_claims(&claims).ok_or_else(invalid_token)?;
        Ok(Identity {
            author,
            expires: claims.exp,
            session: claims.sid.clone(),
            claims,
        })
    }
}

/// Frames a client may send: a bucket of 50 (a moderator clearing a spam wave) plus the chat
/// rate, refilled at twice the chat rate or 10 a second. A socket that empties it is
/// closed: it is flooding, and every frame costs a parse and an answer.
struct InboundBudget {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl InboundBudget {
    fn new(limits: &crate::config::ChatConfig) -> InboundBudget {
        let rate = limits.rate_messages as f64 / limits.rate_seconds;
        let capacity = 50.0 + limits.rate_messages as f64;
        InboundBudget {
            tokens: capacity,
            capacity,
            per_second: (2.0 * rate).max(10.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a socket's task ended (for the debug log).
#[derive(Debug)]
enum End {
    ClientLeft,
    TooSlow,
    WriteStalled,
    Silent,
    Flooding,
    Shutdown,
}

struct ChatSocket {
    socket: WebSocket,
    membership: Membership,
    identity: Option<Identity>,
    inbound: InboundBudget,
    state: AppState,
}

fn error_frame(code: &str, message: &str, retry_after: Option<u64>) -> Utf8Bytes {
    Outbound::Error {
        code,
        message,
        retry_after,
    }
    .encode()
}

fn refusal_frame(refusal: &Refusal) -> Utf8Bytes {
    error_frame(refusal.code(), &refusal.to_string(), refusal.retry_after())
}

impl ChatSocket {
    fn room(&self) -> &Arc<Room> {
        &self.membership.room
    }

    async fn run(mut self) {
        let end = self.serve().await;
        if matches!(end, End::TooSlow | End::WriteStalled | End::Flooding) {
            let reason = match end {
                End::TooSlow => "too_slow",
                End::WriteStalled => "write_stalled",
                _ => "flooding",
            };
            metrics::counter!("commeow_chat_sockets_dropped_total", "reason" => reason)
                .increment(1);
        }
        let reason = match end {
            End::Shutdown => Some((close_code::AWAY, "the box is shutting down")),
            End::TooSlow => Some((close_code::POLICY, "too slow: reconnect to catch up")),
            End::Flooding => Some((close_code::POLICY, "too many frames")),
            // Nothing more can be said to these.
            End::ClientLeft | End::WriteStalled | End::Silent => None,
        };
        if let Some((code, reason)) = reason {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            // The closing handshake: send ours, then read until the client's reply, for at
            // most a second. Closing with unread input would make the kernel reset the
            // connection, and the client would lose our close frame (and its reason).
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                self.socket.send(close).await?;
                while let Some(message) = self.socket.recv().await {
                    if matches!(message?, Message::Close(_)) {
                        break;
                    }
                }
                Ok::<_, axum::Error>(())
            })
            .await;
        }
        tracing::debug!(channel = %self.room().slug, ?end, "chat socket closed");
    }

    async fn serve(&mut self) -> End {
        let hello = {
            let user = self
                .identity
                .as_ref()
                .map(|i| self.room().speaker(&i.author));
            let moderator = self
                .identity
                .as_ref()
                .is_some_and(|i| self.room().may_moderate(&i.author));
            Outbound::Hello {
                channel: &self.room().slug,
                viewers: self.room().viewers(),
                history: self.membership.history.len(),
                user,
                moderator,
            }
            .encode()
        };
        let history = std::mem::take(&mut self.membership.history);
        if let Err(end) = self.write(std::iter::once(hello).chain(history)).await {
            return end;
        }
        let ping_interval = self.state.chat.limits.ping_interval();
        let mut ping = tokio::time::interval(ping_interval);
        ping.tick().await;
        let mut last_heard = Instant::now();
        loop {
            let step = tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => Err(End::Shutdown),
                received = self.membership.feed.recv() => match received {
                    Ok(frame) => self.forward(frame).await,
                    Err(RecvError::Lagged(_)) => Err(End::TooSlow),
                    Err(RecvError::Closed) => Err(End::Shutdown),
                },
                inbound = self.socket.recv() => {
                    last_heard = Instant::now();
                    match inbound {
                        Some(Ok(message)) => self.receive(message).await,
                        Some(Err(_)) | None => Err(End::ClientLeft),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > 2 * ping_interval {
                        Err(End::Silent)
                    } else {
                        self.write_messages(std::iter::once(Message::Ping(bytes::Bytes::new()))).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes `frames` and flushes, within the write timeout.
    async fn write(&mut self, frames: impl Iterator<Item = Utf8Bytes>) -> Result<(), End> {
        self.write_messages(frames.map(Message::Text)).await
    }

    /// Writes `messages` (data or control) and flushes, within the write timeout.
    async fn write_messages(&mut self, messages: impl Iterator<Item = Message>) -> Result<(), End> {
        let socket = &mut self.socket;
        let write = async move {
            for message in messages {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(self.state.chat.limits.write_timeout(), write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientLeft),
            Err(_) => Err(End::WriteStalled),
        }
    }

    /// Sends `first` and whatever else is already waiting in the ring, in one write.
    async fn forward(&mut self, first: Utf8Bytes) -> Result<(), End> {
        let mut batch = Vec::with_capacity(4);
        batch.push(first);
        while batch.len() < BATCH {
            match self.membership.feed.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(TryRecvError::Lagged(_)) => return Err(End::TooSlow),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        self.write(batch.into_iter()).await
    }

    async fn receive(&mut self, message: Message) -> Result<(), End> {
        let reply = match message {
            Message::Text(text) => {
                if !self.inbound.take(Instant::now()) {
                    return Err(End::Flooding);
                }
                self.handle(text.as_str()).await
            }
            Message::Binary(_) => Some(error_frame(
                "bad_frame",
                "chat frames are JSON text, not binary",
                None,
            )),
            Message::Close(_) => return Err(End::ClientLeft),
            // Pongs are answered by the WebSocket layer; either way the client is alive.
            Message::Ping(_) | Message::Pong(_) => None,
        };
        match reply {
            Some(frame) => self.write(std::iter::once(frame)).await,
            None => Ok(()),
        }
    }

    /// Acts on one client frame; returns the reply for this socket alone, if any.
    async fn handle(&mut self, text: &str) -> Option<Utf8Bytes> {
        let frame: Inbound = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                return Some(error_frame(
                    "bad_frame",
                    &format!("not a chat frame: {e}"),
                    None,
                ))
            }
        };
        let action = match frame {
            Inbound::Auth { token } => return Some(self.authenticate(&token).await),
            Inbound::Chat { text } => {
                let author = match self.author() {
                    Ok(author) => author,
                    Err(why) => return Some(why.frame()),
                };
                let posted = self.room().post(&author, &text, Instant::now());
                return posted.err().map(|refusal| refusal_frame(&refusal));
            }
            Inbound::Delete { id } => Moderation::Delete { id },
            Inbound::Timeout { user_id, seconds } => Moderation::Timeout {
                user_id,
                length: seconds.map_or(chat::DEFAULT_TIMEOUT, Duration::from_secs),
            },
            Inbound::Ban { user_id } => Moderation::Ban { user_id },
            Inbound::Unban { user_id } => Moderation::Unban { user_id },
        };
        let author = match self.author() {
            Ok(author) => author,
            Err(why) => return Some(why.frame()),
        };
        let room = self.room().clone();
        match chat::moderate(&room, &self.state.store, &author, action).await {
            Ok(()) => None,
            Err(ModerationError::Refused(r)) => Some(refusal_frame(&r)),
            Err(ModerationError::Store(e)) => {
                let error = ApiError::from(e);
                Some(error_frame(error.code, &error.message, None))
            }
        }
    }

    /// The socket's author, if it authenticated, its token has not expired since, and its
    /// session has not ended (checked per message, in memory: logging out or a stolen
    /// refresh token silences open sockets at once).
    fn author(&mut self) -> Result<Author, Speak> {
        let identity = self
            .identity
            .as_ref()
            .ok_or(Speak::Refused(Refusal::Unauthenticated))?;
        if crate::auth::now_seconds() >= identity.expires {
            return Err(Speak::Expired);
        }
        if self.state.auth.is_revoked(&identity.session) {
            self.identity = None;
            return Err(Speak::Revoked);
        }
        // The account changed (a new role, disabled): the page refreshes its token and
        // authenticates again, as for an expired one, and speaks as it is now.
        if self.state.auth.is_stale(&identity.claims) {
            self.identity = None;
            return Err(Speak::Expired);
        }
        Ok(identity.author.clone())
    }

    async fn authenticate(&mut self, token: &str) -> Utf8Bytes {
        match Identity::check(&self.state, token).await {
            Ok(identity) => {
                let moderator = self.room().may_moderate(&identity.author);
                let frame = Outbound::Authenticated {
                    user: self.room().speaker(&identity.author),
                    moderator,
                }
                .encode();
                self.membership.identify(identity.author.id);
                self.identity = Some(identity);
                frame
            }
            // A failed auth frame leaves the socket as it was: still reading.
            Err(error) => error_frame(error.code, &error.message, None),
        }
    }
}

/// Why a socket may not speak right now.
enum Speak {
    Refused(Refusal),
    Expired,
    Revoked,
}

impl Speak {
    fn frame(self) -> Utf8Bytes {
        match self {
            Speak::Refused(refusal) => refusal_frame(&refusal),
            Speak::Expired => error_frame(
                "token_expired",
                "the access token has expired; refresh it and send a new auth frame",
                None,
            ),
            Speak::Revoked => error_frame(
                "session_revoked",
                "this session has ended; log in again",
                None,
            ),
        }
    }
}
