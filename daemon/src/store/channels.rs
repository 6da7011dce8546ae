//! Channels and their stream keys.
//!
//! A stream key is 160 random bits shown to the streamer once. The database keeps only its
//! SHA-256: with that much entropy a fast hash is as safe as a slow one (nobody can
//! enumerate 2^160 keys), and it lets a publish find its channel by an indexed lookup.

use super::{Store, StoreError};
use rand::Rng;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A channel as listed to viewers and operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub slug: String,
    pub title: String,
    pub created_at: String,
}

/// A channel's streamer: user id and nickname.
pub type Owner = (i64, String);

/// A stream key in the clear. Exists only between creation and being shown once, and
/// between arriving in a publish request and being hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(…)")
    }
}

impl StreamKey {
    const ALPHABET: &'static [u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    const LEN: usize = 32; // 32 symbols of 5 bits = 160 bits

    pub fn generate() -> StreamKey {
        let mut rng = rand::rng();
        let key = (0..Self::LEN)
            .map(|_| char::from(Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())]))
            .collect();
        StreamKey(key)
    }

    pub fn from_publish(key: &str) -> StreamKey {
        StreamKey(key.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

/// Maps a `SELECT slug, title, created_at` row.
fn channel_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        slug: row.get(0)?,
        title: row.get(1)?,
        created_at: row.get(2)?,
    })
}

pub fn validate_slug(slug: &str) -> Result<(), StoreError> {
    let ok = !slug.is_empty()
        && slug.len() <= 32
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidSlug(slug.to_string()))
    }
}

fn validate_title(title: &str) -> Result<(), StoreError> {
    if title.chars().count() > 100 {
        return Err(StoreError::InvalidTitle("longer than 100 characters"));
    }
    crate::text::check_name(title).map_err(|unfit| StoreError::InvalidTitle(unfit.reason()))
}

impl Store {
    /// Creates an operator's channel (no owner) and returns its stream key, which is never
    /// retrievable again.
    pub fn add_channel(
        &mut self,
        slug: &str,
        title: &str,
    ) -> Result<(Channel, StreamKey), StoreError> {
        self.add_channel_owned(slug, title, None, None)
    }

    /// Creates a channel owned by `owner` (a user id), or by nobody. With `limit`, an owner
    /// who already has that many channels gets [`StoreError::TooManyChannels`]; the count
    /// and the insert are one statement, so racing requests cannot pass it together.
    pub fn add_channel_owned(
        &mut self,
        slug: &str,
        title: &str,
        owner: Option<i64>,
        limit: Option<usize>,
    ) -> Result<(Channel, StreamKey), StoreError> {
        validate_slug(slug)?;
        validate_title(title)?;
        let key = StreamKey::generate();
        let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let limit = limit.map_or(i64::MAX, |l| l as i64);
        let inserted = self.conn().execute(
            "INSERT INTO channels (slug, title, stream_key_hash, created_at, owner_id)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE ?5 IS NULL OR (SELECT COUNT(*) FROM channels WHERE owner_id = ?5) < ?6
             ON CONFLICT (slug) DO NOTHING",
            params![slug, title, key.hash(), created_at, owner, limit],
        )?;
        if inserted == 0 {
            if self.channel_id_and_owner(slug)?.is_some() {
                return Err(StoreError::ChannelExists(slug.to_string()));
            }
            return Err(StoreError::TooManyChannels(
                limit.try_into().unwrap_or(usize::MAX),
            ));
        }
        let owner_name: Option<String> = match owner {
            Some(id) => self
                .conn()
                .prepare_cached("SELECT username FROM users WHERE id = ?1")?
                .query_row(params![id], |row| row.get(0))
                .optional()?,
            None => None,
        };
        // In the same transaction as the insert (the caller's: a store write, or the CLI's
        // `in_transaction`), so central hears of every channel and of no channel that
        // was not made.
        self.add_event(&super::outbox::Event::ChannelCreated {
            channel: slug.to_string(),
            title: title.to_string(),
            owner_id: owner,
            owner: owner_name,
            at: created_at.clone(),
        })?;
        let channel = Channel {
            slug: slug.to_string(),
            title: title.to_string(),
            created_at,
        };
        Ok((channel, key))
    }

    /// Who owns a channel: `None` if there is no such channel, `Some(None)` if nobody does.
    pub fn channel_owner(&self, slug: &str) -> Result<Option<Option<i64>>, StoreError> {
        Ok(self.channel_id_and_owner(slug)?.map(|(_, owner)| owner))
    }

    /// A channel's row id and owner, or `None` if there is no such channel.
    pub(crate) fn channel_id_and_owner(
        &self,
        slug: &str,
    ) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        let found = self
            .conn()
            .prepare_cached("SELECT id, owner_id FROM channels WHERE slug = ?1")?
            .query_row(params![slug], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(found)
    }

    /// Replaces a channel's stream key; the old one stops working at once.
    pub fn rotate_stream_key(&mut self, slug: &str) -> Result<StreamKey, StoreError> {
        let key = StreamKey::generate();
        let updated = self.conn().execute(
            "UPDATE channels SET previous_key_hash = stream_key_hash, previous_key_seen_at = NULL,
                                 stream_key_hash = ?1
             WHERE slug = ?2",
            params![key.hash(), slug],
        )?;
        if updated == 0 {
            return Err(StoreError::NoSuchChannel(slug.to_string()));
        }
        self.add_event(&super::outbox::Event::StreamKeyRotated {
            channel: slug.to_string(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })?;
        Ok(key)
    }

    /// Gives a channel a new title; whether it changed. The change is an outbox event.
    pub fn retitle_channel(&mut self, slug: &str, title: &str) -> Result<bool, StoreError> {
        validate_title(title)?;
        if self.channel_id_and_owner(slug)?.is_none() {
            return Err(StoreError::NoSuchChannel(slug.to_string()));
        }
        let changed = self.conn().execute(
            "UPDATE channels SET title = ?2 WHERE slug = ?1 AND title != ?2",
            params![slug, title],
        )? > 0;
        if changed {
            self.add_event(&super::outbox::Event::ChannelRetitled {
                channel: slug.to_string(),
                title: title.to_string(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })?;
        }
        Ok(changed)
    }

    /// Removes a channel, refused while it has donations (the ledger refers to them).
    pub fn remove_channel(&mut self, slug: &str) -> Result<(), StoreError> {
        let Some((id, _)) = self.channel_id_and_owner(slug)? else {
            return Err(StoreError::NoSuchChannel(slug.to_string()));
        };
        let donations: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM donations WHERE channel_id = ?1",
            params![id],
            |row| row.get(0),
        )?;
        if donations > 0 {
            return Err(StoreError::ChannelHasDonations(slug.to_string()));
        }
        self.conn()
            .execute("DELETE FROM channels WHERE id = ?1", params![id])?;
        self.add_event(&super::outbox::Event::ChannelRemoved {
            channel: slug.to_string(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })?;
        Ok(())
    }

    /// Every channel with its owner's username, for the fleet's `reported` state.
    pub fn channels_with_owners(
        &self,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let mut statement = self.conn().prepare_cached(
            "SELECT c.slug, c.title, u.username
             FROM channels c LEFT JOIN users u ON u.id = c.owner_id ORDER BY c.slug",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn list_channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut statement = self
            .conn()
            .prepare_cached("SELECT slug, title, created_at FROM channels ORDER BY slug")?;
        let rows = statement.query_map([], channel_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every channel with its streamer (owner id and nickname; `None` for an operator's
    /// channel), for the public list.
    pub fn channel_listing(&self) -> Result<Vec<(Channel, Option<Owner>)>, StoreError> {
        let mut statement = self.conn().prepare_cached(
            "SELECT c.slug, c.title, c.created_at, u.id, u.nickname
             FROM channels c LEFT JOIN users u ON u.id = c.owner_id ORDER BY c.slug",
        )?;
        let rows = statement.query_map([], |row| {
            let owner: Option<i64> = row.get(3)?;
            let nickname: Option<String> = row.get(4)?;
            Ok((channel_from_row(row)?, owner.zip(nickname)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The channel a publish with this key is for, if any.
    /// The channel whose key this was before its last rotation, if any.
    pub fn channel_for_previous_key(&self, key: &StreamKey) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT slug FROM channels WHERE previous_key_hash = ?1")?
            .query_row(params![key.hash()], |row| row.get(0))
            .optional()?)
    }

    /// A publisher tried the channel's previous key just now.
    pub fn note_previous_key_seen(&self, slug: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE channels SET previous_key_seen_at = ?2 WHERE slug = ?1")?
            .execute(params![
                slug,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ])?;
        Ok(())
    }

    /// When a publisher last tried the channel's previous key (since its rotation).
    pub fn previous_key_seen_at(&self, slug: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT previous_key_seen_at FROM channels WHERE slug = ?1")?
            .query_row(params![slug], |row| row.get(0))
            .optional()?
            .flatten())
    }

    pub fn channel_for_key(&self, key: &StreamKey) -> Result<Option<Channel>, StoreError> {
        let channel = self
            .conn()
            .prepare_cached(
                "SELECT slug, title, created_at FROM channels WHERE stream_key_hash = ?1",
            )?
            .query_row(params![key.hash()], channel_from_row)
            .optional()?;
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_finds_its_channel_and_is_not_stored_in_the_clear() {
        let (dir, mut store) = Store::temporary();
        let (channel, key) = store.add_channel("stage", "Main stage").expect("add");
        assert_eq!(store.channel_for_key(&key).expect("lookup"), Some(channel));
        assert_eq!(
            store
                .channel_for_key(&StreamKey::from_publish("nope"))
                .expect("lookup"),
            None
        );
        drop(store);
        let raw = std::fs::read(dir.path().join("commeow.db")).expect("read db");
        let wal = std::fs::read(dir.path().join("commeow.db-wal")).unwrap_or_default();
        let needle = key.as_str().as_bytes();
        for bytes in [&raw, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "key found in database file"
            );
        }
    }

    #[test]
    fn rotation_kills_the_old_key() {
        let (_dir, mut store) = Store::temporary();
        let (_, old) = store.add_channel("stage", "").expect("add");
        let new = store.rotate_stream_key("stage").expect("rotate");
        assert_ne!(old, new);
        assert_eq!(store.channel_for_key(&old).expect("lookup"), None);
        assert!(store.channel_for_key(&new).expect("lookup").is_some());
        assert!(matches!(
            store.rotate_stream_key("ghost"),
            Err(StoreError::NoSuchChannel(_))
        ));
    }

    #[test]
    fn duplicate_and_bad_slugs_are_refused() {
        let (_dir, mut store) = Store::temporary();
        store.add_channel("stage", "").expect("add");
        assert!(matches!(
            store.add_channel("stage", ""),
            Err(StoreError::ChannelExists(_))
        ));
        for bad in ["", "Stage", "-x", "a/b", "a b", &"x".repeat(33)] {
            assert!(
                matches!(store.add_channel(bad, ""), Err(StoreError::InvalidSlug(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_long_and_distinct() {
        let a = StreamKey::generate();
        let b = StreamKey::generate();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let (dir, mut store) = Store::temporary();
        store.add_channel("stage", "Main").expect("add");
        drop(store);
        let store = Store::open_in(dir.path()).expect("reopen");
        assert_eq!(store.list_channels().expect("list").len(), 1);
    }

    #[test]
    fn migrations_are_valid() {
        assert!(super::super::schema::migrations().validate().is_ok());
    }
}
