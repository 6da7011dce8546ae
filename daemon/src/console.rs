//! The venue operator's actions, one function each, for every caller: the console's HTTP
//! API and the operator's CLI call the same function, so a rule (the last admin stays, a
//! channel with donations stays) lives here once. Each action writes its audit log row and
//! `admin_action` outbox event in the same transaction as its change.
//!
//! These run inside a store transaction (`StoreHandle::write` in the daemon,
//! `Store::in_transaction` in the CLI) and return what the daemon must also do in memory
//! (sessions to end at once); the settings functions write the console's drop-in.

use crate::config::console::{self as drop_in, KAKAO_SECRET_FILE};
use crate::config::{Config, ConfigError, Product};
use crate::store::{Role, Store, StoreError, StreamKey, User, Wallet};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Who acts, and from where: an admin's username and their client's address, or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub address: String,
}

impl Actor {
    /// The operator at the box's shell, named by their Unix user.
    pub fn cli() -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "root".into());
        Actor {
            name: format!("cli:{user}"),
            address: "local".into(),
        }
    }

    fn audit(
        &self,
        store: &Store,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        store.audit(&self.name, &self.address, action, target, detail)
    }
}

/// How long a reset code opens its account.
pub const RESET_CODE_HOURS: i64 = 24;

/// Changes an account's role. The last admin who can log in keeps the role.
pub fn set_role(
    store: &mut Store,
    actor: &Actor,
    username: &str,
    role: Role,
) -> Result<User, StoreError> {
    let user = store
        .user_by_name(username)?
        .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
    if user.role == role {
        return Ok(user);
    }
    let active = store.account_disabled(user.id)? == Some(false);
    if user.role == Role::Admin && active && store.active_admins()? <= 1 {
        return Err(StoreError::LastAdmin(user.username));
    }
    let changed = store.set_role(&user.username, role)?;
    store.mark_account_changed(user.id)?;
    actor.audit(
        store,
        "set_role",
        &user.username,
        &format!("{} → {}", user.role.as_str(), role.as_str()),
    )?;
    Ok(changed)
}

/// Disables (or enables) an account. Disabling ends its sessions: their ids come back so
/// the daemon refuses their access tokens at once. The last admin stays enabled.
pub fn set_disabled(
    store: &mut Store,
    actor: &Actor,
    username: &str,
    disabled: bool,
) -> Result<(User, Vec<String>), StoreError> {
    let user = store
        .user_by_name(username)?
        .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
    if disabled
        && user.role == Role::Admin
        && store.account_disabled(user.id)? == Some(false)
        && store.active_admins()? <= 1
    {
        return Err(StoreError::LastAdmin(user.username));
    }
    let (user, ended) = store.set_disabled(&user.username, disabled)?;
    let action = if disabled { "disable" } else { "enable" };
    let detail = if disabled {
        format!("{} sessions ended", ended.len())
    } else {
        String::new()
    };
    actor.audit(store, action, &user.username, &detail)?;
    Ok((user, ended))
}

/// The SHA-256 the store keeps of a reset code (spelled any case, with or without dashes).
pub fn reset_code_hash(code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::digest(normal.as_bytes()).to_vec()
}

/// A new one-time reset code for an account (60 random bits, `XXXX-XXXX-XXXX` from an
/// alphabet without look-alikes), shown once to the operator who hands it over; valid for
/// [`RESET_CODE_HOURS`]. The audit log says one was made, never what it is.
pub fn reset_code(
    store: &mut Store,
    actor: &Actor,
    username: &str,
) -> Result<(User, String), StoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let groups: Vec<String> = (0..3)
        .map(|_| {
            (0..4)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        })
        .collect();
    let code = groups.join("-");
    let expires = chrono::Utc::now().timestamp() + RESET_CODE_HOURS * 3600;
    let user = store.set_reset_code(username, &reset_code_hash(&code), expires)?;
    actor.audit(
        store,
        "reset_code",
        &user.username,
        &format!("valid {RESET_CODE_HOURS} h"),
    )?;
    Ok((user, code))
}

/// Gives a user points from the venue's promotions account, with a reason: the ledger's
/// grant (and its `grant` event) and the audit row, in one transaction.
pub fn grant(
    store: &mut Store,
    actor: &Actor,
    username: &str,
    points: i64,
    reason: &str,
) -> Result<Wallet, StoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(StoreError::Invalid {
            field: "reason",
            reason: "say why in 1-200 characters",
        });
    }
    let wallet = store.grant(username, points, reason)?;
    actor.audit(
        store,
        "grant",
        username,
        &format!("{points} points: {reason}"),
    )?;
    Ok(wallet)
}

/// Gives a channel to another streamer (or admin).
pub fn give_channel(
    store: &mut Store,
    actor: &Actor,
    slug: &str,
    username: &str,
) -> Result<User, StoreError> {
    let owner = store.give_channel(slug, username)?;
    actor.audit(
        store,
        "give_channel",
        slug,
        &format!("to {}", owner.username),
    )?;
    Ok(owner)
}

/// Removes a channel: refused while it has donations (the ledger refers to them), as the
/// fleet's provisioning rule says.
pub fn remove_channel(store: &mut Store, actor: &Actor, slug: &str) -> Result<(), StoreError> {
    store.remove_channel(slug)?;
    actor.audit(store, "remove_channel", slug, "")
}

/// A channel's new stream key (the old one stops working; a publish using it ends).
pub fn rotate_key(store: &mut Store, actor: &Actor, slug: &str) -> Result<StreamKey, StoreError> {
    let key = store.rotate_stream_key(slug)?;
    actor.audit(store, "rotate_key", slug, "")?;
    Ok(key)
}

/// Renames the venue (the page's header and title).
pub fn rename_venue(store: &mut Store, actor: &Actor, name: &str) -> Result<(), StoreError> {
    let venue = store.rename_venue(name)?;
    actor.audit(store, "rename_venue", &venue.name, "")
}

/// Records an action whose effect is not in the store (a stopped publish, a setting, the
/// Kakao Pay setup), after it took effect.
pub fn record(
    store: &mut Store,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    actor.audit(store, action, target, detail)
}

/// The ledger's check (`commeowd wallet check`): what is wrong, or nothing.
pub fn ledger_problems(store: &Store) -> Result<Vec<String>, StoreError> {
    store.ledger_problems()
}

/// Donations, top-ups and grants in `[from, to)` (dates `YYYY-MM-DD`, UTC) as CSV for the
/// venue's accounting, with a total line per kind.
pub fn money_csv(store: &Store, from: &str, to: &str) -> Result<String, StoreError> {
    let day = |text: &str, field: &'static str| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| StoreError::Invalid {
            field,
            reason: "use a date like 2026-12-31",
        })
    };
    let (start, end) = (day(from, "from")?, day(to, "to")?);
    // `to` is the last day included.
    let end = end.succ_opt().unwrap_or(end);
    let rows = store.money_movements(&start.to_string(), &end.to_string())?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| StoreError::CommitFailed(format!("csv: {e}"));
    out.write_record([
        "at",
        "kind",
        "transaction_id",
        "from",
        "to",
        "points",
        "krw",
        "memo",
    ])
    .map_err(csv_error)?;
    let mut totals: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for row in &rows {
        let total = totals.entry(row.kind.clone()).or_default();
        total.0 += row.points;
        total.1 += row.krw;
        out.write_record([
            row.at.as_str(),
            &row.kind,
            &row.transaction_id.to_string(),
            &row.from,
            &row.to,
            &row.points.to_string(),
            &row.krw.to_string(),
            // A cell a spreadsheet would run as a formula is quoted as text.
            &spreadsheet_safe(&row.memo),
        ])
        .map_err(csv_error)?;
    }
    for (kind, (points, krw)) in totals {
        out.write_record([
            "total",
            &kind,
            "",
            "",
            "",
            &points.to_string(),
            &krw.to_string(),
            "",
        ])
        .map_err(csv_error)?;
    }
    let bytes = out
        .into_inner()
        .map_err(|e| StoreError::CommitFailed(format!("csv: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A donor's message can start with `=`, `+`, `-` or `@`: a spreadsheet opening the export
/// would take it for a formula. A leading apostrophe keeps it text (OWASP's advice).
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// Why the console's Kakao Pay or settings change was not made (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
}

/// Kakao Pay's setup from the console: the merchant CID, the API's base URL, and (when
/// given) the secret key, written by the daemon to a file only it can read
/// ([`KAKAO_SECRET_FILE`], 0600) and never shown again. Returns the new config; the
/// caller rebuilds the Kakao Pay client from it (top-ups switch on without a restart).
pub fn set_kakao_pay(
    config: &Config,
    cid: &str,
    base_url: &str,
    secret: Option<&str>,
) -> Result<Config, SettingsError> {
    let dir = config.data_dir();
    let secret_path = dir.join(KAKAO_SECRET_FILE);
    let secret = secret.map(str::trim).filter(|s| !s.is_empty());
    if let Some(secret) = secret {
        if secret.len() > 512 || secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError::Invalid {
                key: "kakao_pay.secret_key",
                message: "paste the secret key alone: no spaces, at most 512 characters".into(),
            }
            .into());
        }
    }
    let has_secret = secret.is_some() || secret_path.is_file();
    // The whole config is checked before anything is written: a refused change leaves
    // neither a new key nor a new drop-in behind.
    let check = |t: &mut toml::Table| {
        let kakao = t
            .entry("kakao_pay")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let kakao = kakao.as_table_mut().ok_or(ConfigError::Invalid {
            key: "kakao_pay",
            message: "the console's drop-in has no table here".into(),
        })?;
        kakao.insert("cid".into(), toml::Value::String(cid.trim().to_string()));
        kakao.insert(
            "base_url".into(),
            toml::Value::String(base_url.trim().to_string()),
        );
        if has_secret {
            kakao.insert(
                "secret_key_file".into(),
                toml::Value::String(secret_path.to_string_lossy().into_owned()),
            );
        }
        Ok(())
    };
    let change = config.plan_console(check)?;
    if let Some(secret) = secret {
        drop_in::write_atomically(&secret_path, secret.as_bytes(), 0o600)
            .map_err(|e| SettingsError::Write(secret_path.display().to_string(), e))?;
    }
    Ok(change.write()?)
}

/// The top-up catalog from the console: replaces the products (checked as the config file's
/// would be: ids unique, points and prices positive).
pub fn set_products(config: &Config, products: &[Product]) -> Result<Config, SettingsError> {
    let value = toml::Value::try_from(products).map_err(|e| ConfigError::Invalid {
        key: "kakao_pay.products",
        message: e.to_string(),
    })?;
    Ok(config.change_console(|t| {
        let kakao = t
            .entry("kakao_pay")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(kakao) = kakao.as_table_mut() {
            kakao.insert("products".into(), value);
        }
        Ok(())
    })?)
}

/// Tuning keys from the console (`key → text`; empty text: back to the default), all or
/// nothing.
pub fn set_settings(
    config: &Config,
    changes: &[(String, String)],
) -> Result<Config, SettingsError> {
    Ok(config.change_console(|t| {
        for (key, text) in changes {
            drop_in::set_text(t, key, text)?;
        }
        Ok(())
    })?)
}

/// Where the console keeps the box's fleet identity, in the data directory (0700): the key
/// it made (`box.key`, never leaves the box), and the certificate and CA it was given.
pub const FLEET_DIR: &str = "fleet";

fn fleet_dir(config: &Config) -> Result<std::path::PathBuf, SettingsError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = config.data_dir().join(FLEET_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| SettingsError::Write(dir.display().to_string(), e))?;
    Ok(dir)
}

fn fleet_refused(message: impl Into<String>) -> SettingsError {
    SettingsError::Config(ConfigError::Invalid {
        key: "fleet",
        message: message.into(),
    })
}

/// Enrollment, first half: the box's key (made here once, P-256, kept in [`FLEET_DIR`]) and
/// a certificate signing request naming `box_id`, for the fleet admin to sign
/// (`fleet-certs DIR sign BOX_ID box.csr`). The key never leaves the box.
pub fn fleet_csr(config: &Config, box_id: &str) -> Result<String, SettingsError> {
    fleet_proto::BoxId::new(box_id)
        .map_err(|_| fleet_refused("a box id is 1 to 64 of a-z, 0-9 and -"))?;
    let dir = fleet_dir(config)?;
    let key_path = dir.join("box.key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| fleet_refused(format!("the box's key: {e}")))?,
        Err(_) => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| fleet_refused(format!("cannot make a key: {e}")))?;
            drop_in::write_atomically(&key_path, key.serialize_pem().as_bytes(), 0o600)
                .map_err(|e| SettingsError::Write(key_path.display().to_string(), e))?;
            key
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, box_id);
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| fleet_refused(format!("cannot make the request: {e}")))?;
    Ok(csr)
}

/// What enrollment takes: the broker and box id, the fleet's CA, the box's certificate,
/// and its key when it comes in a bundle (else the key [`fleet_csr`] made).
#[derive(Debug, Clone, Default)]
pub struct Enrollment {
    pub broker: String,
    pub box_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

impl Enrollment {
    /// Reads a bundle as `fleet-certs DIR bundle BOX_ID BROKER` prints it: the `[fleet]`
    /// lines (`broker = "…"`, `box_id = "…"`), then the CA, the box's certificate and its
    /// key as PEM blocks. The certificate is the one whose CN is the box id.
    pub fn from_bundle(text: &str) -> Result<Enrollment, SettingsError> {
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key))
                .filter_map(|rest| rest.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .next()
        };
        let (broker, box_id) = match (value("broker"), value("box_id")) {
            (Some(b), Some(i)) => (b, i),
            _ => return Err(fleet_refused("the bundle names no broker or box_id")),
        };
        let mut ca = Vec::new();
        let mut cert = None;
        let mut key = None;
        for block in pem_blocks(text) {
            if block.contains("PRIVATE KEY-----") {
                key = Some(block);
            } else if common_name(&block).as_deref() == Some(box_id.as_str()) {
                cert = Some(block);
            } else {
                ca.push(block);
            }
        }
        Ok(Enrollment {
            broker,
            box_id,
            ca_pem: ca.join(""),
            cert_pem: cert
                .ok_or_else(|| fleet_refused("the bundle has no certificate for its box id"))?,
            key_pem: Some(key.ok_or_else(|| fleet_refused("the bundle has no private key"))?),
        })
    }
}

/// The PEM blocks of a text, each with its BEGIN and END lines.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

fn common_name(cert_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(name)
}

/// Enrollment, second half: checks that the certificate names `box_id`, was signed by the
/// CA and holds the box's public key, writes the files to [`FLEET_DIR`], and turns the
/// relay on in the console's drop-in (checked as `check-config` checks, broker TLS files
/// loaded). The relay starts with the daemon: this applies at restart.
pub fn enroll_fleet(config: &Config, enrollment: &Enrollment) -> Result<Config, SettingsError> {
    use x509_parser::prelude::FromDer;
    let box_id = enrollment.box_id.trim();
    fleet_proto::BoxId::new(box_id)
        .map_err(|_| fleet_refused("a box id is 1 to 64 of a-z, 0-9 and -"))?;
    let dir = fleet_dir(config)?;
    let key_pem = match &enrollment.key_pem {
        Some(pem) => pem.clone(),
        None => std::fs::read_to_string(dir.join("box.key")).map_err(|_| {
            fleet_refused("make the key and request first (the box has no key yet)")
        })?,
    };
    let key =
        rcgen::KeyPair::from_pem(&key_pem).map_err(|e| fleet_refused(format!("the key: {e}")))?;
    let (_, cert_block) = x509_parser::pem::parse_x509_pem(enrollment.cert_pem.trim().as_bytes())
        .map_err(|_| fleet_refused("the certificate is not a PEM certificate"))?;
    let cert = cert_block
        .parse_x509()
        .map_err(|e| fleet_refused(format!("the certificate: {e}")))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|n| n.as_str().ok());
    if name != Some(box_id) {
        return Err(fleet_refused(format!(
            "the certificate is for `{}`, not this box's id `{box_id}`",
            name.unwrap_or("?")
        )));
    }
    if cert.public_key().raw != key.public_key_der().as_slice() {
        return Err(fleet_refused(
            "the certificate does not hold this box's key: sign the request this box made",
        ));
    }
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(enrollment.ca_pem.trim().as_bytes())
        .map_err(|_| fleet_refused("the CA is not a PEM certificate"))?;
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&ca_block.contents)
        .map_err(|e| fleet_refused(format!("the CA: {e}")))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| fleet_refused("the certificate was not signed by this CA"))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        drop_in::write_atomically(&path, text.as_bytes(), 0o600)
            .map_err(|e| SettingsError::Write(path.display().to_string(), e))
            .map(|()| path)
    };
    let ca_file = write("ca.pem", &enrollment.ca_pem)?;
    let cert_file = write("box.pem", &enrollment.cert_pem)?;
    let key_file = if enrollment.key_pem.is_some() {
        write("box.key", &key_pem)?
    } else {
        dir.join("box.key")
    };
    let (broker, id) = (enrollment.broker.trim().to_string(), box_id.to_string());
    let changed = config.change_console(|t| {
        let fleet = t
            .entry("fleet")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let fleet = fleet.as_table_mut().ok_or(ConfigError::Invalid {
            key: "fleet",
            message: "the console's drop-in has no table here".into(),
        })?;
        let path = |p: &std::path::Path| toml::Value::String(p.to_string_lossy().into_owned());
        fleet.insert("enabled".into(), toml::Value::Boolean(true));
        fleet.insert("broker".into(), toml::Value::String(broker));
        fleet.insert("box_id".into(), toml::Value::String(id));
        fleet.insert("ca_file".into(), path(&ca_file));
        fleet.insert("cert_file".into(), path(&cert_file));
        fleet.insert("key_file".into(), path(&key_file));
        Ok(())
    })?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_admin() -> (tempfile::TempDir, Store, Actor) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open_in(dir.path()).expect("open");
        store
            .add_user("boss", "Boss", "x", Role::Admin)
            .expect("admin");
        store
            .add_user("vee", "Vee", "x", Role::Viewer)
            .expect("viewer");
        let actor = Actor {
            name: "boss".into(),
            address: "192.0.2.7".into(),
        };
        (dir, store, actor)
    }

    #[test]
    fn the_last_admin_can_neither_be_demoted_nor_disabled() {
        let (_dir, mut store, actor) = store_with_admin();
        let demote = store.in_transaction(|s| set_role(s, &actor, "boss", Role::Viewer));
        assert!(
            matches!(demote, Err(StoreError::LastAdmin(_))),
            "{demote:?}"
        );
        let disable = store.in_transaction(|s| set_disabled(s, &actor, "boss", true));
        assert!(
            matches!(disable, Err(StoreError::LastAdmin(_))),
            "{disable:?}"
        );
        // With a second admin, the first may step down.
        store
            .in_transaction(|s| set_role(s, &actor, "vee", Role::Admin))
            .expect("promote");
        store
            .in_transaction(|s| set_role(s, &actor, "boss", Role::Streamer))
            .expect("step down");
        // A disabled admin does not count: the one left stays.
        let last = store.in_transaction(|s| set_disabled(s, &actor, "vee", true));
        assert!(matches!(last, Err(StoreError::LastAdmin(_))), "{last:?}");
        let log = store.audit_log(10).expect("log");
        assert_eq!(
            log.iter()
                .map(|e| (e.action.as_str(), e.target.as_str(), e.detail.as_str()))
                .collect::<Vec<_>>(),
            [
                ("set_role", "boss", "admin → streamer"),
                ("set_role", "vee", "viewer → admin")
            ],
            "refused actions leave no row"
        );
        assert!(log
            .iter()
            .all(|e| e.actor == "boss" && e.address == "192.0.2.7"));
    }

    #[test]
    fn every_action_is_an_outbox_event_too() {
        let (_dir, mut store, actor) = store_with_admin();
        store
            .in_transaction(|s| grant(s, &actor, "vee", 500, "welcome"))
            .expect("grant");
        let events = store.pending_events(0, 10).expect("events");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["grant", "admin_action"]);
        assert_eq!(events[1].payload["detail"], "500 points: welcome");
        let empty = store.in_transaction(|s| grant(s, &actor, "vee", 5, "  "));
        assert!(matches!(
            empty,
            Err(StoreError::Invalid {
                field: "reason",
                ..
            })
        ));
    }

    #[test]
    fn reset_codes_are_spelled_forgivingly_and_the_log_never_holds_one() {
        let (_dir, mut store, actor) = store_with_admin();
        let (_, code) = store
            .in_transaction(|s| reset_code(s, &actor, "vee"))
            .expect("code");
        assert_eq!(code.len(), 14);
        let typed = code.to_lowercase().replace('-', " ");
        let redeemed = store
            .redeem_reset_code(
                "vee",
                &reset_code_hash(&typed),
                "new-hash",
                chrono::Utc::now().timestamp(),
            )
            .expect("redeem");
        assert!(redeemed.is_some());
        let log = store.audit_log(10).expect("log");
        assert!(log
            .iter()
            .all(|e| !e.detail.contains(&code) && !e.target.contains(&code)));
    }

    #[test]
    fn the_export_quotes_formulas_and_totals_each_kind() {
        let (_dir, mut store, actor) = store_with_admin();
        store
            .in_transaction(|s| grant(s, &actor, "vee", 700, "=HYPERLINK(\"x\")"))
            .expect("grant");
        let today = chrono::Utc::now().date_naive().to_string();
        let csv = store
            .in_transaction(|s| money_csv(s, &today, &today))
            .expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "at,kind,transaction_id,from,to,points,krw,memo");
        assert!(
            lines[1].contains(",grant,") && lines[1].contains(",venue,vee,700,0,"),
            "{csv}"
        );
        assert!(lines[1].ends_with("\"'=HYPERLINK(\"\"x\"\")\""), "{csv}");
        assert_eq!(lines[2], "total,grant,,,,700,0,");
        assert!(money_csv(&store, "yesterday", &today).is_err());
    }
}
