//! The chat wire format: JSON text frames, one object each, told apart by `type`.
//!
//! Client to server: `auth`, `chat`, and the moderators' `delete`, `timeout`, `ban`, `unban`.
//! Server to client: `hello`, `authenticated`, `chat`, `system`, `viewers`, `deleted`,
//! `error` (and `donation`, from the ledger). Fields a client adds are ignored: in
//! particular a `chat` frame's sender always comes from the socket's token.

use crate::store::Role;
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    /// Authenticate this socket (or switch to a fresh token before the old one expires).
    Auth {
        token: String,
    },
    Chat {
        text: String,
    },
    /// Moderation: remove one message for everyone.
    Delete {
        id: u64,
    },
    /// Moderation: mute a user in this channel for `seconds` (default ten minutes).
    Timeout {
        user_id: i64,
        #[serde(default)]
        seconds: Option<u64>,
    },
    Ban {
        user_id: i64,
    },
    Unban {
        user_id: i64,
    },
}

/// Who said something, as every client sees it. Nicknames are not unique, so the username
/// comes along, and the badge says, from the server's own knowledge, who speaks for the
/// channel: `streamer` (its owner) or `admin`. A client shows it; no client can claim it.
#[derive(Debug, Clone, Serialize)]
pub struct Speaker<'a> {
    pub id: i64,
    pub nickname: &'a str,
    pub username: &'a str,
    pub role: Role,
    pub badge: Option<Badge>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Badge {
    Streamer,
    Admin,
}

/// A frame to clients.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound<'a> {
    /// First frame on every socket: where it is, who it is, and how many history frames
    /// (ordinary `chat`/`system`/`donation` frames) follow it.
    Hello {
        channel: &'a str,
        viewers: usize,
        history: usize,
        user: Option<Speaker<'a>>,
        moderator: bool,
    },
    Authenticated {
        user: Speaker<'a>,
        moderator: bool,
    },
    Chat {
        id: u64,
        user: Speaker<'a>,
        text: &'a str,
        /// RFC 3339, milliseconds, UTC.
        at: &'a str,
    },
    System {
        id: u64,
        text: &'a str,
        at: &'a str,
    },
    /// A committed donation, shown to everyone (and kept in the history).
    Donation {
        id: u64,
        user: Speaker<'a>,
        amount: i64,
        message: &'a str,
        at: &'a str,
    },
    /// Sockets open in the room, announced at most once a second when it changes.
    Viewers {
        count: usize,
    },
    Deleted {
        id: u64,
    },
    Error {
        code: &'a str,
        message: &'a str,
        /// Seconds until trying again makes sense (rate limits, timeouts).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
}

impl Outbound<'_> {
    /// Serialized once, then shared by every socket that sends it.
    pub fn encode(&self) -> Utf8Bytes {
        match serde_json::to_string(self) {
            Ok(text) => Utf8Bytes::from(text),
            // Only string keys and plain values: serialization cannot fail.
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a chat frame");
                Utf8Bytes::from_static("{}")
            }
        }
    }
}

/// The time stamp on messages.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_frames_parse_and_ignore_claimed_identity() {
        let frame: Inbound = serde_json::from_str(
            r#"{"type":"chat","text":"hi","nickname":"admin","user_id":1,"id":7}"#,
        )
        .expect("parse");
        assert_eq!(frame, Inbound::Chat { text: "hi".into() });
        let frame: Inbound =
            serde_json::from_str(r#"{"type":"timeout","user_id":3}"#).expect("parse");
        assert_eq!(
            frame,
            Inbound::Timeout {
                user_id: 3,
                seconds: None
            }
        );
        for bad in [
            r#"{"type":"shout","text":"x"}"#,
            r#"{"text":"x"}"#,
            r#"{"type":"chat"}"#,
            r#"{"type":"delete","id":-1}"#,
            "[]",
            "\u{0}",
        ] {
            assert!(serde_json::from_str::<Inbound>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outbound_text_is_escaped_json_never_markup() {
        let frame = Outbound::Chat {
            id: 1,
            user: Speaker {
                id: 2,
                nickname: "\"Q\"",
                username: "q",
                role: Role::Viewer,
                badge: None,
            },
            text: "<script>alert(1)</script>\"",
            at: "2026-01-01T00:00:00.000Z",
        }
        .encode();
        let value: serde_json::Value = serde_json::from_str(frame.as_str()).expect("json");
        assert_eq!(value["type"], "chat");
        assert_eq!(value["text"], "<script>alert(1)</script>\"");
        assert_eq!(value["user"]["nickname"], "\"Q\"");
        assert_eq!(value["user"]["role"], "viewer");
    }
}
