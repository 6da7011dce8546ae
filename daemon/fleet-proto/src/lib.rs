//! The fleet protocol: what a Commeow Edge box and the central service say to each other
//! over MQTT. Both ends build and read their messages with these types, so they cannot
//! drift apart.
//!
//! Every topic is `commeow/v1/<box_id>/<name>` ([`Topic`]). Messages are JSON; each carries
//! the box id, so an envelope can be checked against the topic it came on (a box's
//! certificate lets it write only under its own id; central refuses an envelope naming
//! another box). The `v1` in the topic is the protocol's version: a change that an older
//! reader would misread gets a new one, and both may run side by side. Within `v1`, fields
//! are only added, and readers ignore fields they do not know.
//!
//! The delivery guarantee is the application's, not MQTT's: the box keeps every event in
//! its outbox until central acknowledges it by event id ([`Ack`]), after central has
//! committed it. A PUBACK proves nothing durable (the broker keeps messages in memory), and
//! an MQTT client forgets its unacknowledged messages with its session. So the box resends
//! from its oldest unacknowledged event after a reconnect or a silence (go-back-N), and
//! central drops the duplicates by `(box_id, event_id)`.

pub mod broker;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version, as it appears in every topic.
pub const VERSION: &str = "v1";

/// Every topic starts with this.
pub const ROOT: &str = "commeow/v1";

/// A box's identity in the fleet: also its MQTT client id and its certificate's CN.
/// 1 to 64 of `a-z`, `0-9` and `-`, so it can never be an MQTT wildcard or a level
/// separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BoxId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("box id `{0}`: use 1 to 64 of a-z, 0-9 and -")]
    BadBoxId(String),
    #[error("`{0}` is not a fleet topic")]
    NotAFleetTopic(String),
    #[error("the message names box `{named}` but came on box `{topic}`'s topic")]
    WrongBox { named: String, topic: String },
    #[error("not a valid {what}: {error}")]
    BadMessage { what: &'static str, error: String },
}

impl BoxId {
    pub fn new(id: &str) -> Result<BoxId, ProtoError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(BoxId(id.to_string()))
        } else {
            Err(ProtoError::BadBoxId(id.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BoxId {
    type Error = ProtoError;
    fn try_from(value: String) -> Result<BoxId, ProtoError> {
        BoxId::new(&value)
    }
}

impl From<BoxId> for String {
    fn from(id: BoxId) -> String {
        id.0
    }
}

impl fmt::Display for BoxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The topics under a box: who writes each, and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Box → central, QoS 1: [`EventsBatch`].
    Events,
    /// Central → box, QoS 1: [`Ack`].
    Ack,
    /// Box → everyone, QoS 1, retained: [`Status`]; the box's last will is a `Status`
    /// with `online: false` on the same topic.
    Status,
    /// Central → box, QoS 1, retained: versioned channel provisioning.
    Desired,
    /// Box → central, QoS 1, retained: what the box has, after applying `desired`.
    Reported,
    /// Central → box, QoS 1: a command with an id and an expiry.
    Cmd,
    /// Box → central, QoS 1: a command's result.
    CmdRes,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::Events,
        Topic::Ack,
        Topic::Status,
        Topic::Desired,
        Topic::Reported,
        Topic::Cmd,
        Topic::CmdRes,
    ];

    /// The last levels of the topic.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Events => "events",
            Topic::Ack => "ack",
            Topic::Status => "status",
            Topic::Desired => "desired",
            Topic::Reported => "reported",
            Topic::Cmd => "cmd",
            Topic::CmdRes => "cmd/res",
        }
    }

    /// This topic for one box.
    pub fn of(self, box_id: &BoxId) -> String {
        format!("{ROOT}/{box_id}/{}", self.name())
    }

    /// This topic for every box (a subscription filter).
    pub fn of_every_box(self) -> String {
        format!("{ROOT}/+/{}", self.name())
    }

    /// Which box and topic a topic name is.
    pub fn parse(topic: &str) -> Result<(BoxId, Topic), ProtoError> {
        let not_ours = || ProtoError::NotAFleetTopic(topic.to_string());
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_ours)?;
        let (box_id, name) = rest.split_once('/').ok_or_else(not_ours)?;
        let kind = Topic::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(not_ours)?;
        Ok((BoxId::new(box_id).map_err(|_| not_ours())?, kind))
    }
}

/// One outbox event on the wire: what the box's outbox row holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The box's sequence number: increasing, never reused, with gaps only where the box's
    /// outbox lost nothing (a failed transaction never took a number).
    pub seq: i64,
    /// Unique across boxes and time: central stores each once.
    pub event_id: String,
    /// `donation`, `grant`, `topup_approved`, … (see the README's table).
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload's version for its type.
    pub v: u32,
    /// When it happened, on the box's clock (RFC 3339).
    pub at: String,
    /// The event's fields; names users by id and username, never a stream key.
    pub payload: serde_json::Value,
}

/// `events`: a batch of outbox events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsBatch {
    pub box_id: BoxId,
    /// The lowest sequence number the box still holds (unacknowledged). Everything below
    /// was acknowledged; central raises a gap if it never stored some of it.
    pub floor: i64,
    /// When the box sent it, on its clock: central compares it with its own to flag skew.
    pub sent_at: String,
    pub events: Vec<WireEvent>,
}

/// `ack`: central has committed these events (or already had them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub box_id: BoxId,
    pub event_ids: Vec<String>,
    /// The highest sequence central holds from this box with nothing missing below it.
    pub high_water: i64,
    /// Central's clock (RFC 3339): the box learns its offset from it, to judge command
    /// expiry right without a real-time clock.
    pub central_now: String,
}

/// `status` (retained): the box's health as the fleet admin sees it. The last will is the
/// same message with `online: false` and only the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub box_id: BoxId,
    pub online: bool,
    /// Bumped on every connect: a last will from an older session than the newest status
    /// seen is stale (the box is already back) and ignored.
    pub session: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Events the box holds that central has not acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_depth: Option<u64>,
    /// Age of the oldest of them, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacked_seconds: Option<f64>,
    /// The outbox is past the box's configured bound: the uplink is down or central is
    /// not acknowledging. Nothing is lost; someone should look.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbox_over_bound: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live_channels: Vec<String>,
    #[serde(default)]
    pub viewers: u64,
    /// On the box's clock.
    pub at: String,
}

impl Status {
    /// The last will: offline, and which session it ends.
    pub fn will(box_id: BoxId, session: u64, at: String) -> Status {
        Status {
            box_id,
            online: false,
            session,
            version: None,
            boot_id: None,
            outbox_depth: None,
            oldest_unacked_seconds: None,
            outbox_over_bound: false,
            live_channels: Vec::new(),
            viewers: 0,
            at,
        }
    }
}

/// How long to wait before reconnecting after `failures` failed attempts in a row:
/// exponential from 0.5 s up to 15 s, with full jitter, so a fleet that lost its broker
/// does not come back all at once (a thousand boxes spread over 15 s is ~70 connects a
/// second, easy for one mosquitto), and a box's backlog is caught up within ~20 s of the
/// broker's return (a 30 s cap made that up to 31 s in the benchmark). (rumqttc
/// reconnects at once on its own.)
pub fn backoff(failures: u32) -> std::time::Duration {
    let cap_ms = 500u64.saturating_mul(1 << failures.min(5)).min(15_000);
    // Full jitter: anywhere in [0, cap]; a cheap source is enough, fairness is not needed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    std::time::Duration::from_millis(nanos % (cap_ms + 1))
}

/// `desired` (retained): the channels central wants on a box. The box applies a version
/// only if it is newer than the last it applied, so a late or replayed older one changes
/// nothing, and applying the same version twice is a no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub box_id: BoxId,
    pub version: u64,
    pub channels: Vec<DesiredChannel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredChannel {
    pub slug: String,
    #[serde(default)]
    pub title: String,
    /// The owner's username on the box; the stream key is made on the box and shown only
    /// to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Remove it (refused while the channel has donations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
}

/// `reported` (retained): what the box has after applying `desired`, channels made on the
/// box itself included, so drift is visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub box_id: BoxId,
    /// The last `desired` version applied (0: none).
    pub applied_version: u64,
    pub channels: Vec<ReportedChannel>,
    /// What could not be applied, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedChannel {
    pub slug: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub slug: String,
    pub reason: String,
}

impl Envelope for Desired {
    const WHAT: &'static str = "desired state";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

impl Envelope for Reported {
    const WHAT: &'static str = "reported state";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

/// `cmd`: something a fleet admin asks one box to do, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub box_id: BoxId,
    /// Unique per command: the box records it with the command's effect, so the same id
    /// sent again replays the stored result instead of acting twice.
    pub id: String,
    /// `ping`, `resync`, `grant`, `rotate_key`, `set_role`, `ledger_summary`.
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
    /// On central's clock (RFC 3339): the box judges it with the offset it learned from
    /// acks, so a box with a wrong clock still judges it right.
    pub expires_at: String,
}

/// `cmd/res`: what became of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub box_id: BoxId,
    pub id: String,
    /// `done`, `expired`, `refused` (bad arguments or not allowed) or `unknown`.
    pub status: String,
    #[serde(default)]
    pub result: serde_json::Value,
    /// The stored result of an earlier delivery of the same id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    pub at: String,
}

impl Envelope for Command {
    const WHAT: &'static str = "command";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

impl Envelope for CommandResult {
    const WHAT: &'static str = "command result";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

/// A message that names its box.
pub trait Envelope: Serialize + for<'de> Deserialize<'de> {
    const WHAT: &'static str;
    fn box_id(&self) -> &BoxId;

    /// Reads a message that came on `topic`'s box, refusing one that names another box.
    fn read(payload: &[u8], topic_box: &BoxId) -> Result<Self, ProtoError> {
        let message: Self =
            serde_json::from_slice(payload).map_err(|e| ProtoError::BadMessage {
                what: Self::WHAT,
                error: e.to_string(),
            })?;
        if message.box_id() != topic_box {
            return Err(ProtoError::WrongBox {
                named: message.box_id().to_string(),
                topic: topic_box.to_string(),
            });
        }
        Ok(message)
    }

    fn to_bytes(&self) -> Vec<u8> {
        // Our own types always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Envelope for EventsBatch {
    const WHAT: &'static str = "events batch";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

impl Envelope for Ack {
    const WHAT: &'static str = "ack";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

impl Envelope for Status {
    const WHAT: &'static str = "status";
    fn box_id(&self) -> &BoxId {
        &self.box_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BoxId {
        BoxId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn backoff_grows_to_a_cap_and_is_jittered() {
        for (failures, cap) in [(0, 500), (1, 1000), (2, 2000), (4, 8000), (5, 15_000)] {
            assert!(backoff(failures).as_millis() <= cap);
        }
        // However long the outage, at most 15 s, and spread over the whole range.
        let waits: Vec<u128> = (0..200)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_micros(37));
                backoff(40).as_millis()
            })
            .collect();
        assert!(waits.iter().all(|w| *w <= 15_000));
        assert!(waits.iter().any(|w| *w < 5_000) && waits.iter().any(|w| *w > 10_000));
    }

    #[test]
    fn box_ids_cannot_be_wildcards_or_levels() {
        for bad in ["", "a/b", "+", "#", "Venue", "a b", &"x".repeat(65)] {
            assert!(BoxId::new(bad).is_err(), "{bad:?}");
        }
        assert!(BoxId::new("seoul-hall-01").is_ok());
        assert!(serde_json::from_str::<BoxId>("\"a/b\"").is_err());
    }

    #[test]
    fn topics_round_trip_and_strangers_are_refused() {
        let b = id("hall-1");
        for topic in Topic::ALL {
            let name = topic.of(&b);
            assert_eq!(Topic::parse(&name), Ok((b.clone(), topic)), "{name}");
        }
        assert_eq!(Topic::CmdRes.of(&b), "commeow/v1/hall-1/cmd/res");
        assert_eq!(Topic::Events.of_every_box(), "commeow/v1/+/events");
        for stranger in [
            "commeow/v2/hall-1/events",
            "commeow/v1/hall-1/nope",
            "commeow/v1/HALL/events",
            "other/v1/hall-1/events",
            "commeow/v1/hall-1",
        ] {
            assert!(Topic::parse(stranger).is_err(), "{stranger}");
        }
    }

    #[test]
    fn an_envelope_naming_another_box_is_refused() {
        let batch = EventsBatch {
            box_id: id("hall-2"),
            floor: 1,
            sent_at: "2026-12-05T00:00:00Z".into(),
            events: vec![],
        };
        let bytes = batch.to_bytes();
        assert_eq!(EventsBatch::read(&bytes, &id("hall-2")), Ok(batch));
        assert!(matches!(
            EventsBatch::read(&bytes, &id("hall-1")),
            Err(ProtoError::WrongBox { .. })
        ));
        assert!(matches!(
            EventsBatch::read(b"{", &id("hall-1")),
            Err(ProtoError::BadMessage { .. })
        ));
    }

    #[test]
    fn readers_ignore_fields_they_do_not_know() {
        let text = r#"{"box_id":"hall-1","online":true,"session":3,"at":"x","future":1}"#;
        let status = Status::read(text.as_bytes(), &id("hall-1")).unwrap_or_else(|e| panic!("{e}"));
        assert!(status.online && status.session == 3 && status.viewers == 0);
        let will = Status::will(id("hall-1"), 4, "y".into()).to_bytes();
        let will = String::from_utf8(will).unwrap_or_default();
        assert_eq!(
            will,
            r#"{"box_id":"hall-1","online":false,"session":4,"viewers":0,"at":"y"}"#
        );
    }
}
