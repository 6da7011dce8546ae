//! HTTP: the router, the error shape, and the handlers by area (`hls` for players, the JSON
//! API, chat sockets, the web app).
//!
//! `app(state)` builds the router, so tests can drive it without a socket. Errors are JSON
//! `{"error": {"code", "message"}}` with a fitting status, built in one place ([`ApiError`]).

use crate::hls::Broadcasts;
use crate::store::{StoreError, StoreHandle};
use crate::throttle::Throttle;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

mod auth;
mod channels;
mod chat;
mod console;
mod hls;
mod metrics;
mod onboarding;
mod payments;
pub mod server;
mod system;
mod wallet;
mod web;
mod whep;

pub use auth::CurrentUser;
pub use console::ConsoleState;
pub use metrics::install as install_metrics;
pub use onboarding::SetupCode;

#[derive(Clone)]
pub struct AppState {
    pub store: StoreHandle,
    pub broadcasts: Arc<Broadcasts>,
    pub auth: Arc<crate::auth::Authority>,
    /// Failed logins (and setup codes) per client address, and per account at an address.
    pub login_by_address: Arc<Throttle<IpAddr>>,
    pub login_by_account: Arc<Throttle<(String, IpAddr)>>,
    /// Accounts made per client address.
    pub signup_by_address: Arc<Throttle<IpAddr>>,
    /// Password hashing, bounded in threads and so in memory.
    pub passwords: Arc<crate::auth::Passwords>,
    /// Live sessions one account may keep.
    pub sessions_per_user: usize,
    /// Channels one streamer may own.
    pub channels_per_streamer: usize,
    /// Where OBS connects: the RTMP port, and the host to name when the request's own
    /// `Host` does not say.
    pub rtmp_port: u16,
    pub rtmp_host: String,
    /// The HLS segment target: the keyframe interval OBS should use.
    pub segment_seconds: f64,
    pub chat: Arc<crate::chat::Chat>,
    pub points: crate::config::PointsConfig,
    pub payments: Arc<crate::payments::Payments>,
    /// A fresh box's one-time onboarding code, if it has one.
    pub setup_code: Option<SetupCode>,
    /// Long-lived connections (chat sockets) hold a token of this, so shutdown waits for
    /// their goodbyes; they watch `shutdown` to say them.
    pub tracker: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The fleet relay's state, when it runs.
    pub fleet: Option<crate::fleet::HealthWatch>,
    /// The transcoding ladder: what the probe found, and the live rungs.
    pub ladder: Arc<crate::media::ladder::Plan>,
    /// The venue's console: the config it changes.
    pub console: Arc<ConsoleState>,
    /// Places for blocking-reload requests held at once (`hls.max_held_requests`).
    pub held_requests: Arc<tokio::sync::Semaphore>,
    pub held_requests_max: usize,
    /// The recorder `/metrics` renders (`None`: not recording), and the LAN's scrape token.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub metrics_token: Option<String>,
    /// What the watchdog watches, for `/metrics`.
    pub health: Arc<crate::system::Health>,
    /// WebRTC viewers (WHEP).
    pub webrtc: Arc<crate::webrtc::Webrtc>,
}

pub fn app(state: AppState) -> Router {
    // Streams are public on the venue network: any page may play them (a venue's own
    // site, a signage screen), as with any HLS server.
    let hls = Router::new()
        .route("/hls/{slug}/{master}", get(hls::master_playlist))
        .route("/hls/{slug}/{packaging}/{file}", get(hls::media_file))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::HEAD]),
        );
    // WHEP is public as the playlists are; a player on another origin reads `Location`.
    let whep = Router::new()
        .route("/whep/{slug}", post(whep::offer))
        .route(
            "/whep/{slug}/{id}",
            axum::routing::delete(whep::end).patch(whep::patch),
        )
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::POST, Method::DELETE, Method::PATCH])
                .allow_headers([header::CONTENT_TYPE])
                .expose_headers([header::LOCATION]),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/channels", get(channels::list).post(channels::create))
        .route(
            "/api/channels/{slug}/stream-key/rotate",
            post(channels::rotate_key),
        )
        .route("/api/channels/{slug}/chat", get(chat::connect))
        .route("/api/channels/{slug}/health", get(channels::health))
        .route("/api/channels/{slug}/notices", get(channels::notices))
        .route(
            "/api/channels/{slug}/donations",
            post(wallet::donate).get(wallet::recent),
        )
        .route("/api/wallet", get(wallet::wallet))
        .route("/api/payments/products", get(payments::products))
        .route("/api/payments/kakao/ready", post(payments::ready))
        .route("/api/payments/kakao/approve", get(payments::approve))
        .route("/api/payments/kakao/cancel", get(payments::payer_returned))
        .route("/api/payments/kakao/fail", get(payments::payer_returned))
        .route("/api/payments/{order_id}", get(payments::order))
        .route("/api/auth/signup", post(auth::signup))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/me", get(auth::me))
        .route(
            "/api/onboarding",
            get(onboarding::status).post(onboarding::onboard),
        )
        .route("/api/obs", get(channels::obs_settings))
        .route("/api/system/transcode", get(system::transcode))
        .route("/api/auth/reset", post(auth::reset_password))
        .merge(console_routes())
        .route("/assets/{name}", get(web::asset))
        .merge(hls)
        .merge(whep)
        .fallback(fallback)
        // Every request body the API takes is a small JSON object; a larger one is refused
        // (413) before it is read into memory.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Whatever a response is, a browser must not guess another type for it, and an
        // answer that is not a page (JSON, media) may run nothing and be framed nowhere.
        // Pages set their own policy (see `web`), which these leave in place.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NO_CONTENT_POLICY),
        ))
        .with_state(state)
}

/// The console's API: admins only (each handler takes [`console::Admin`]).
fn console_routes() -> Router<AppState> {
    use axum::routing::put;
    Router::new()
        .route("/api/admin/users", get(console::users))
        .route("/api/admin/users/{name}/role", post(console::set_role))
        .route(
            "/api/admin/users/{name}/disabled",
            post(console::set_disabled),
        )
        .route(
            "/api/admin/users/{name}/reset-code",
            post(console::reset_code),
        )
        .route("/api/admin/users/{name}/grant", post(console::grant))
        .route("/api/admin/channels", get(console::channels))
        .route(
            "/api/admin/channels/{slug}",
            axum::routing::delete(console::remove),
        )
        .route("/api/admin/channels/{slug}/stop", post(console::stop))
        .route("/api/admin/channels/{slug}/rotate", post(console::rotate))
        .route("/api/admin/channels/{slug}/owner", post(console::give))
        .route(
            "/api/admin/kakao-pay",
            get(console::kakao_pay).put(console::set_kakao_pay),
        )
        .route("/api/admin/kakao-pay/check", post(console::check_kakao_pay))
        .route("/api/admin/kakao-pay/products", put(console::set_products))
        .route("/api/admin/orders", get(console::orders))
        .route("/api/admin/ledger/check", post(console::ledger_check))
        .route("/api/admin/export.csv", get(console::export))
        .route(
            "/api/admin/settings",
            get(console::settings).put(console::set_settings),
        )
        .route("/api/admin/restart", post(console::restart))
        .route("/api/admin/fleet/csr", post(console::fleet_csr))
        .route("/api/admin/fleet", put(console::enroll_fleet))
        .route("/api/admin/health", get(console::health))
        .route("/api/admin/audit", get(console::audit))
}

/// Largest request body, in bytes: a donation message or a sign-up is well under 2 KiB.
const MAX_BODY: usize = 16 * 1024;
/// The policy of every response that is not a page of the web app.
const NO_CONTENT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After` on a 429.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on the box",
        )
    }

    fn too_many_attempts(wait: Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many attempts from here; try again in {seconds} s"),
            )
        }
    }

    /// The password hashing threads are all taken: a `503` with `Retry-After`.
    fn busy(busy: crate::auth::Busy) -> ApiError {
        ApiError {
            retry_after: Some(busy.0.as_secs().max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", busy.to_string())
        }
    }
}

/// A JSON request body, or the API's error shape saying what is wrong with it: 400 for
/// bad JSON or fields, 413 past [`MAX_BODY`]. Every handler that takes a body takes this.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request bodies are at most {MAX_BODY} bytes"),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// Every JSON body the API takes, by type name. [`parse_body`] parses each as its route's
/// [`ApiJson`] does; the fuzzer (`daemon/fuzz`) goes in here, and a test keeps the list
/// whole.
#[doc(hidden)]
pub const BODY_KINDS: &[&str] = &[
    "CreateChannel",
    "CsrRequest",
    "DisabledChange",
    "DonateRequest",
    "EnrollRequest",
    "GrantRequest",
    "KakaoSetup",
    "LoginRequest",
    "OnboardRequest",
    "OwnerChange",
    "ReadyRequest",
    "RefreshRequest",
    "ResetRequest",
    "RoleChange",
    "SettingsChange",
    "SignupRequest",
    "Vec<Product>",
];

/// Parses `body` as the body of kind `kind` (one of [`BODY_KINDS`]) exactly as the route's
/// extractor does after its size and content-type checks (`axum::Json::from_bytes`), and
/// says whether it was taken. `None` for a kind not in the list.
#[doc(hidden)]
pub fn parse_body(kind: &str, body: &[u8]) -> Option<Result<(), String>> {
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(), String> {
        Json::<T>::from_bytes(body)
            .map(drop)
            .map_err(|e| e.body_text())
    }
    Some(match kind {
        "CreateChannel" => parse::<channels::CreateChannel>(body),
        "CsrRequest" => parse::<console::CsrRequest>(body),
        "DisabledChange" => parse::<console::DisabledChange>(body),
        "DonateRequest" => parse::<wallet::DonateRequest>(body),
        "EnrollRequest" => parse::<console::EnrollRequest>(body),
        "GrantRequest" => parse::<console::GrantRequest>(body),
        "KakaoSetup" => parse::<console::KakaoSetup>(body),
        "LoginRequest" => parse::<auth::LoginRequest>(body),
        "OnboardRequest" => parse::<onboarding::OnboardRequest>(body),
        "OwnerChange" => parse::<console::OwnerChange>(body),
        "ReadyRequest" => parse::<payments::ReadyRequest>(body),
        "RefreshRequest" => parse::<auth::RefreshRequest>(body),
        "ResetRequest" => parse::<auth::ResetRequest>(body),
        "RoleChange" => parse::<console::RoleChange>(body),
        "SettingsChange" => parse::<console::SettingsChange>(body),
        "SignupRequest" => parse::<auth::SignupRequest>(body),
        "Vec<Product>" => parse::<Vec<crate::config::Product>>(body),
        _ => return None,
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if matches!(e, StoreError::StorageFull) {
            tracing::error!("the storage is full: a write was refused (nothing was recorded)");
            return ApiError {
                retry_after: Some(30),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the box's storage is full: nothing was recorded; try again later",
                )
            };
        }
        tracing::error!(error = %e, "store error while answering a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database is unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Unknown API and media paths are JSON 404s; any other GET is a page of the web app.
async fn fallback(method: Method, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let api = path.starts_with("/api/")
        || path.starts_with("/hls/")
        || path.starts_with("/whep/")
        || path.starts_with("/assets/");
    // A file name (`/favicon.ico`, `/robots.txt`) is not a page of the app.
    let file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    if method == Method::GET && !api && !file {
        return web::page(&headers);
    }
    ApiError::not_found("no such page").into_response()
}

/// `ok`, and with the fleet relay on, its state: a box whose outbox grows past its bound
/// says so here as well as in its status and logs.
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    let mut health = serde_json::json!({ "status": "ok" });
    if let Some(fleet) = &state.fleet {
        let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner()).clone();
        health["fleet"] = serde_json::to_value(fleet).unwrap_or_default();
    }
    Json(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer reaches every body through [`BODY_KINDS`]: a handler taking a new
    /// `ApiJson<T>` must add `T` there, or this fails.
    #[test]
    fn every_json_body_is_listed_for_the_fuzzer() {
        let sources = [
            include_str!("auth.rs"),
            include_str!("channels.rs"),
            include_str!("chat.rs"),
            include_str!("console.rs"),
            include_str!("hls.rs"),
            include_str!("metrics.rs"),
            include_str!("onboarding.rs"),
            include_str!("payments.rs"),
            include_str!("server.rs"),
            include_str!("system.rs"),
            include_str!("wallet.rs"),
            include_str!("web.rs"),
        ];
        let mut taken: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.split("ApiJson<").skip(1))
            .filter_map(|rest| {
                // The type up to the `>` that closes `ApiJson<`.
                let mut depth = 0usize;
                let end = rest.char_indices().find(|&(_, c)| match c {
                    '<' => {
                        depth += 1;
                        false
                    }
                    '>' if depth == 0 => true,
                    '>' => {
                        depth -= 1;
                        false
                    }
                    _ => false,
                })?;
                Some(&rest[..end.0])
            })
            .collect();
        taken.sort_unstable();
        taken.dedup();
        let mut listed = BODY_KINDS.to_vec();
        listed.sort_unstable();
        assert_eq!(taken, listed);
        for kind in BODY_KINDS {
            assert!(parse_body(kind, b"{").is_some_and(|r| r.is_err()), "{kind}");
        }
        assert_eq!(
            parse_body("DonateRequest", br#"{"amount": 1000, "message": "hi"}"#),
            Some(Ok(()))
        );
    }
}
