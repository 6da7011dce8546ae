//! The venue this box serves, and onboarding: the first visitor with the setup code names
//! the venue and becomes its admin, once. Both happen in one write, so two visitors racing
//! to onboard cannot both win.

use super::users::{validate_nickname, Role, User};
use super::{Store, StoreError};
use rusqlite::OptionalExtension;
use serde::Serialize;

/// What the page shows as the box's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Venue {
    pub name: String,
    pub onboarded_at: String,
}

/// Why onboarding did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OnboardingRefused {
    #[error("this box is already set up; log in instead")]
    AlreadyDone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub fn venue(&self) -> Result<Option<Venue>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT name, onboarded_at FROM venue", [], |row| {
                Ok(Venue {
                    name: row.get(0)?,
                    onboarded_at: row.get(1)?,
                })
            })
            .optional()?)
    }

    /// Whether onboarding is still open: no venue named and no admin account yet (an
    /// operator who made an admin with the CLI has set the box up already).
    pub fn onboarding_open(&self) -> Result<bool, StoreError> {
        let done: bool = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM venue) OR EXISTS (SELECT 1 FROM users WHERE role = 'admin')",
            [],
            |row| row.get(0),
        )?;
        Ok(!done)
    }

    /// Names the venue and creates its admin; refused once either exists. Run it as a
    /// [`super::StoreHandle::write`], whose savepoint makes the two inserts one.
    pub fn onboard(
        &mut self,
        venue_name: &str,
        username: &str,
        password_hash: &str,
    ) -> Result<(Venue, User), OnboardingRefused> {
        let name = validate_venue_name(venue_name)?;
        if !self.onboarding_open()? {
            return Err(OnboardingRefused::AlreadyDone);
        }
        let nickname = validate_nickname(username.trim())?;
        let admin = self.add_user(username, &nickname, password_hash, Role::Admin)?;
        let onboarded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.conn()
            .execute(
                "INSERT INTO venue (id, name, onboarded_at) VALUES (1, ?1, ?2)",
                (&name, &onboarded_at),
            )
            .map_err(StoreError::from)?;
        Ok((Venue { name, onboarded_at }, admin))
    }
}

impl Store {
    /// Renames the venue (the console); names it if onboarding never did.
    pub fn rename_venue(&mut self, name: &str) -> Result<Venue, StoreError> {
        let name = validate_venue_name(name)?;
        self.conn().execute(
            "INSERT INTO venue (id, name, onboarded_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            rusqlite::params![name, super::ledger::now()],
        )?;
        self.venue()?
            .ok_or(StoreError::CommitFailed("the venue vanished".into()))
    }
}

fn validate_venue_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    let invalid = |reason| StoreError::Invalid {
        field: "venue name",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > 60 {
        return Err(invalid("use at most 60 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("control characters are not allowed"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onboarding_names_the_venue_and_makes_one_admin_once() {
        let (_dir, mut store) = Store::temporary();
        assert!(store.onboarding_open().expect("open"));
        assert!(matches!(
            store.onboard("  ", "boss", "hash"),
            Err(OnboardingRefused::Store(StoreError::Invalid { .. }))
        ));
        let (venue, admin) = store.onboard("Club Neko", "boss", "hash").expect("onboard");
        assert_eq!(venue.name, "Club Neko");
        assert_eq!(admin.role, Role::Admin);
        assert_eq!(store.venue().expect("venue"), Some(venue));
        assert!(!store.onboarding_open().expect("open"));
        assert!(matches!(
            store.onboard("Other", "thief", "hash"),
            Err(OnboardingRefused::AlreadyDone)
        ));
    }

    #[test]
    fn an_admin_made_with_the_cli_closes_onboarding() {
        let (_dir, mut store) = Store::temporary();
        store
            .add_user("ops", "ops", "hash", Role::Admin)
            .expect("admin");
        assert!(!store.onboarding_open().expect("open"));
    }
}
