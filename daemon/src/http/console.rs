//! The venue's console over HTTP (`/api/admin/…`, admins only): people and roles,
//! channels, Kakao Pay and the catalog, orders, the ledger check and the accounting export,
//! settings and restart, the box's health, and the audit log.
//!
//! Every handler calls one function of [`crate::console`] (the CLI and fleet commands call
//! the same one) and then does what only the running daemon can: refuse a changed
//! account's tokens at once, stop a live publish, switch Kakao Pay's client.

use super::{ApiError, ApiJson, AppState, CurrentUser};
use crate::config::console::{Applies, SETTINGS};
use crate::config::{Config, Product};
use crate::console::{self, Actor, SettingsError};
use crate::store::{Role, StoreError};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// What the console keeps: the config as the console last left it (the file, flags and
/// drop-in), changed one request at a time.
pub struct ConsoleState {
    pub config: tokio::sync::Mutex<Config>,
}

/// An admin's request: their claims and who they are in the audit log.
pub struct Admin {
    actor: Actor,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CurrentUser(claims) = CurrentUser::from_request_parts(parts, state).await?;
        if claims.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the venue's admins use the console",
            ));
        }
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
        let name = if claims.name.is_empty() {
            format!("user {}", claims.sub)
        } else {
            claims.name.clone()
        };
        Ok(Admin {
            actor: Actor { name, address },
        })
    }
}

/// The console's refusals, with a code the page can act on.
fn refused(error: StoreError) -> ApiError {
    match error {
        StoreError::LastAdmin(_) => {
            ApiError::new(StatusCode::CONFLICT, "last_admin", error.to_string())
        }
        StoreError::ChannelHasDonations(_) => ApiError::new(
            StatusCode::CONFLICT,
            "channel_has_donations",
            error.to_string(),
        ),
        StoreError::NoSuchUser(_) | StoreError::NoSuchChannel(_) => {
            ApiError::not_found(error.to_string())
        }
        StoreError::Invalid { .. } | StoreError::InvalidSlug(_) => {
            ApiError::bad_request(error.to_string())
        }
        other => other.into(),
    }
}

fn settings_refused(error: SettingsError) -> ApiError {
    match error {
        // The same words `commeowd check-config` prints for the same values.
        SettingsError::Config(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_setting", e.to_string())
        }
        SettingsError::Write(..) => {
            tracing::error!(error = %error, "console: cannot write settings");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage",
                error.to_string(),
            )
        }
    }
}

/// Runs a console action in a store write, with its audit row.
async fn act<R: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut crate::store::Store) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, ApiError> {
    state.store.write(work).await.map_err(refused)
}

// ---- People ----

#[derive(Debug, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /api/admin/users?q=`: accounts matching `q` (username or nickname), newest first.
pub async fn users(
    State(state): State<AppState>,
    _: Admin,
    Query(search): Query<Search>,
) -> Result<Json<Vec<crate::store::Account>>, ApiError> {
    let q = search.q.chars().take(64).collect::<String>();
    Ok(Json(state.store.read(move |s| s.accounts(&q, 500)).await?))
}

/// The account changed: its open sessions learn at once (their tokens are refused as
/// stale, the page refreshes and sees the new role, or nothing if disabled).
async fn account_changed(state: &AppState, user_id: i64, ended: &[String]) {
    for family in ended {
        state.auth.revoke(family);
    }
    match state
        .store
        .read(move |s| s.account_changed_at(user_id))
        .await
    {
        Ok(Some(at)) => state.auth.account_changed(user_id, at),
        Ok(None) => {}
        // The daemon's follower of account changes will catch it within seconds.
        Err(e) => tracing::warn!(error = %e, "cannot read the account's change time"),
    }
}

#[derive(Debug, Deserialize)]
pub struct RoleChange {
    role: String,
}

/// `POST /api/admin/users/<name>/role {role}`.
pub async fn set_role(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<RoleChange>,
) -> Result<Json<Value>, ApiError> {
    let role = Role::from_name(&change.role)
        .ok_or_else(|| ApiError::bad_request("role must be viewer, streamer or admin"))?;
    let user = act(&state, move |s| console::set_role(s, &actor, &name, role)).await?;
    account_changed(&state, user.id, &[]).await;
    Ok(Json(json!({ "user": user })))
}

#[derive(Debug, Deserialize)]
pub struct DisabledChange {
    disabled: bool,
}

/// `POST /api/admin/users/<name>/disabled {disabled}`: disabling ends its sessions, its
/// tokens stop working at once, and its chat sockets may no longer speak.
pub async fn set_disabled(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<DisabledChange>,
) -> Result<Json<Value>, ApiError> {
    let (user, ended) = act(&state, move |s| {
        console::set_disabled(s, &actor, &name, change.disabled)
    })
    .await?;
    account_changed(&state, user.id, &ended).await;
    Ok(Json(
        json!({ "user": user, "disabled": change.disabled, "sessions_ended": ended.len() }),
    ))
}

/// `POST /api/admin/users/<name>/reset-code`: a one-time code, shown this once, that the
/// person types with a new password on the log-in page.
pub async fn reset_code(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (user, code) = act(&state, move |s| console::reset_code(s, &actor, &name)).await?;
    Ok(Json(json!({
        "user": user.username,
        "code": code,
        "valid_hours": console::RESET_CODE_HOURS,
    })))
}

#[derive(Debug, Deserialize)]
pub struct GrantRequest {
    points: i64,
    reason: String,
}

/// `POST /api/admin/users/<name>/grant {points, reason}`: the CLI's `wallet grant`.
pub async fn grant(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<GrantRequest>,
) -> Result<Json<crate::store::Wallet>, ApiError> {
    let wallet = act(&state, move |s| {
        console::grant(s, &actor, &name, request.points, &request.reason)
    })
    .await?;
    Ok(Json(wallet))
}

// ---- Channels ----

/// `GET /api/admin/channels`: every channel with its owner, live state, viewers and
/// ingest bitrate.
pub async fn channels(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<Value>>, ApiError> {
    let rows = state.store.read(|s| s.channels_for_console()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|(channel, owner)| {
                let live = state.broadcasts.get(&channel.slug).filter(|b| b.is_live());
                json!({
                    "slug": channel.slug,
                    "title": channel.title,
                    "created_at": channel.created_at,
                    "owner": owner,
                    "live": live.is_some(),
                    "viewers": state.chat.viewers(&channel.slug),
                    "bitrate_kbps": live.map(|b| b.health().bitrate_kbps_10s),
                })
            })
            .collect(),
    ))
}

/// `POST /api/admin/channels/<slug>/stop`: ends the live publish now (OBS may reconnect
/// with the same key: rotate it to keep them off).
pub async fn stop(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = state.broadcasts.get(&slug).is_some_and(|b| b.is_live());
    if !live {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_live",
            format!("channel `{slug}` is not live"),
        ));
    }
    state.broadcasts.stop(&slug);
    let target = slug.clone();
    act(&state, move |s| {
        console::record(s, &actor, "stop_publish", &target, "")
    })
    .await?;
    Ok(Json(json!({ "slug": slug, "stopped": true })))
}

/// `POST /api/admin/channels/<slug>/rotate`: a new key, shown once; a publish with the
/// old one ends.
pub async fn rotate(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<super::channels::KeyAnswer>, ApiError> {
    let name = slug.clone();
    let key = act(&state, move |s| console::rotate_key(s, &actor, &name)).await?;
    state.broadcasts.stop(&slug);
    Ok(Json(super::channels::key_answer(
        &state, &headers, slug, &key,
    )))
}

#[derive(Debug, Deserialize)]
pub struct OwnerChange {
    username: String,
}

/// `POST /api/admin/channels/<slug>/owner {username}`: gives the channel to a streamer.
pub async fn give(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(slug): Path<String>,
    ApiJson(change): ApiJson<OwnerChange>,
) -> Result<Json<Value>, ApiError> {
    let name = slug.clone();
    let owner = act(&state, move |s| {
        console::give_channel(s, &actor, &name, &change.username)
    })
    .await?;
    Ok(Json(json!({ "slug": slug, "owner": owner.username })))
}

/// `DELETE /api/admin/channels/<slug>`: refused (409) while it has donations.
pub async fn remove(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = slug.clone();
    act(&state, move |s| console::remove_channel(s, &actor, &name)).await?;
    state.broadcasts.stop(&slug);
    Ok(StatusCode::NO_CONTENT)
}

// ---- Money ----

/// `GET /api/admin/kakao-pay`: the setup as the page shows it. The secret key is never in
/// it: only whether one is set.
pub async fn kakao_pay(State(state): State<AppState>, _: Admin) -> Json<Value> {
    let config = state.console.config.lock().await;
    let k = &config.kakao_pay;
    Json(json!({
        "enabled": state.payments.enabled(),
        "cid": k.cid,
        "base_url": k.base_url,
        "secret_key_set": k.secret_key_file.is_some(),
        "products": state.payments.products(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct KakaoSetup {
    cid: String,
    base_url: String,
    /// Pasted once; absent or empty keeps the key already set.
    #[serde(default)]
    secret_key: Option<String>,
}

/// Makes the Kakao Pay client the config says and puts it (and the catalog) in place.
fn switch_payments(state: &AppState, config: &Config) -> Result<(), ApiError> {
    let client = crate::payments::Payments::client(&config.kakao_pay)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_setting", format!("{e:#}")))?;
    state
        .payments
        .reconfigure(client, config.kakao_pay.products.clone());
    Ok(())
}

/// `PUT /api/admin/kakao-pay {cid, base_url, secret_key?}`: the key is written by the
/// daemon to a file only it can read and never shown again; top-ups switch on at once.
pub async fn set_kakao_pay(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    ApiJson(setup): ApiJson<KakaoSetup>,
) -> Result<Json<Value>, ApiError> {
    let mut config = state.console.config.lock().await;
    let current = config.clone();
    let new_key = setup
        .secret_key
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty());
    let (cid, base_url) = (setup.cid.clone(), setup.base_url.clone());
    let changed = tokio::task::spawn_blocking(move || {
        console::set_kakao_pay(
            &current,
            &setup.cid,
            &setup.base_url,
            setup.secret_key.as_deref(),
        )
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(settings_refused)?;
    switch_payments(&state, &changed)?;
    *config = changed;
    let detail = format!(
        "cid {cid}, {base_url}{}",
        if new_key { ", new secret key" } else { "" }
    );
    act(&state, move |s| {
        console::record(s, &actor, "kakao_pay", "setup", &detail)
    })
    .await?;
    Ok(Json(json!({ "enabled": state.payments.enabled() })))
}

/// `POST /api/admin/kakao-pay/check`: calls Kakao Pay's `ready` and says what came back.
pub async fn check_kakao_pay(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    match state.payments.check(&format!("http://{host}")).await {
        Ok(said) => Json(json!({ "ok": true, "message": said })),
        Err(error) => Json(json!({ "ok": false, "message": error.to_string() })),
    }
}

/// `PUT /api/admin/kakao-pay/products [{id, points, price_krw}]`: the catalog, live.
pub async fn set_products(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    ApiJson(products): ApiJson<Vec<Product>>,
) -> Result<Json<Vec<Product>>, ApiError> {
    let mut config = state.console.config.lock().await;
    let current = config.clone();
    let detail = products
        .iter()
        .map(|p| format!("{}: {} points for {} won", p.id, p.points, p.price_krw))
        .collect::<Vec<_>>()
        .join("; ");
    let changed = tokio::task::spawn_blocking(move || console::set_products(&current, &products))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(settings_refused)?;
    switch_payments(&state, &changed)?;
    let products = changed.kakao_pay.products.clone();
    *config = changed;
    act(&state, move |s| {
        console::record(s, &actor, "products", "catalog", &detail)
    })
    .await?;
    Ok(Json(products))
}

/// `GET /api/admin/orders`: the newest 200 Kakao Pay orders, any state.
pub async fn orders(State(state): State<AppState>, _: Admin) -> Result<Json<Vec<Value>>, ApiError> {
    let orders = state.store.read(|s| s.recent_orders(200)).await?;
    Ok(Json(
        orders
            .into_iter()
            .map(|(order, buyer)| {
                let mut value = serde_json::to_value(&order).unwrap_or_default();
                value["user"] = json!(buyer);
                value
            })
            .collect(),
    ))
}

/// `POST /api/admin/ledger/check`: `commeowd wallet check`'s function.
pub async fn ledger_check(
    State(state): State<AppState>,
    Admin { actor }: Admin,
) -> Result<Json<Value>, ApiError> {
    let problems = state.store.read(console::ledger_problems).await?;
    let detail = if problems.is_empty() {
        "balances".to_string()
    } else {
        format!("{} problems", problems.len())
    };
    act(&state, move |s| {
        console::record(s, &actor, "ledger_check", "ledger", &detail)
    })
    .await?;
    let totals = state.store.read(|s| s.ledger_totals()).await?;
    Ok(Json(json!({
        "balanced": problems.is_empty(),
        "problems": problems,
        "totals": totals.into_iter().map(|(kind, sum)| json!({ "account": kind, "balance": sum })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
pub struct Range {
    from: String,
    to: String,
}

/// `GET /api/admin/export.csv?from=YYYY-MM-DD&to=YYYY-MM-DD` (both days included, UTC).
pub async fn export(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    Query(range): Query<Range>,
) -> Result<impl IntoResponse, ApiError> {
    let (from, to) = (range.from.clone(), range.to.clone());
    let csv = state
        .store
        .read(move |s| console::money_csv(s, &from, &to))
        .await
        .map_err(refused)?;
    let detail = format!("{} to {}", range.from, range.to);
    act(&state, move |s| {
        console::record(s, &actor, "export", "money", &detail)
    })
    .await?;
    let name = format!(
        "attachment; filename=\"commeow-{}-{}.csv\"",
        range.from, range.to
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        csv,
    ))
}

// ---- Settings ----

/// `GET /api/admin/settings`: each key the console may set, its value now, whether it
/// applies live or at restart, the venue's name, and whether a restart is possible here.
pub async fn settings(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let config = state.console.config.lock().await.clone();
    let venue = state.store.read(|s| s.venue()).await?;
    let table = toml::Table::try_from(SettingsView(&config)).unwrap_or_default();
    let value_of = |key: &str| -> Value {
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        table
            .get(section)
            .and_then(|t| t.get(name))
            .map_or(Value::Null, |v| match v {
                toml::Value::String(s) => json!(s),
                toml::Value::Integer(i) => json!(i),
                toml::Value::Float(f) => json!(f),
                toml::Value::Boolean(b) => json!(b),
                other => json!(other.to_string()),
            })
    };
    Ok(Json(json!({
        "venue_name": venue.map(|v| v.name),
        "settings": SETTINGS.iter().map(|s| json!({
            "key": s.key, "kind": s.kind, "applies": s.applies, "value": value_of(s.key),
        })).collect::<Vec<_>>(),
        "restart_available": crate::system::under_systemd(),
    })))
}

/// The settings' current values, as TOML would spell them.
struct SettingsView<'a>(&'a Config);

impl serde::Serialize for SettingsView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let enabled = match c.transcode.enabled {
            crate::config::TranscodeSwitch::Auto => json!("auto"),
            crate::config::TranscodeSwitch::On => json!(true),
            crate::config::TranscodeSwitch::Off => json!(false),
        };
        json!({
            "chat": { "max_chars": c.chat.max_chars, "rate_messages": c.chat.rate_messages,
                      "rate_seconds": c.chat.rate_seconds, "history": c.chat.history },
            "points": { "donation_min": c.points.donation_min, "donation_max": c.points.donation_max,
                        "message_max_chars": c.points.message_max_chars },
            "hls": { "target_duration": c.hls.target_duration, "part_target": c.hls.part_target },
            "channels": { "per_streamer": c.channels.per_streamer },
            "transcode": { "enabled": enabled },
        })
        .serialize(serializer)
    }
}

#[derive(Debug, Deserialize)]
pub struct SettingsChange {
    #[serde(default)]
    venue_name: Option<String>,
    /// `key → text`; an empty text goes back to the file's value or the default.
    #[serde(default)]
    values: std::collections::BTreeMap<String, String>,
}

/// `PUT /api/admin/settings {venue_name?, values}`: all or nothing, checked as
/// `check-config` checks; the venue's name applies at once, the rest at restart.
pub async fn set_settings(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<Json<Value>, ApiError> {
    let mut config = state.console.config.lock().await;
    let changes: Vec<(String, String)> = change.values.into_iter().collect();
    let mut restart = false;
    if !changes.is_empty() {
        // Checked in full before the venue's name changes: nothing is half-applied.
        let current = config.clone();
        let asked = changes.clone();
        let changed = tokio::task::spawn_blocking(move || console::set_settings(&current, &asked))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(settings_refused)?;
        *config = changed;
        restart = SETTINGS
            .iter()
            .any(|s| s.applies == Applies::AtRestart && changes.iter().any(|(k, _)| k == s.key));
    }
    let detail = changes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let name = change.venue_name;
    act(&state, move |s| {
        if let Some(name) = &name {
            console::rename_venue(s, &actor, name)?;
        }
        if !detail.is_empty() {
            console::record(s, &actor, "settings", "config", &detail)?;
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "restart_needed": restart })))
}

/// `POST /api/admin/restart`: shuts down cleanly (publishes end with EXT-X-ENDLIST) and
/// exits with the status the unit restarts on. Only under systemd, which starts it again.
pub async fn restart(
    State(state): State<AppState>,
    Admin { actor }: Admin,
) -> Result<StatusCode, ApiError> {
    if !crate::system::under_systemd() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_supervisor",
            "this daemon is not run by systemd, so nothing would start it again: restart it where you started it",
        ));
    }
    act(&state, move |s| {
        console::record(s, &actor, "restart", "daemon", "")
    })
    .await?;
    tracing::warn!("restart asked from the console");
    crate::system::request_restart();
    state.shutdown.cancel();
    Ok(StatusCode::ACCEPTED)
}

// ---- Fleet enrollment ----

#[derive(Debug, Deserialize)]
pub struct CsrRequest {
    box_id: String,
}

/// `POST /api/admin/fleet/csr {box_id}`: the box makes its key (once; it never leaves the
/// box) and a certificate signing request naming `box_id`, for the fleet admin to sign.
pub async fn fleet_csr(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    ApiJson(request): ApiJson<CsrRequest>,
) -> Result<Json<Value>, ApiError> {
    let config = state.console.config.lock().await.clone();
    let box_id = request.box_id.clone();
    let csr = tokio::task::spawn_blocking(move || console::fleet_csr(&config, &box_id))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(settings_refused)?;
    act(&state, move |s| {
        console::record(s, &actor, "fleet_csr", &request.box_id, "")
    })
    .await?;
    Ok(Json(json!({ "csr": csr })))
}

#[derive(Debug, Deserialize)]
pub struct EnrollRequest {
    /// A bundle as `fleet-certs DIR bundle BOX_ID BROKER` prints it, or the parts below.
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    broker: String,
    #[serde(default)]
    box_id: String,
    #[serde(default)]
    ca_pem: String,
    #[serde(default)]
    cert_pem: String,
}

/// `PUT /api/admin/fleet`: the signed certificate and CA (for the key this box made), or a
/// bundle with its own key. Checked, written, and on at the next restart.
pub async fn enroll_fleet(
    State(state): State<AppState>,
    Admin { actor }: Admin,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<Json<Value>, ApiError> {
    let enrollment = match request
        .bundle
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        Some(bundle) => console::Enrollment::from_bundle(bundle).map_err(settings_refused)?,
        None => console::Enrollment {
            broker: request.broker,
            box_id: request.box_id,
            ca_pem: request.ca_pem,
            cert_pem: request.cert_pem,
            key_pem: None,
        },
    };
    let mut config = state.console.config.lock().await;
    let current = config.clone();
    let detail = format!("{} via {}", enrollment.box_id, enrollment.broker);
    let box_id = enrollment.box_id.clone();
    let changed = tokio::task::spawn_blocking(move || console::enroll_fleet(&current, &enrollment))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(settings_refused)?;
    *config = changed;
    act(&state, move |s| {
        console::record(s, &actor, "fleet_enroll", &box_id, &detail)
    })
    .await?;
    Ok(Json(
        json!({ "restart_needed": true, "restart_available": crate::system::under_systemd() }),
    ))
}

// ---- Health and audit ----

/// `GET /api/admin/health`: version, uptime, CPU, memory, temperature and throttling,
/// disk, bytes written, addresses and OBS's URL, live channels, the fleet relay, and the
/// newest warnings and errors.
pub async fn health(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let data_dir = state.console.config.lock().await.data_dir();
    let facts = tokio::task::spawn_blocking(move || crate::system::facts::facts(&data_dir))
        .await
        .map_err(|_| ApiError::internal())?;
    let fleet = state
        .fleet
        .as_ref()
        .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let config = state.console.config.lock().await.fleet.clone();
    Ok(Json(json!({
        "box": facts,
        "obs_server": super::channels::obs_server(&state, &headers),
        "live_channels": state.broadcasts.live_slugs(),
        "viewers": state.chat.total_viewers(),
        "fleet": {
            "enabled": config.enabled,
            "broker": config.broker,
            "box_id": config.box_id,
            "relay": fleet,
        },
        "logs": crate::system::facts::recent_logs(),
    })))
}

/// `GET /api/admin/audit`: the newest 200 admin actions.
pub async fn audit(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Vec<crate::store::AuditEntry>>, ApiError> {
    Ok(Json(state.store.read(|s| s.audit_log(200)).await?))
}
