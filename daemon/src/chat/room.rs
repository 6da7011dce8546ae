//! One channel's chat room: history, limits, bans and timeouts, and the fan-out ring.
//!
//! Every change to the room happens under one short `std::sync::Mutex` (never held across
//! an `.await`), and a message enters the history and the ring under that same lock, so a
//! joiner's history snapshot and its subscription meet without a gap or a duplicate.

use super::frames::{timestamp, Badge, Outbound, Speaker};
use super::Author;
use crate::config::ChatConfig;
use crate::store::{Restriction, User};
use axum::extract::ws::Utf8Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The longest timeout a moderator can give: a week (longer is a ban).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);
/// A timeout without a length.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the room refused something. Each has a stable `code` for the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("log in to chat")]
    Unauthenticated,
    #[error("the message is empty")]
    Empty,
    #[error("messages are at most {0} characters")]
    TooLong(usize),
    #[error("messages may not contain invisible formatting characters (direction overrides, zero-width spaces)")]
    Invisible,
    #[error("slow down: you can chat again in {} s", whole_seconds(*.0))]
    RateLimited(Duration),
    #[error("you are timed out in this chat for {} more s", whole_seconds(*.0))]
    TimedOut(Duration),
    #[error("you are banned from this chat")]
    Banned,
    #[error("only this channel's streamer and admins can moderate its chat")]
    Forbidden,
    #[error("the channel's streamer and admins cannot be banned or timed out")]
    Protected,
    #[error("no such user")]
    NoSuchUser,
    #[error("a timeout lasts 1 s to 7 days; use a ban for longer")]
    BadDuration,
    #[error("at most {0} chat connections from one device")]
    TooManySockets(usize),
}

/// Seconds, rounded up: "try again in 0 s" would be a lie.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Empty => "empty",
            Refusal::TooLong(_) => "too_long",
            Refusal::Invisible => "invisible_characters",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::TimedOut(_) => "timed_out",
            Refusal::Banned => "banned",
            Refusal::Forbidden => "forbidden",
            Refusal::Protected => "protected",
            Refusal::NoSuchUser => "no_such_user",
            Refusal::BadDuration => "bad_duration",
            Refusal::TooManySockets(_) => "too_many_sockets",
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited(d) | Refusal::TimedOut(d) => Some(whole_seconds(*d)),
            _ => None,
        }
    }
}

/// Makes a message fit to show: line breaks and tabs become spaces, other control
/// characters go, the ends are trimmed; then the length is checked in characters. Invisible
/// formatting (a direction override, zero-width spaces) is refused, not stripped: the
/// sender learns their text would not show as they wrote it.
pub fn clean_text(text: &str, max_chars: usize) -> Result<String, Refusal> {
    if text.chars().any(crate::text::is_invisible_format) {
        return Err(Refusal::Invisible);
    }
    let cleaned: String = text
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return Err(Refusal::Empty);
    }
    if cleaned.chars().count() > max_chars {
        return Err(Refusal::TooLong(max_chars));
    }
    Ok(cleaned.to_string())
}

/// A message in the history: its frame as sent, and whose it was (for deletion).
struct Posted {
    id: u64,
    author: Option<i64>,
    frame: Utf8Bytes,
}

/// A sender's recent messages, for the rate limit.
#[derive(Default)]
struct Pace {
    recent: VecDeque<Instant>,
    muted_until: Option<Instant>,
}

#[derive(Default)]
struct RoomState {
    history: VecDeque<Posted>,
    pace: HashMap<i64, Pace>,
    /// User id → end of their timeout in Unix seconds, or `None` for a ban.
    restrictions: HashMap<i64, Option<i64>>,
    /// The viewer count last announced.
    announced: usize,
    /// Open sockets per viewer: one phone opening many sockets is still one viewer.
    present: HashMap<Viewer, usize>,
}

/// Who a socket counts as. The viewer count is of people the box can tell apart: an
/// account (on however many devices), or an anonymous device (by address, however many
/// sockets it opens). Anonymous sockets cannot inflate it past one per address, and
/// accounts cost a sign-up, which is throttled per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viewer {
    Device(IpAddr),
    Account(i64),
}

pub struct Room {
    pub slug: String,
    pub channel_id: i64,
    owner: Option<i64>,
    limits: Arc<ChatConfig>,
    ids: Arc<AtomicU64>,
    /// Every frame for every socket. Bounded (`chat.socket_queue`): a socket that falls
    /// that far behind gets `Lagged` and is dropped by its transport; the room never waits.
    feed: broadcast::Sender<Utf8Bytes>,
    state: Mutex<RoomState>,
    /// Distinct viewers with a socket open here (`present.len()`, readable without the
    /// lock).
    viewers: AtomicUsize,
}

/// A socket's place in a room: its feed, and the viewer it counts as while alive.
pub struct Membership {
    pub room: Arc<Room>,
    pub feed: broadcast::Receiver<Utf8Bytes>,
    /// The history at the moment of joining, oldest first.
    pub history: Vec<Utf8Bytes>,
    viewer: Viewer,
}

impl Membership {
    /// The socket logged in: it now counts as that account, not as its device.
    pub fn identify(&mut self, user: i64) {
        let now = Viewer::Account(user);
        if self.viewer == now {
            return;
        }
        let mut state = self.room.state();
        self.room.leave(&mut state, self.viewer);
        self.room.enter(&mut state, now);
        self.viewer = now;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = self.room.state();
        self.room.leave(&mut state, self.viewer);
    }
}

impl Room {
    pub fn new(
        slug: String,
        channel_id: i64,
        owner: Option<i64>,
        restrictions: &[Restriction],
        limits: Arc<ChatConfig>,
        ids: Arc<AtomicU64>,
    ) -> Room {
        let (feed, _) = broadcast::channel(limits.socket_queue);
        let state = RoomState {
            restrictions: restrictions.iter().map(|r| (r.user_id, r.until)).collect(),
            ..RoomState::default()
        };
        Room {
            slug,
            channel_id,
            owner,
            limits,
            ids,
            feed,
            state: Mutex::new(state),
            viewers: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock cannot leave the state half-changed in a way
        // that matters more than losing chat: carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Viewers in this room: distinct accounts and anonymous devices with a socket open.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// The channel's streamer, if it has one.
    pub fn owner(&self) -> Option<i64> {
        self.owner
    }

    /// The channel's streamer and admins moderate.
    pub fn may_moderate(&self, who: &Author) -> bool {
        who.role.owner_or_admin(Some(who.id), self.owner)
    }

    /// How `who` is shown in this room: their badge comes from the room's owner and their
    /// role, never from anything a client sent.
    pub fn speaker<'a>(&self, who: &'a Author) -> Speaker<'a> {
        let badge = if self.owner == Some(who.id) {
            Some(Badge::Streamer)
        } else if who.role == crate::store::Role::Admin {
            Some(Badge::Admin)
        } else {
            None
        };
        Speaker {
            id: who.id,
            nickname: &who.nickname,
            username: &who.username,
            role: who.role,
            badge,
        }
    }

    /// Whether `who` may put words before this room now: not banned, not timed out. The
    /// one rule for chat messages and donation messages alike.
    pub fn may_speak(&self, who: &Author) -> Result<(), Refusal> {
        let mut state = self.state();
        Self::check_restriction(&mut state, who.id)
    }

    fn check_restriction(state: &mut RoomState, user: i64) -> Result<(), Refusal> {
        match state.restrictions.get(&user).copied() {
            None => Ok(()),
            Some(None) => Err(Refusal::Banned),
            Some(Some(until)) => {
                let left = until - chrono::Utc::now().timestamp();
                if left > 0 {
                    return Err(Refusal::TimedOut(Duration::from_secs(left.unsigned_abs())));
                }
                state.restrictions.remove(&user);
                Ok(())
            }
        }
    }

    pub fn join(self: &Arc<Self>, viewer: Viewer) -> Membership {
        let mut state = self.state();
        self.enter(&mut state, viewer);
        Membership {
            room: self.clone(),
            feed: self.feed.subscribe(),
            history: state.history.iter().map(|p| p.frame.clone()).collect(),
            viewer,
        }
    }

    fn enter(&self, state: &mut RoomState, viewer: Viewer) {
        *state.present.entry(viewer).or_insert(0) += 1;
        self.viewers.store(state.present.len(), Ordering::Relaxed);
    }

    fn leave(&self, state: &mut RoomState, viewer: Viewer) {
        if let Some(open) = state.present.get_mut(&viewer) {
            *open -= 1;
            if *open == 0 {
                state.present.remove(&viewer);
            }
        }
        self.viewers.store(state.present.len(), Ordering::Relaxed);
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a message to the history and sends it to every socket. Under the state lock.
    fn publish(&self, state: &mut RoomState, posted: Posted) {
        // No receivers is not an error: nobody is watching.
        let _ = self.feed.send(posted.frame.clone());
        if self.limits.history == 0 {
            return;
        }
        if state.history.len() == self.limits.history {
            state.history.pop_front();
        }
        state.history.push_back(posted);
    }

    fn system(&self, state: &mut RoomState, text: &str) {
        let id = self.next_id();
        let at = timestamp(chrono::Utc::now());
        let frame = Outbound::System { id, text, at: &at }.encode();
        self.publish(
            state,
            Posted {
                id,
                author: None,
                frame,
            },
        );
    }

    /// Posts `text` from `author`; the sender shown is the author, whatever the client said.
    pub fn post(&self, author: &Author, text: &str, now: Instant) -> Result<u64, Refusal> {
        let text = clean_text(text, self.limits.max_chars)?;
        let wall = chrono::Utc::now();
        let mut state = self.state();
        Self::check_restriction(&mut state, author.id)?;
        // Moderators are not rate limited in their own room.
        if !self.may_moderate(author) {
            let pace = state.pace.entry(author.id).or_default();
            if let Some(until) = pace.muted_until {
                if until > now {
                    return Err(Refusal::RateLimited(until - now));
                }
                pace.muted_until = None;
            }
            let window = self.limits.rate_window();
            while pace
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                pace.recent.pop_front();
            }
            if pace.recent.len() >= self.limits.rate_messages {
                let mute = self.limits.mute();
                pace.muted_until = Some(now + mute);
                pace.recent.clear();
                return Err(Refusal::RateLimited(mute));
            }
            pace.recent.push_back(now);
        }
        let id = self.next_id();
        let at = timestamp(wall);
        let frame = Outbound::Chat {
            id,
            user: self.speaker(author),
            text: &text,
            at: &at,
        }
        .encode();
        self.publish(
            &mut state,
            Posted {
                id,
                author: Some(author.id),
                frame,
            },
        );
        metrics::counter!("commeow_chat_messages_total").increment(1);
        Ok(id)
    }

    /// Shows a committed donation to the room. Call only after the commit: the room must
    /// never announce points that could still be rolled back. A donor who may not speak
    /// here (banned, timed out) is not announced at all: their points still reach the
    /// streamer (the ledger and the dashboard show it), their name and words do not reach
    /// the room. Returns whether it was announced.
    pub fn donation(&self, donor: &Author, amount: i64, message: &str, at: &str) -> bool {
        let mut state = self.state();
        if Self::check_restriction(&mut state, donor.id).is_err() {
            return false;
        }
        let id = self.next_id();
        let frame = Outbound::Donation {
            id,
            user: self.speaker(donor),
            amount,
            message,
            at,
        }
        .encode();
        self.publish(
            &mut state,
            Posted {
                id,
                author: Some(donor.id),
                frame,
            },
        );
        true
    }

    /// Sends a frame that is not part of the conversation (not kept in the history).
    fn announce(&self, frame: Utf8Bytes) {
        let _ = self.feed.send(frame);
    }

    /// Removes message `id` for everyone. Messages already out of the history may still be
    /// on screens, so the deletion is announced either way.
    pub fn delete(&self, id: u64) {
        let mut state = self.state();
        state.history.retain(|p| p.id != id);
        self.announce(Outbound::Deleted { id }.encode());
    }

    /// Applies a ban or timeout the store has recorded: the user's messages disappear and
    /// the room is told.
    pub fn restrict(&self, user: &User, until: Option<i64>, length: Option<Duration>) {
        let mut state = self.state();
        state.restrictions.insert(user.id, until);
        let mut removed = Vec::new();
        state.history.retain(|p| {
            let theirs = p.author == Some(user.id);
            if theirs {
                removed.push(p.id);
            }
            !theirs
        });
        for id in removed {
            self.announce(Outbound::Deleted { id }.encode());
        }
        let text = match length {
            None => format!("{} was banned from the chat", user.nickname),
            Some(d) => format!(
                "{} was timed out for {}",
                user.nickname,
                humanize(whole_seconds(d))
            ),
        };
        self.system(&mut state, &text);
    }

    pub fn lift(&self, user_id: i64) {
        self.state().restrictions.remove(&user_id);
    }

    /// Announces the viewer count if it changed, and forgets senders whose rate window
    /// has passed. Called about once a second.
    pub fn tick(&self, now: Instant) {
        let mut state = self.state();
        let count = self.viewers();
        if count != state.announced {
            state.announced = count;
            self.announce(Outbound::Viewers { count }.encode());
        }
        let window = self.limits.rate_window();
        state.pace.retain(|_, pace| {
            pace.muted_until.is_some_and(|t| t > now)
                || pace
                    .recent
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
        });
    }
}

/// "90 s", "10 min", "2 h", "7 d".
fn humanize(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn room(limits: ChatConfig) -> Arc<Room> {
        Arc::new(Room::new(
            "stage".into(),
            1,
            Some(10),
            &[],
            Arc::new(limits),
            Arc::new(AtomicU64::new(1)),
        ))
    }

    fn author(id: i64, role: Role) -> Author {
        Author {
            id,
            username: format!("user{id}"),
            nickname: format!("user{id}"),
            role,
        }
    }

    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn frames(membership: &mut Membership) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(frame) = membership.feed.try_recv() {
            out.push(serde_json::from_str(frame.as_str()).expect("json"));
        }
        out
    }

    #[test]
    fn text_is_cleaned_and_measured_in_characters() {
        assert_eq!(clean_text("  a\nb\tc\u{7}  ", 10), Ok("a b c".into()));
        assert_eq!(clean_text(" \n\u{0} ", 10), Err(Refusal::Empty));
        assert_eq!(clean_text(&"가".repeat(3), 3), Ok("가가가".into()));
        assert_eq!(clean_text(&"가".repeat(4), 3), Err(Refusal::TooLong(3)));
    }

    #[test]
    fn history_is_bounded_and_joiners_see_it_in_order() {
        let room = room(ChatConfig {
            history: 3,
            rate_messages: 100,
            ..ChatConfig::default()
        });
        let now = Instant::now();
        for n in 0..5 {
            room.post(&author(1, Role::Viewer), &format!("m{n}"), now)
                .expect("post");
        }
        let joined = room.join(Viewer::Device(PHONE));
        let texts: Vec<String> = joined
            .history
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f.as_str()).expect("json")["text"]
                    .to_string()
            })
            .collect();
        assert_eq!(texts, ["\"m2\"", "\"m3\"", "\"m4\""]);
        assert_eq!(room.viewers(), 1);
        drop(joined);
        assert_eq!(room.viewers(), 0);
    }

    #[test]
    fn viewers_are_addresses_not_sockets() {
        let room = room(ChatConfig::default());
        let tabs: Vec<_> = (0..3).map(|_| room.join(Viewer::Device(PHONE))).collect();
        let other = room.join(Viewer::Device(IpAddr::V4(std::net::Ipv4Addr::new(
            10, 0, 0, 2,
        ))));
        assert_eq!(room.viewers(), 2);
        drop(other);
        assert_eq!(room.viewers(), 1);
        drop(tabs);
        assert_eq!(room.viewers(), 0);
        // A logged-in socket counts as its account: on two devices, still one viewer; an
        // anonymous tab beside it on the same phone is another.
        let mut phone = room.join(Viewer::Device(PHONE));
        let mut laptop = room.join(Viewer::Device(IpAddr::V4(std::net::Ipv4Addr::new(
            10, 0, 0, 3,
        ))));
        let _anonymous = room.join(Viewer::Device(PHONE));
        assert_eq!(room.viewers(), 2);
        phone.identify(7);
        laptop.identify(7);
        assert_eq!(room.viewers(), 2, "account 7 and the anonymous tab");
        drop(phone);
        assert_eq!(room.viewers(), 2);
        drop(laptop);
        assert_eq!(room.viewers(), 1);
    }

    #[test]
    fn the_streamer_wears_a_badge_a_lookalike_does_not() {
        let room = room(ChatConfig::default()); // owner: user 10
        let mut watcher = room.join(Viewer::Device(PHONE));
        let streamer = Author {
            id: 10,
            username: "alice".into(),
            nickname: "Alice".into(),
            role: Role::Streamer,
        };
        let lookalike = Author {
            id: 11,
            username: "alice2".into(),
            nickname: "Alice".into(),
            role: Role::Viewer,
        };
        let admin = author(12, Role::Admin);
        let now = Instant::now();
        for who in [&streamer, &lookalike, &admin] {
            room.post(who, "hi", now).expect("post");
        }
        let users: Vec<_> = frames(&mut watcher)
            .into_iter()
            .map(|f| (f["user"]["username"].clone(), f["user"]["badge"].clone()))
            .collect();
        assert_eq!(
            users,
            [
                (serde_json::json!("alice"), serde_json::json!("streamer")),
                (serde_json::json!("alice2"), serde_json::Value::Null),
                (serde_json::json!("user12"), serde_json::json!("admin")),
            ]
        );
        assert_eq!(
            room.post(&lookalike, "Alice\u{202E}ecilA", now),
            Err(Refusal::Invisible)
        );
    }

    #[test]
    fn a_restricted_donor_is_not_announced() {
        let room = room(ChatConfig::default());
        let mut watcher = room.join(Viewer::Device(PHONE));
        let donor = author(1, Role::Viewer);
        assert_eq!(room.may_speak(&donor), Ok(()));
        assert!(room.donation(&donor, 100, "hello", "2026-01-01T00:00:00.000Z"));
        room.restrict(
            &crate::store::User {
                id: 1,
                username: "user1".into(),
                nickname: "user1".into(),
                role: Role::Viewer,
            },
            None,
            None,
        );
        assert_eq!(room.may_speak(&donor), Err(Refusal::Banned));
        frames(&mut watcher);
        assert!(!room.donation(&donor, 100, "spam", "2026-01-01T00:00:01.000Z"));
        assert!(frames(&mut watcher).is_empty(), "nothing reached the room");
    }

    #[test]
    fn rate_limit_mutes_then_forgives() {
        let room = room(ChatConfig::default()); // 3 per 2 s, 10 s mute
        let viewer = author(1, Role::Viewer);
        let t0 = Instant::now();
        for _ in 0..3 {
            room.post(&viewer, "hi", t0).expect("within the rate");
        }
        assert_eq!(
            room.post(&viewer, "hi", t0 + Duration::from_millis(500)),
            Err(Refusal::RateLimited(Duration::from_secs(10)))
        );
        let still = room.post(&viewer, "hi", t0 + Duration::from_secs(5));
        assert_eq!(
            still,
            Err(Refusal::RateLimited(Duration::from_millis(5500)))
        );
        assert_eq!(still.unwrap_err().retry_after(), Some(6));
        assert!(room
            .post(&viewer, "hi", t0 + Duration::from_secs(11))
            .is_ok());
        // Others are not affected, and the owner is never limited.
        let owner = author(10, Role::Streamer);
        for _ in 0..10 {
            room.post(&owner, "hi", t0).expect("owner");
        }
    }

    #[test]
    fn restrictions_stop_posting_and_clear_the_users_messages() {
        let room = room(ChatConfig::default());
        let mut watcher = room.join(Viewer::Device(PHONE));
        let troll = author(2, Role::Viewer);
        let now = Instant::now();
        let troll_message = room.post(&troll, "spam", now).expect("post");
        room.post(&author(3, Role::Viewer), "hello", now)
            .expect("post");
        frames(&mut watcher);
        let user = User {
            id: 2,
            username: "troll".into(),
            nickname: "Troll".into(),
            role: Role::Viewer,
        };
        let until = chrono::Utc::now().timestamp() + 60;
        room.restrict(&user, Some(until), Some(Duration::from_secs(60)));
        let seen = frames(&mut watcher);
        assert_eq!(seen[0]["type"], "deleted");
        assert_eq!(seen[0]["id"], troll_message);
        assert_eq!(seen[1]["type"], "system");
        assert_eq!(seen[1]["text"], "Troll was timed out for 60 s");
        assert!(matches!(
            room.post(&troll, "again", now),
            Err(Refusal::TimedOut(_))
        ));
        assert_eq!(
            room.join(Viewer::Device(PHONE)).history.len(),
            2,
            "hello and the notice remain"
        );
        room.restrict(&user, None, None);
        assert_eq!(room.post(&troll, "again", now), Err(Refusal::Banned));
        room.lift(2);
        assert!(room.post(&troll, "sorry", now).is_ok());
        // An expired timeout lets the user back in.
        room.restrict(&user, Some(chrono::Utc::now().timestamp() - 1), None);
        assert!(room.post(&troll, "back", now).is_ok());
    }

    #[test]
    fn viewer_count_is_announced_only_on_change() {
        let room = room(ChatConfig::default());
        let mut first = room.join(Viewer::Device(PHONE));
        let now = Instant::now();
        room.tick(now);
        room.tick(now);
        let second = room.join(Viewer::Device(IpAddr::V4(std::net::Ipv4Addr::new(
            10, 0, 0, 2,
        ))));
        room.tick(now);
        drop(second);
        room.tick(now);
        let counts: Vec<_> = frames(&mut first)
            .into_iter()
            .map(|f| f["count"].as_u64().expect("count"))
            .collect();
        assert_eq!(counts, [1, 2, 1]);
    }

    #[test]
    fn moderators_are_the_owner_and_admins() {
        let room = room(ChatConfig::default());
        assert!(room.may_moderate(&author(10, Role::Streamer)));
        assert!(room.may_moderate(&author(99, Role::Admin)));
        assert!(!room.may_moderate(&author(11, Role::Streamer)));
        assert!(!room.may_moderate(&author(1, Role::Viewer)));
    }
}
