//! Chat moderation that must outlive the process: bans and timeouts per channel.
//!
//! Chat messages themselves are not stored: a venue's chat is live talk, kept in memory for
//! the history a joining viewer sees, and not worth a write to the SD card per line.

use super::{Store, StoreError, User};
use rusqlite::params;

/// A user's standing restriction in one channel's chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restriction {
    pub user_id: i64,
    /// Unix seconds the timeout ends; `None` for a ban.
    pub until: Option<i64>,
}

/// What a chat room needs from the store when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRoomRecord {
    pub channel_id: i64,
    pub owner: Option<i64>,
    /// Restrictions still in force.
    pub restrictions: Vec<Restriction>,
}

impl Store {
    /// The chat room of channel `slug`, or `None` if there is no such channel.
    pub fn chat_room(&self, slug: &str, now: i64) -> Result<Option<ChatRoomRecord>, StoreError> {
        let Some((channel_id, owner)) = self.channel_id_and_owner(slug)? else {
            return Ok(None);
        };
        let restrictions = self
            .conn()
            .prepare_cached(
                "SELECT user_id, until FROM chat_restrictions
                 WHERE channel_id = ?1 AND (until IS NULL OR until > ?2)",
            )?
            .query_map(params![channel_id, now], |row| {
                Ok(Restriction {
                    user_id: row.get(0)?,
                    until: row.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(ChatRoomRecord {
            channel_id,
            owner,
            restrictions,
        }))
    }

    /// Bans (`until` = `None`) or times out a user in a channel's chat, replacing any
    /// earlier restriction. Returns the user, or `None` if there is no such user.
    pub fn restrict_chat_user(
        &mut self,
        channel_id: i64,
        restriction: Restriction,
        by: i64,
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        let Some(user) = self.user_by_id(restriction.user_id)? else {
            return Ok(None);
        };
        self.conn().execute(
            "INSERT INTO chat_restrictions (channel_id, user_id, until, by_user, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (channel_id, user_id)
             DO UPDATE SET until = excluded.until, by_user = excluded.by_user,
                           created_at = excluded.created_at",
            params![channel_id, restriction.user_id, restriction.until, by, now],
        )?;
        Ok(Some(user))
    }

    /// Lifts a ban or timeout. Returns whether there was one.
    pub fn lift_chat_restriction(
        &mut self,
        channel_id: i64,
        user_id: i64,
    ) -> Result<bool, StoreError> {
        let removed = self.conn().execute(
            "DELETE FROM chat_restrictions WHERE channel_id = ?1 AND user_id = ?2",
            params![channel_id, user_id],
        )?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    #[test]
    fn restrictions_persist_replace_expire_and_lift() {
        let (dir, mut store) = Store::temporary();
        store.add_channel("stage", "").expect("channel");
        let troll = store
            .add_user("troll", "Troll", "hash", Role::Viewer)
            .expect("user");
        let room = store
            .chat_room("stage", 1000)
            .expect("room")
            .expect("exists");
        assert!(room.restrictions.is_empty());
        assert_eq!(room.owner, None);
        let timeout = Restriction {
            user_id: troll.id,
            until: Some(1060),
        };
        let found = store
            .restrict_chat_user(room.channel_id, timeout, troll.id, 1000)
            .expect("restrict");
        assert_eq!(found, Some(troll.clone()));
        assert_eq!(
            store
                .chat_room("stage", 1059)
                .expect("room")
                .expect("exists")
                .restrictions,
            vec![timeout]
        );
        // Expired timeouts are not loaded.
        assert!(store
            .chat_room("stage", 1060)
            .expect("room")
            .expect("exists")
            .restrictions
            .is_empty());
        // A ban replaces the timeout, and survives reopening the file.
        let ban = Restriction {
            user_id: troll.id,
            until: None,
        };
        store
            .restrict_chat_user(room.channel_id, ban, troll.id, 1001)
            .expect("ban");
        drop(store);
        let mut store = Store::open_in(dir.path()).expect("reopen");
        assert_eq!(
            store
                .chat_room("stage", 9999)
                .expect("room")
                .expect("exists")
                .restrictions,
            vec![ban]
        );
        assert!(store
            .lift_chat_restriction(room.channel_id, troll.id)
            .expect("lift"));
        assert!(!store
            .lift_chat_restriction(room.channel_id, troll.id)
            .expect("lift again"));
        let nobody = Restriction {
            user_id: 424_242,
            until: None,
        };
        assert_eq!(
            store
                .restrict_chat_user(room.channel_id, nobody, troll.id, 1)
                .expect("unknown user"),
            None
        );
        assert_eq!(store.chat_room("ghost", 0).expect("room"), None);
    }
}
