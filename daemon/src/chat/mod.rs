//! Live chat: one room per channel, in memory, fanned out to WebSocket sockets.
//!
//! This module is the chat's domain: who may say what ([`Room::post`]: identity from the
//! token, length and rate limits, bans and timeouts), the history a joiner sees, and
//! moderation. It knows nothing of sockets; `http::chat` carries frames to and from them.
//!
//! Fan-out: each message is serialized once and put on the room's bounded broadcast ring;
//! every socket's task reads the same shared bytes (a reference count, not a copy). The
//! slow-consumer policy: a socket that falls `chat.socket_queue` messages behind, or whose
//! write stalls past `chat.write_timeout_seconds`, is disconnected; the room never waits.

pub mod frames;
mod room;

pub use room::{clean_text, Membership, Refusal, Room, Viewer, DEFAULT_TIMEOUT, MAX_TIMEOUT};

use crate::auth::Claims;
use crate::config::ChatConfig;
use crate::store::{Role, StoreError, StoreHandle};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// An authenticated chatter, from their access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub id: i64,
    pub username: String,
    pub nickname: String,
    pub role: Role,
}

impl Author {
    pub fn from_claims(claims: &Claims) -> Option<Author> {
        Some(Author {
            id: claims.user_id()?,
            username: claims.name.clone(),
            nickname: claims.nick.clone(),
            role: claims.role,
        })
    }
}

/// Every channel's room, opened on first use.
pub struct Chat {
    pub limits: Arc<ChatConfig>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Message ids, shared by all rooms. Seeded with the Unix time in microseconds so ids
    /// keep increasing across restarts, and stay below 2^53 (exact in JavaScript).
    ids: Arc<AtomicU64>,
    /// Chat sockets open per client address, on every channel.
    sockets: Mutex<HashMap<IpAddr, usize>>,
}

/// A chat socket's place among its address's sockets; frees it when dropped.
pub struct SocketSlot {
    chat: Arc<Chat>,
    address: IpAddr,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut sockets = self.chat.sockets();
        if let Some(open) = sockets.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                sockets.remove(&self.address);
            }
        }
    }
}

impl Chat {
    pub fn new(limits: ChatConfig) -> Chat {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Chat {
            limits: Arc::new(limits),
            rooms: Mutex::new(HashMap::new()),
            ids: Arc::new(AtomicU64::new(seed)),
            sockets: Mutex::new(HashMap::new()),
        }
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets one more chat socket in from `address`, up to `chat.sockets_per_address` (a
    /// phone with a few tabs; not a script holding thousands to inflate the count).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<SocketSlot, Refusal> {
        let limit = self.limits.sockets_per_address;
        let mut sockets = self.sockets();
        let open = sockets.entry(address).or_insert(0);
        if *open >= limit {
            return Err(Refusal::TooManySockets(limit));
        }
        *open += 1;
        Ok(SocketSlot {
            chat: self.clone(),
            address,
        })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Viewers of channel `slug`'s chat: accounts and anonymous devices with a socket open
    /// (0 if nobody opened it yet).
    pub fn viewers(&self, slug: &str) -> usize {
        self.rooms().get(slug).map_or(0, |room| room.viewers())
    }

    /// Viewers on every channel's chat, summed.
    pub fn total_viewers(&self) -> usize {
        self.rooms().values().map(|room| room.viewers()).sum()
    }

    /// The room of channel `slug`, or `None` if there is no such channel. Rooms live as
    /// long as the daemon: there are as many as channels, and each is small.
    pub async fn room(
        &self,
        slug: &str,
        store: &StoreHandle,
    ) -> Result<Option<Arc<Room>>, StoreError> {
        if let Some(room) = self.rooms().get(slug) {
            return Ok(Some(room.clone()));
        }
        let name = slug.to_string();
        let now = chrono::Utc::now().timestamp();
        let Some(record) = store.read(move |s| s.chat_room(&name, now)).await? else {
            return Ok(None);
        };
        // Two sockets may have raced to open it: the first one in wins.
        let room = self
            .rooms()
            .entry(slug.to_string())
            .or_insert_with(|| {
                Arc::new(Room::new(
                    slug.to_string(),
                    record.channel_id,
                    record.owner,
                    &record.restrictions,
                    self.limits.clone(),
                    self.ids.clone(),
                ))
            })
            .clone();
        Ok(Some(room))
    }

    /// Announces viewer counts and forgets idle rate-limit state, once a second, until
    /// shutdown. Counting on a tick rather than on every join keeps a thousand phones
    /// joining at once from sending a million count updates.
    pub async fn run_ticker(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
            let now = Instant::now();
            for room in rooms {
                room.tick(now);
            }
        }
    }
}

/// What a moderator can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    Delete { id: u64 },
    Timeout { user_id: i64, length: Duration },
    Ban { user_id: i64 },
    Unban { user_id: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Carries out a moderator's decision: bans and timeouts are recorded in the store first
/// (so they survive a restart), then take effect in the room for every socket at once.
pub async fn moderate(
    room: &Room,
    store: &StoreHandle,
    by: &Author,
    action: Moderation,
) -> Result<(), ModerationError> {
    if !room.may_moderate(by) {
        return Err(Refusal::Forbidden.into());
    }
    let (user_id, length) = match action {
        Moderation::Delete { id } => {
            room.delete(id);
            return Ok(());
        }
        Moderation::Unban { user_id } => {
            let channel = room.channel_id;
            store
                .write(move |s| s.lift_chat_restriction(channel, user_id))
                .await?;
            room.lift(user_id);
            return Ok(());
        }
        Moderation::Timeout { user_id, length } => {
            if length.is_zero() || length > MAX_TIMEOUT {
                return Err(Refusal::BadDuration.into());
            }
            (user_id, Some(length))
        }
        Moderation::Ban { user_id } => (user_id, None),
    };
    let now = chrono::Utc::now().timestamp();
    let until = length.map(|d| now + d.as_secs() as i64);
    let (channel, owner, moderator) = (room.channel_id, room.owner(), by.id);
    let restriction = crate::store::Restriction { user_id, until };
    let target = store
        .write(move |s| {
            let Some(user) = s.user_by_id(user_id)? else {
                return Ok(Err(Refusal::NoSuchUser));
            };
            if user.role.owner_or_admin(Some(user.id), owner) {
                return Ok(Err(Refusal::Protected));
            }
            s.restrict_chat_user(channel, restriction, moderator, now)?;
            Ok(Ok(user))
        })
        .await??;
    tracing::info!(
        channel = %room.slug,
        user = %target.username,
        by = %by.nickname,
        until,
        "chat restriction"
    );
    room.restrict(&target, until, length);
    Ok(())
}
