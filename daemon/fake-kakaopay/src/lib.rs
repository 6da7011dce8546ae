//! A stand-in for Kakao Pay's single-payment API, for tests on loopback.
//!
//! It follows the published API (developers.kakaopay.com, "단건 결제"): `POST
//! /online/v1/payment/{ready,approve,cancel,order}` with `Authorization: SECRET_KEY <key>`
//! and JSON bodies, the same field names in the answers, errors as HTTP 4xx with
//! `{error_code, error_message, extras}`, and a tid that lives 15 minutes from `ready`. The
//! payer's side is a small page at `next_redirect_{pc,mobile}_url` with three buttons (pay,
//! quit, fail) that redirect the browser to the merchant's approval (with a `pg_token`),
//! cancel or fail URL, as Kakao Pay's own pages do.
//!
//! Tests tell it to misbehave ([`Misbehaviour`]): report another total from approve (an
//! amount tampered on the wire), fail approve with an error code (−780), answer slowly,
//! do the work but never answer (a lost response), or be down (503, nothing done). Tests
//! in Rust use [`FakeKakaoPay`]; other tests (a browser) run the `fake-kakaopay` binary and
//! use its `/__fake/*` control endpoints.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Kakao Pay's test merchant code, accepted besides the one the fake is started with.
pub const TEST_CID: &str = "TC0ONETIME";
/// How long a tid may wait for approval after `ready`.
pub const TID_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What the fake should do wrong, until told otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Misbehaviour {
    /// Approve charges the real amount but reports this `amount.total`.
    pub approve_reports_total: Option<i64>,
    /// Approve fails with this error code (−780: approval failure); the payment fails.
    pub approve_error: Option<i64>,
    /// Every API answer waits this long first.
    pub delay_ms: u64,
    /// Endpoints (`ready`, `approve`, `cancel`, `order`) that do their work but never
    /// answer: the response is lost on the way back.
    pub drop_responses: Vec<String>,
    /// The API answers 503 with an HTML body and does nothing.
    pub down: bool,
}

/// One call the merchant made, as received.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub endpoint: String,
    pub authorization: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct Payment {
    tid: String,
    cid: String,
    partner_order_id: String,
    partner_user_id: String,
    item_name: String,
    quantity: i64,
    total: i64,
    tax_free: i64,
    approval_url: String,
    cancel_url: String,
    fail_url: String,
    status: &'static str,
    pg_token: Option<String>,
    ready_at: Instant,
    created_at: String,
    aid: Option<String>,
    approved_at: Option<String>,
    canceled: i64,
    canceled_at: Option<String>,
}

impl Payment {
    fn actions(&self) -> Vec<Value> {
        let mut actions = Vec::new();
        if let (Some(aid), Some(at)) = (&self.aid, &self.approved_at) {
            actions.push(json!({"aid": aid, "approved_at": at, "amount": self.total,
                                "point_amount": 0, "discount_amount": 0,
                                "green_deposit": 0, "payment_action_type": "PAYMENT"}));
        }
        if let Some(at) = &self.canceled_at {
            actions.push(json!({"aid": format!("C{}", self.tid), "approved_at": at,
                                "amount": self.canceled, "payment_action_type": "CANCEL"}));
        }
        actions
    }

    fn amount(total: i64, tax_free: i64) -> Value {
        // VAT is a tenth of the taxable part, rounded as Kakao Pay does (half up).
        let vat = ((total - tax_free) as f64 / 11.0).round() as i64;
        json!({"total": total, "tax_free": tax_free, "vat": vat, "point": 0, "discount": 0,
               "green_deposit": 0})
    }

    fn order_view(&self) -> Value {
        let available = self.total - self.canceled;
        let approved = self.approved_at.is_some();
        json!({
            "tid": self.tid, "cid": self.cid, "status": self.status,
            "partner_order_id": self.partner_order_id, "partner_user_id": self.partner_user_id,
            "payment_method_type": if approved { json!("MONEY") } else { Value::Null },
            "amount": Payment::amount(self.total, self.tax_free),
            "canceled_amount": Payment::amount(self.canceled, 0),
            "cancel_available_amount":
                Payment::amount(if approved { available } else { 0 }, 0),
            "item_name": self.item_name, "quantity": self.quantity,
            "created_at": self.created_at, "approved_at": self.approved_at,
            "canceled_at": self.canceled_at,
            "payment_action_details": self.actions(),
        })
    }
}

#[derive(Default)]
struct Inner {
    payments: HashMap<String, Payment>,
    misbehaviour: Misbehaviour,
    calls: Vec<Call>,
}

#[derive(Clone)]
struct Shared {
    secret_key: String,
    cid: String,
    base_url: String,
    tid_lifetime: Duration,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn new(
        listener: &tokio::net::TcpListener,
        secret_key: &str,
        tid_lifetime: Duration,
    ) -> std::io::Result<Shared> {
        Ok(Shared {
            secret_key: secret_key.to_string(),
            cid: TEST_CID.to_string(),
            base_url: format!("http://{}", listener.local_addr()?),
            tid_lifetime,
            inner: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake on a loopback port, with its own runtime; stops when dropped.
pub struct FakeKakaoPay {
    shared: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl FakeKakaoPay {
    /// Starts a fake that accepts `secret_key` on an ephemeral loopback port.
    pub fn start(secret_key: &str) -> anyhow::Result<FakeKakaoPay> {
        FakeKakaoPay::start_with(secret_key, TID_LIFETIME)
    }

    /// As [`FakeKakaoPay::start`], with a shorter tid lifetime (to test expiry).
    pub fn start_with(secret_key: &str, tid_lifetime: Duration) -> anyhow::Result<FakeKakaoPay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let shared = Shared::new(&listener, secret_key, tid_lifetime)?;
        let app = router(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(FakeKakaoPay {
            shared,
            _runtime: runtime,
        })
    }

    /// Where the merchant points `kakao_pay.base_url`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        self.shared.lock().misbehaviour = misbehaviour;
    }

    /// Calls made to an endpoint (`ready`, `approve`, `cancel`, `order`), oldest first.
    pub fn calls(&self, endpoint: &str) -> Vec<Call> {
        let inner = self.shared.lock();
        inner
            .calls
            .iter()
            .filter(|c| c.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// A payment as the order API would describe it.
    pub fn payment(&self, tid: &str) -> Option<Value> {
        self.shared
            .lock()
            .payments
            .get(tid)
            .map(Payment::order_view)
    }
}

/// Serves a fake with the full tid lifetime on `listener` until the task is dropped (the
/// binary).
pub async fn serve(listener: tokio::net::TcpListener, secret_key: &str) -> anyhow::Result<()> {
    let shared = Shared::new(&listener, secret_key, TID_LIFETIME)?;
    axum::serve(listener, router(shared)).await?;
    Ok(())
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/online/v1/payment/{endpoint}", post(api))
        .route("/mockup/{tid}/{page}", get(payer_page))
        .route("/mockup/{tid}/action/{action}", post(payer_action))
        .route("/__fake/misbehaviour", put(set_misbehaviour))
        .route("/__fake/payments/{tid}", get(fake_payment))
        .with_state(shared)
}

/// A Kakao Pay error answer: `{error_code, error_message, extras}` with a 4xx.
struct Refusal {
    status: StatusCode,
    code: i64,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.code, "error_message": self.message, "extras": {}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: i64, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_string(),
    }
}

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn random_id(prefix: char) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let digits: String = (0..19)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    format!("{prefix}{digits}")
}

async fn api(
    State(shared): State<Shared>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let misbehaviour = shared.lock().misbehaviour.clone();
    if misbehaviour.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(misbehaviour.delay_ms)).await;
    }
    if misbehaviour.down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed: Result<Value, _> = serde_json::from_str(&body);
    shared.lock().calls.push(Call {
        endpoint: endpoint.clone(),
        authorization: authorization.clone(),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
    });
    if authorization.strip_prefix("SECRET_KEY ") != Some(shared.secret_key.as_str()) {
        return error(StatusCode::UNAUTHORIZED, -401, "Invalid SECRET_KEY").into_response();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(Value::Object(body)) = parsed.map_err(|_| ()) else {
        return error(StatusCode::BAD_REQUEST, -2, "invalid request body").into_response();
    };
    if !is_json {
        return error(
            StatusCode::BAD_REQUEST,
            -2,
            "Content-Type must be application/json",
        )
        .into_response();
    }
    let answer = match endpoint.as_str() {
        "ready" => ready(&shared, &body),
        "approve" => approve(&shared, &body, &misbehaviour),
        "cancel" => cancel(&shared, &body),
        "order" => order(&shared, &body),
        _ => Err(error(StatusCode::NOT_FOUND, -1, "no such API")),
    };
    if misbehaviour.drop_responses.contains(&endpoint) {
        // The work is done; the answer never arrives.
        std::future::pending::<()>().await;
    }
    match answer {
        Ok(value) => Json(value).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

type Body = serde_json::Map<String, Value>;

fn text<'a>(body: &'a Body, field: &str) -> Result<&'a str, Refusal> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            -2,
            &format!("{field} is required"),
        )),
    }
}

fn number(body: &Body, field: &str) -> Result<i64, Refusal> {
    body.get(field).and_then(Value::as_i64).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            -2,
            &format!("{field} must be a number"),
        )
    })
}

fn check_cid(shared: &Shared, body: &Body) -> Result<String, Refusal> {
    let cid = text(body, "cid")?;
    if cid != shared.cid {
        return Err(error(StatusCode::BAD_REQUEST, -2, "invalid cid"));
    }
    Ok(cid.to_string())
}

fn ready(shared: &Shared, body: &Body) -> Result<Value, Refusal> {
    let cid = check_cid(shared, body)?;
    let urls = ["approval_url", "cancel_url", "fail_url"].map(|f| text(body, f));
    let [approval_url, cancel_url, fail_url] = urls;
    let (approval_url, cancel_url, fail_url) = (approval_url?, cancel_url?, fail_url?);
    for url in [approval_url, cancel_url, fail_url] {
        if url.len() > 255 || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(error(StatusCode::BAD_REQUEST, -2, "invalid url"));
        }
    }
    let total = number(body, "total_amount")?;
    let tax_free = number(body, "tax_free_amount")?;
    let quantity = number(body, "quantity")?;
    if total <= 0 || tax_free < 0 || tax_free > total || quantity <= 0 {
        return Err(error(StatusCode::BAD_REQUEST, -2, "invalid amount"));
    }
    let tid = random_id('T');
    let created_at = now();
    let payment = Payment {
        tid: tid.clone(),
        cid,
        partner_order_id: text(body, "partner_order_id")?.to_string(),
        partner_user_id: text(body, "partner_user_id")?.to_string(),
        item_name: text(body, "item_name")?.to_string(),
        quantity,
        total,
        tax_free,
        approval_url: approval_url.to_string(),
        cancel_url: cancel_url.to_string(),
        fail_url: fail_url.to_string(),
        status: "READY",
        pg_token: None,
        ready_at: Instant::now(),
        created_at: created_at.clone(),
        aid: None,
        approved_at: None,
        canceled: 0,
        canceled_at: None,
    };
    shared.lock().payments.insert(tid.clone(), payment);
    let page = format!("{}/mockup/{tid}", shared.base_url);
    Ok(json!({
        "tid": tid,
        "next_redirect_app_url": format!("{page}/aInfo"),
        "next_redirect_mobile_url": format!("{page}/mInfo"),
        "next_redirect_pc_url": format!("{page}/info"),
        "android_app_scheme": format!("kakaotalk://kakaopay/pg?url={page}/order"),
        "ios_app_scheme": format!("kakaotalk://kakaopay/pg?url={page}/order"),
        "created_at": created_at,
    }))
}

/// The payment a request names, if its cid and tid are known.
fn payment_mut<'a>(
    inner: &'a mut Inner,
    shared: &Shared,
    body: &Body,
) -> Result<&'a mut Payment, Refusal> {
    check_cid(shared, body)?;
    let tid = text(body, "tid")?;
    inner
        .payments
        .get_mut(tid)
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, -2, "invalid tid"))
}

fn approve(shared: &Shared, body: &Body, misbehaviour: &Misbehaviour) -> Result<Value, Refusal> {
    let mut inner = shared.lock();
    let payment = payment_mut(&mut inner, shared, body)?;
    if payment.status == "SUCCESS_PAYMENT" || payment.status == "CANCEL_PAYMENT" {
        return Err(error(
            StatusCode::BAD_REQUEST,
            -702,
            "payment is already done",
        ));
    }
    if payment.ready_at.elapsed() > shared.tid_lifetime {
        payment.status = "QUIT_PAYMENT";
        return Err(error(
            StatusCode::BAD_REQUEST,
            -780,
            "approval failure: tid expired",
        ));
    }
    let token = text(body, "pg_token")?;
    if payment.pg_token.as_deref() != Some(token) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            -780,
            "approval failure: invalid pg_token",
        ));
    }
    if text(body, "partner_order_id")? != payment.partner_order_id
        || text(body, "partner_user_id")? != payment.partner_user_id
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            -780,
            "approval failure: partner_order_id or partner_user_id differs from ready",
        ));
    }
    if let Some(code) = misbehaviour.approve_error {
        payment.status = "FAIL_PAYMENT";
        return Err(error(StatusCode::BAD_REQUEST, code, "approval failure!"));
    }
    payment.status = "SUCCESS_PAYMENT";
    payment.aid = Some(random_id('A'));
    payment.approved_at = Some(now());
    let reported = misbehaviour.approve_reports_total.unwrap_or(payment.total);
    Ok(json!({
        "aid": payment.aid, "tid": payment.tid, "cid": payment.cid,
        "partner_order_id": payment.partner_order_id,
        "partner_user_id": payment.partner_user_id,
        "payment_method_type": "MONEY",
        "amount": Payment::amount(reported, payment.tax_free.min(reported)),
        "item_name": payment.item_name, "quantity": payment.quantity,
        "created_at": payment.created_at, "approved_at": payment.approved_at,
    }))
}

fn cancel(shared: &Shared, body: &Body) -> Result<Value, Refusal> {
    let mut inner = shared.lock();
    let payment = payment_mut(&mut inner, shared, body)?;
    let amount = number(body, "cancel_amount")?;
    let tax_free = number(body, "cancel_tax_free_amount")?;
    if payment.approved_at.is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            -2,
            "payment is not approved",
        ));
    }
    let available = payment.total - payment.canceled;
    if amount <= 0 || amount > available || tax_free < 0 || tax_free > amount {
        return Err(error(
            StatusCode::BAD_REQUEST,
            -2,
            "cancel_amount exceeds cancel_available_amount",
        ));
    }
    payment.canceled += amount;
    payment.canceled_at = Some(now());
    payment.status = if payment.canceled == payment.total {
        "CANCEL_PAYMENT"
    } else {
        "PART_CANCEL_PAYMENT"
    };
    let mut view = payment.order_view();
    if let Some(object) = view.as_object_mut() {
        object.insert(
            "approved_cancel_amount".into(),
            Payment::amount(amount, tax_free),
        );
    }
    Ok(view)
}

fn order(shared: &Shared, body: &Body) -> Result<Value, Refusal> {
    let mut inner = shared.lock();
    let payment = payment_mut(&mut inner, shared, body)?;
    let waiting = matches!(payment.status, "READY" | "AUTH_PASSWORD");
    if waiting && payment.ready_at.elapsed() > shared.tid_lifetime {
        payment.status = "QUIT_PAYMENT";
    }
    Ok(payment.order_view())
}

/// The payer's page: what the phone (or a PC's browser) shows at the redirect URL.
async fn payer_page(
    State(shared): State<Shared>,
    Path((tid, _page)): Path<(String, String)>,
) -> Response {
    let inner = shared.lock();
    let Some(payment) = inner.payments.get(&tid) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>결제 정보를 찾을 수 없습니다</p>"),
        )
            .into_response();
    };
    let name = html_escape(&payment.item_name);
    let total = payment.total;
    let status = payment.status;
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>카카오페이 (fake)</title>\
         <h1>{name}</h1><p id=amount>{total}원</p><p id=status>{status}</p>\
         <form method=post action=/mockup/{tid}/action/pay><button id=pay>결제하기</button></form>\
         <form method=post action=/mockup/{tid}/action/quit><button id=quit>취소</button></form>\
         <form method=post action=/mockup/{tid}/action/fail><button id=fail>실패</button></form>"
    ))
    .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The payer pressed a button: pay (the password step passes, a pg_token goes to the
/// approval URL), quit (cancel URL) or fail (fail URL).
async fn payer_action(
    State(shared): State<Shared>,
    Path((tid, action)): Path<(String, String)>,
) -> Response {
    let mut inner = shared.lock();
    let lifetime = shared.tid_lifetime;
    let Some(payment) = inner.payments.get_mut(&tid) else {
        return (StatusCode::NOT_FOUND, "no such payment").into_response();
    };
    if payment.status != "READY" || payment.ready_at.elapsed() > lifetime {
        return (
            StatusCode::CONFLICT,
            Html("<p>이미 처리되었거나 만료된 결제입니다</p>"),
        )
            .into_response();
    }
    let target = match action.as_str() {
        "pay" => {
            let token: String = random_id('P').chars().skip(1).collect();
            payment.status = "AUTH_PASSWORD";
            payment.pg_token = Some(token.clone());
            let joiner = if payment.approval_url.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{joiner}pg_token={token}", payment.approval_url)
        }
        "quit" => {
            payment.status = "QUIT_PAYMENT";
            payment.cancel_url.clone()
        }
        "fail" => {
            payment.status = "FAIL_AUTH_PASSWORD";
            payment.fail_url.clone()
        }
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    Redirect::to(&target).into_response()
}

async fn set_misbehaviour(
    State(shared): State<Shared>,
    Json(misbehaviour): Json<Misbehaviour>,
) -> StatusCode {
    shared.lock().misbehaviour = misbehaviour;
    StatusCode::NO_CONTENT
}

async fn fake_payment(State(shared): State<Shared>, Path(tid): Path<String>) -> Response {
    match shared.lock().payments.get(&tid) {
        Some(payment) => Json(payment.order_view()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
