//! The database schema: every migration, in order, each applied once
//! (`rusqlite_migration` keeps the version in SQLite's `user_version`). A migration is never
//! edited once it has shipped; a change is a new one at the end.

use rusqlite_migration::{Migrations, M};

/// Schema history. Append only: a released migration is never edited.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE channels (
            id              INTEGER PRIMARY KEY,
            slug            TEXT NOT NULL UNIQUE,
            title           TEXT NOT NULL,
            -- SHA-256 of the stream key: a leaked database leaks no usable key.
            stream_key_hash BLOB NOT NULL UNIQUE,
            created_at      TEXT NOT NULL
        ) STRICT;",
        ),
        M::up(
            "CREATE TABLE users (
            id            INTEGER PRIMARY KEY,
            username      TEXT NOT NULL UNIQUE,     -- lower case
            nickname      TEXT NOT NULL,
            password_hash TEXT NOT NULL,            -- argon2id, PHC string
            role          TEXT NOT NULL CHECK (role IN ('viewer', 'streamer', 'admin')),
            created_at    TEXT NOT NULL
        ) STRICT;
        -- One row per refresh token. Rotation marks the old one used and adds a new one to
        -- the same family; presenting a used one revokes the family (it was stolen).
        CREATE TABLE refresh_tokens (
            id         INTEGER PRIMARY KEY,
            token_hash BLOB NOT NULL UNIQUE,        -- SHA-256: the token itself is never stored
            family     TEXT NOT NULL,
            user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            expires_at INTEGER NOT NULL,            -- Unix seconds
            used_at    INTEGER,
            revoked    INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
        CREATE TABLE secrets (
            name  TEXT PRIMARY KEY,
            value BLOB NOT NULL
        ) STRICT;",
        ),
        // Channels created over the API belong to a streamer; the operator's have no owner.
        M::up(
            "ALTER TABLE channels ADD COLUMN owner_id INTEGER REFERENCES users (id) ON DELETE SET NULL;",
        ),
        // Chat bans and timeouts: a moderator's decision must survive a restart.
        M::up(
            "CREATE TABLE chat_restrictions (
            channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
            user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            until      INTEGER,                     -- Unix seconds; NULL: banned until lifted
            by_user    INTEGER REFERENCES users (id) ON DELETE SET NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (channel_id, user_id)
        ) STRICT;",
        ),
        // Points: a double-entry ledger (see ledger.rs), donations, and the outbox.
        M::up(
            "CREATE TABLE ledger_accounts (
            id      INTEGER PRIMARY KEY,
            kind    TEXT NOT NULL CHECK (kind IN ('wallet', 'earnings', 'promotions', 'kakao_pay')),
            user_id INTEGER REFERENCES users (id),  -- NULL for the box's system accounts
            balance INTEGER NOT NULL DEFAULT 0,
            -- Users' points never go negative; system accounts are sources and do.
            CHECK (user_id IS NULL OR balance >= 0),
            UNIQUE (kind, user_id)
        ) STRICT;
        CREATE UNIQUE INDEX ledger_system_accounts ON ledger_accounts (kind) WHERE user_id IS NULL;
        CREATE TABLE ledger_transactions (
            id         INTEGER PRIMARY KEY,
            kind       TEXT NOT NULL,               -- donation, grant, topup
            memo       TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) STRICT;
        -- Entries of one transaction sum to zero; an account's balance is the sum of its
        -- entries (kept in step by the same SQL transaction).
        CREATE TABLE ledger_entries (
            id             INTEGER PRIMARY KEY,
            transaction_id INTEGER NOT NULL REFERENCES ledger_transactions (id),
            account_id     INTEGER NOT NULL REFERENCES ledger_accounts (id),
            amount         INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX ledger_entries_account ON ledger_entries (account_id);
        CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
        CREATE TABLE donations (
            id              INTEGER PRIMARY KEY,
            transaction_id  INTEGER NOT NULL UNIQUE REFERENCES ledger_transactions (id),
            channel_id      INTEGER NOT NULL REFERENCES channels (id),
            donor_id        INTEGER NOT NULL REFERENCES users (id),
            amount          INTEGER NOT NULL CHECK (amount > 0),
            message         TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            created_at      TEXT NOT NULL,
            UNIQUE (donor_id, idempotency_key)
        ) STRICT;
        -- Events for the central side, in the order they happened; deleted once it has
        -- acknowledged them by event id.
        CREATE TABLE outbox (
            sequence   INTEGER PRIMARY KEY AUTOINCREMENT,  -- per box, never reused
            event_id   TEXT NOT NULL UNIQUE,
            type       TEXT NOT NULL,
            payload    TEXT NOT NULL,                      -- JSON
            created_at TEXT NOT NULL
        ) STRICT;",
        ),
        // Kakao Pay top-ups: one row per order, from `ready` to its final state.
        M::up(
            "CREATE TABLE payment_orders (
            id             TEXT PRIMARY KEY,        -- our partner_order_id
            user_id        INTEGER NOT NULL REFERENCES users (id),
            product_id     TEXT NOT NULL,
            points         INTEGER NOT NULL CHECK (points > 0),
            price_krw      INTEGER NOT NULL CHECK (price_krw > 0),  -- the catalog price at ready
            state          TEXT NOT NULL
                           CHECK (state IN ('pending', 'approved', 'rejected', 'canceled', 'failed')),
            tid            TEXT UNIQUE,             -- Kakao Pay's, once ready answered
            pg_token       TEXT,                    -- from the payer's return, kept to retry approve
            aid            TEXT,
            transaction_id INTEGER UNIQUE REFERENCES ledger_transactions (id),
            detail         TEXT NOT NULL DEFAULT '',
            created_at     TEXT NOT NULL,
            updated_at     TEXT NOT NULL
        ) STRICT;
        CREATE INDEX payment_orders_user ON payment_orders (user_id, created_at);",
        ),
        // Each account's entries as a chain (newest on the account, each entry naming the
        // one before) instead of an index by account: a donation then changes no page at
        // a place picked by its donor, which was a third of the write path's disk pages.
        M::up(
            "ALTER TABLE ledger_entries ADD COLUMN prev_entry_id INTEGER REFERENCES ledger_entries (id);
        ALTER TABLE ledger_accounts ADD COLUMN last_entry_id INTEGER REFERENCES ledger_entries (id);
        UPDATE ledger_entries SET prev_entry_id =
            (SELECT MAX(p.id) FROM ledger_entries p
             WHERE p.account_id = ledger_entries.account_id AND p.id < ledger_entries.id);
        UPDATE ledger_accounts SET last_entry_id =
            (SELECT MAX(e.id) FROM ledger_entries e WHERE e.account_id = ledger_accounts.id);
        DROP INDEX ledger_entries_account;",
        ),
        // Idempotency keys indexed key first: keys that grow with time (our page makes
        // them so, like UUIDv7) then land at the end of the index, where every donation's
        // page is the same page, instead of one page per donor. Random keys work as well.
        M::up(
            "CREATE TABLE donations_by_key (
            id              INTEGER PRIMARY KEY,
            transaction_id  INTEGER NOT NULL UNIQUE REFERENCES ledger_transactions (id),
            channel_id      INTEGER NOT NULL REFERENCES channels (id),
            donor_id        INTEGER NOT NULL REFERENCES users (id),
            amount          INTEGER NOT NULL CHECK (amount > 0),
            message         TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            created_at      TEXT NOT NULL,
            UNIQUE (idempotency_key, donor_id)
        ) STRICT;
        INSERT INTO donations_by_key SELECT * FROM donations;
        DROP TABLE donations;
        ALTER TABLE donations_by_key RENAME TO donations;",
        ),
        // The venue's name, set once by onboarding (the image's first visitor).
        M::up(
            "CREATE TABLE venue (
            id           INTEGER PRIMARY KEY CHECK (id = 1),
            name         TEXT NOT NULL,
            onboarded_at TEXT NOT NULL
        ) STRICT;",
        ),
        // The outbox becomes typed and versioned (store/outbox.rs): a `v` per event, the
        // `type` inside each payload too, and today's names for what was written before.
        M::up(
            "ALTER TABLE outbox ADD COLUMN v INTEGER NOT NULL DEFAULT 1;
        UPDATE outbox SET type = 'topup_approved' WHERE type = 'topup';
        UPDATE outbox SET type = 'topup_' || json_extract(payload, '$.state') WHERE type = 'payment';
        UPDATE outbox SET payload = json_set(payload, '$.type', type);",
        ),
        // The key a channel had before its last rotation, kept (hashed) only to tell a
        // streamer whose OBS still pushes it what happened, and when that was last seen.
        M::up(
            "ALTER TABLE channels ADD COLUMN previous_key_hash BLOB;
        ALTER TABLE channels ADD COLUMN previous_key_seen_at TEXT;
        CREATE INDEX channels_previous_key ON channels (previous_key_hash);",
        ),
        // Fleet commands run on this box, by id, with their result: a command delivered
        // again replays its result instead of acting twice. Written in the same
        // transaction as the command's effect.
        M::up(
            "CREATE TABLE fleet_commands (
            id      TEXT PRIMARY KEY,
            name    TEXT NOT NULL,
            status  TEXT NOT NULL,
            result  TEXT NOT NULL,
            done_at TEXT NOT NULL
        ) STRICT;",
        ),
        // The venue's console (admin pages): accounts an admin disabled, when each was last
        // seen and last changed (role, disabled: access tokens issued before that are
        // refused, so the change reaches open sessions at once), a one-time reset code, and
        // the audit log of every admin action.
        M::up(
            "ALTER TABLE users ADD COLUMN disabled_at TEXT;
        ALTER TABLE users ADD COLUMN last_seen_at TEXT;
        ALTER TABLE users ADD COLUMN changed_at_ms INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE users ADD COLUMN reset_code_hash BLOB;
        ALTER TABLE users ADD COLUMN reset_code_expires_at INTEGER;
        CREATE INDEX users_changed ON users (changed_at_ms);
        CREATE TABLE audit_log (
            id      INTEGER PRIMARY KEY,
            at      TEXT NOT NULL,
            actor   TEXT NOT NULL,                  -- a username, or `cli:<unix user>`
            address TEXT NOT NULL,                  -- the client's address, or `local`
            action  TEXT NOT NULL,
            target  TEXT NOT NULL,
            detail  TEXT NOT NULL
        ) STRICT;
        CREATE INDEX payment_orders_created ON payment_orders (created_at);",
        ),
    ])
}
