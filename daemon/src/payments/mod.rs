//! Kakao Pay top-ups: the box decides the price, and credits points only for what Kakao Pay
//! approved.
//!
//! The flow (single payment): the viewer picks a catalog product; [`Payments::start`] stores
//! a pending order at the catalog price and calls `ready`, whose redirect URLs the page
//! opens (or shows as a QR code to a phone). Kakao Pay sends the payer back to our approval
//! URL with a `pg_token`; [`Payments::approve`] calls `approve` and credits the points only
//! if the tid, order and user in the answer are this order's and `amount.total` is the
//! stored price. An approval that does not match is canceled at Kakao Pay at once.
//!
//! When an answer is lost (timeout, Kakao Pay down) nothing is decided on a guess: the order
//! stays pending with its pg_token, and the next look at it (the page polling, or the
//! sweeper) asks Kakao Pay's order API what really happened. Cancel and fail returns are
//! also checked with the order API, so a forged link cannot end an order mid-payment.

pub mod kakao;

use crate::config::{KakaoPayConfig, Product};
use crate::store::{Order, OrderState, StoreError, StoreHandle, Verdict};
use kakao::{Amount, KakaoError, KakaoPay, ReadyRequest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one pending order may be re-checked with Kakao Pay.
const RECHECK_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("top-ups are not set up on this box")]
    Disabled,
    #[error("no product `{0}`")]
    NoSuchProduct(String),
    #[error("no such order")]
    NoSuchOrder,
    #[error("Kakao Pay is not answering ({0}); nothing was charged — try again in a moment")]
    StartUnavailable(String),
    #[error("Kakao Pay refused to start the payment ({0})")]
    StartRefused(String),
    /// The order is kept pending: its outcome is not known yet. `unreachable`: because
    /// Kakao Pay did not answer.
    #[error("{message}")]
    Undecided { message: String, unreachable: bool },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the page needs to send the payer to Kakao Pay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Started {
    pub order_id: String,
    pub redirect_pc_url: String,
    pub redirect_mobile_url: String,
    /// A QR code of the mobile URL, so a viewer at a PC pays from their phone.
    pub qr_svg: String,
}

/// What Kakao Pay says was paid, from approve or from the order API.
struct Paid {
    aid: String,
    tid: String,
    partner_order_id: String,
    partner_user_id: String,
    amount: Amount,
    facts: serde_json::Value,
}

pub struct Payments {
    /// The client and the catalog: replaced whole when the venue's console changes them
    /// (top-ups switch on or off without a restart); each call takes the current pair.
    setup: std::sync::RwLock<std::sync::Arc<(Option<KakaoPay>, Vec<Product>)>>,
    store: StoreHandle,
    /// Pending orders being taken to Kakao Pay (`None`), or when they last were: one
    /// attempt at a time per order, and rechecks spaced out.
    attempts: Mutex<HashMap<String, Option<Instant>>>,
}

impl Payments {
    /// The Kakao Pay client, if a secret key file is configured (top-ups stay off without
    /// one). Called before anything starts, so a missing key file stops the daemon at once.
    pub fn client(config: &KakaoPayConfig) -> anyhow::Result<Option<KakaoPay>> {
        let Some(path) = &config.secret_key_file else {
            return Ok(None);
        };
        let secret = kakao::SecretKey::read(path)?;
        Ok(Some(KakaoPay::new(
            &config.base_url,
            &config.cid,
            secret,
            config.timeout(),
        )?))
    }

    pub fn new(kakao: Option<KakaoPay>, catalog: Vec<Product>, store: StoreHandle) -> Payments {
        Payments {
            setup: std::sync::RwLock::new(std::sync::Arc::new((kakao, catalog))),
            store,
            attempts: Mutex::default(),
        }
    }

    fn setup(&self) -> std::sync::Arc<(Option<KakaoPay>, Vec<Product>)> {
        self.setup.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new client (or none: top-ups off) and catalog in place. Orders already
    /// pending keep their stored price and are settled by the new client.
    pub fn reconfigure(&self, kakao: Option<KakaoPay>, catalog: Vec<Product>) {
        *self.setup.write().unwrap_or_else(|e| e.into_inner()) =
            std::sync::Arc::new((kakao, catalog));
    }

    pub fn enabled(&self) -> bool {
        self.setup().0.is_some()
    }

    pub fn products(&self) -> Vec<Product> {
        self.setup().1.clone()
    }

    /// The console's "check": asks Kakao Pay to get a 100-won payment ready (never paid, it
    /// expires there) and says what came back, in words. The secret key is never in it.
    pub async fn check(&self, origin: &str) -> Result<String, PaymentError> {
        let kakao = self.kakao()?;
        let back = format!("{origin}/api/payments/kakao/fail?order=check");
        let order = format!("check-{}", chrono::Utc::now().timestamp_millis());
        let request = ReadyRequest {
            partner_order_id: &order,
            partner_user_id: "console-check",
            item_name: "Commeow setup check",
            total_amount: 100,
            approval_url: &back,
            cancel_url: &back,
            fail_url: &back,
        };
        match kakao.ready(&request).await {
            Ok(ready) => Ok(format!(
                "Kakao Pay answered ready with tid {} and a payment page; top-ups work",
                ready.tid
            )),
            Err(KakaoError::Refused { code, message }) => Err(PaymentError::StartRefused(format!(
                "error_code {code}: {message}"
            ))),
            Err(KakaoError::Unreachable(why)) => Err(PaymentError::StartUnavailable(why)),
        }
    }

    fn kakao(&self) -> Result<KakaoPay, PaymentError> {
        self.setup().0.clone().ok_or(PaymentError::Disabled)
    }

    /// Starts a top-up: a pending order at the catalog price, then Kakao Pay's `ready`.
    /// `origin` (`http://host[:port]`, as the viewer reached the box) is where Kakao Pay
    /// sends the payer back.
    pub async fn start(
        &self,
        user_id: i64,
        product_id: &str,
        origin: &str,
    ) -> Result<Started, PaymentError> {
        let kakao = self.kakao()?;
        let product = self
            .products()
            .into_iter()
            .find(|p| p.id == product_id)
            .ok_or_else(|| PaymentError::NoSuchProduct(product_id.to_string()))?;
        let order = self
            .store
            .write(move |store| {
                store.create_order(user_id, &product.id, product.points, product.price_krw)
            })
            .await?;
        let id = order.order_id.clone();
        let url = |step: &str| format!("{origin}/api/payments/kakao/{step}?order_id={id}");
        let (approval_url, cancel_url, fail_url) = (url("approve"), url("cancel"), url("fail"));
        let item_name = format!("포인트 {}", order.points);
        let user = user_id.to_string();
        let request = ReadyRequest {
            partner_order_id: &id,
            partner_user_id: &user,
            item_name: &item_name,
            total_amount: order.price_krw,
            approval_url: &approval_url,
            cancel_url: &cancel_url,
            fail_url: &fail_url,
        };
        let ready = match kakao.ready(&request).await {
            Ok(ready) => ready,
            Err(error) => {
                // No payer ever saw a payment page: the order cannot be paid. (A lost
                // answer may have left a tid at Kakao Pay; unapproved, it expires.)
                tracing::warn!(order = %id, %error, "Kakao Pay ready failed");
                let detail = format!("Kakao Pay could not start the payment: {error}");
                let verdict = Verdict::Ended {
                    state: OrderState::Failed,
                    detail,
                    facts: serde_json::Value::Null,
                };
                let order_id = id.clone();
                self.store
                    .write(move |store| store.settle_order(&order_id, &verdict))
                    .await?;
                return Err(match error {
                    KakaoError::Unreachable(why) => PaymentError::StartUnavailable(why),
                    KakaoError::Refused { code, message } => {
                        PaymentError::StartRefused(format!("{code}: {message}"))
                    }
                });
            }
        };
        let (order_id, tid) = (id.clone(), ready.tid.clone());
        self.store
            .write(move |store| store.update_pending_order(&order_id, Some(&tid), None, ""))
            .await?;
        tracing::info!(order = %id, user = user_id, price_krw = order.price_krw, "top-up started");
        Ok(Started {
            qr_svg: qr_svg(&ready.next_redirect_mobile_url),
            order_id: id,
            redirect_pc_url: ready.next_redirect_pc_url,
            redirect_mobile_url: ready.next_redirect_mobile_url,
        })
    }

    /// The order, if it exists.
    pub async fn order(&self, order_id: &str) -> Result<Order, PaymentError> {
        let id = order_id.to_string();
        self.store
            .read(move |store| store.order(&id))
            .await?
            .ok_or(PaymentError::NoSuchOrder)
    }

    /// The payer is back with a `pg_token` (or the page asks again without one): approve
    /// and verify. Returns the order as it now stands; `Undecided` if it must stay pending.
    pub async fn approve(
        &self,
        order: Order,
        pg_token: Option<&str>,
    ) -> Result<Order, PaymentError> {
        if order.state != OrderState::Pending {
            return Ok(order);
        }
        if let Some(token) = pg_token {
            // Kept first, so a lost approve answer can be retried without the payer.
            let (id, token) = (order.order_id.clone(), token.to_string());
            self.store
                .write(move |store| store.update_pending_order(&id, None, Some(&token), ""))
                .await?;
        }
        let token = pg_token.map(str::to_string).or(order.pg_token.clone());
        let (Some(tid), Some(token)) = (order.tid.clone(), token) else {
            return Err(PaymentError::Undecided {
                message: "the payment has not been completed at Kakao Pay yet".into(),
                unreachable: false,
            });
        };
        let Some(_attempt) = self.attempt(&order.order_id, pg_token.is_some()) else {
            return Err(PaymentError::Undecided {
                message: "the payment is being confirmed with Kakao Pay".into(),
                unreachable: false,
            });
        };
        let kakao = self.kakao()?;
        let user = order.user_id.to_string();
        match kakao.approve(&tid, &order.order_id, &user, &token).await {
            Ok(approval) => {
                let paid = Paid {
                    facts: serde_json::to_value(&approval).unwrap_or_default(),
                    aid: approval.aid,
                    tid: approval.tid,
                    partner_order_id: approval.partner_order_id,
                    partner_user_id: approval.partner_user_id,
                    amount: approval.amount,
                };
                self.judge(&order, paid).await
            }
            Err(error) => {
                tracing::warn!(order = %order.order_id, %error, "Kakao Pay approve failed");
                self.reconcile(&order, Some(&error)).await
            }
        }
    }

    /// The payer came back by the cancel or fail URL. Only Kakao Pay's order API decides
    /// what that means: a forged link to these URLs changes nothing.
    pub async fn payer_returned(&self, order: Order) -> Result<Order, PaymentError> {
        if order.state != OrderState::Pending || order.tid.is_none() {
            return Ok(order);
        }
        let Some(_attempt) = self.attempt(&order.order_id, true) else {
            return Ok(order);
        };
        match self.reconcile(&order, None).await {
            Err(PaymentError::Undecided { .. }) => Ok(order),
            other => other,
        }
    }

    /// A pending order whose payer already returned is taken to Kakao Pay again, at most
    /// every [`RECHECK_INTERVAL`]: this is how an order caught by an outage gets settled.
    pub async fn recheck(&self, order: Order) -> Result<Order, PaymentError> {
        if order.state != OrderState::Pending || order.pg_token.is_none() {
            return Ok(order);
        }
        match self.approve(order.clone(), None).await {
            Ok(order) => Ok(order),
            Err(PaymentError::Undecided { .. }) => self.order(&order.order_id).await,
            Err(other) => Err(other),
        }
    }

    /// Confirms forgotten orders with Kakao Pay, every `interval` until `shutdown`: a payer
    /// who returned while Kakao Pay was unreachable and closed the page still gets their
    /// points, and an order abandoned on Kakao Pay's page ends once its tid expires.
    pub async fn sweep(
        self: std::sync::Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let idle = interval.as_secs().max(1);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if !self.enabled() {
                continue;
            }
            let stale = self
                .store
                .read(move |store| store.stale_orders(idle, 50))
                .await;
            let orders = match stale {
                Ok(orders) => orders,
                Err(error) => {
                    tracing::warn!(%error, "could not list pending top-ups");
                    continue;
                }
            };
            for order in orders {
                if shutdown.is_cancelled() {
                    return;
                }
                let id = order.order_id.clone();
                let outcome = if order.pg_token.is_some() {
                    self.recheck(order).await
                } else {
                    self.payer_returned(order).await
                };
                match outcome {
                    Ok(order) if order.state != OrderState::Pending => {
                        tracing::info!(order = %id, state = ?order.state, "pending top-up settled");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(order = %id, %error, "top-up still pending"),
                }
            }
        }
    }

    /// Marks an attempt on an order; `None` if one is under way, or (unless `now`) one
    /// was made less than [`RECHECK_INTERVAL`] ago. Dropping the guard ends the attempt.
    fn attempt(&self, order_id: &str, now: bool) -> Option<Attempt<'_>> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        match attempts.get(order_id) {
            Some(None) => return None,
            Some(Some(at)) if !now && at.elapsed() < RECHECK_INTERVAL => return None,
            _ => {}
        }
        attempts.insert(order_id.to_string(), None);
        Some(Attempt {
            payments: self,
            order_id: order_id.to_string(),
        })
    }

    /// Decides on what Kakao Pay reports as paid: credit if it is exactly this order.
    async fn judge(&self, order: &Order, paid: Paid) -> Result<Order, PaymentError> {
        let mut problems = Vec::new();
        if Some(&paid.tid) != order.tid.as_ref() {
            problems.push(format!("tid {} is not this order's", paid.tid));
        }
        if paid.partner_order_id != order.order_id {
            problems.push(format!("it names order {}", paid.partner_order_id));
        }
        if paid.partner_user_id != order.user_id.to_string() {
            problems.push(format!("it names user {}", paid.partner_user_id));
        }
        if paid.amount.total != order.price_krw {
            problems.push(format!(
                "Kakao Pay approved {} KRW but the price is {} KRW",
                paid.amount.total, order.price_krw
            ));
        }
        let id = order.order_id.clone();
        if problems.is_empty() {
            let verdict = Verdict::Approved {
                aid: paid.aid,
                facts: paid.facts,
            };
            let settled = self
                .store
                .write(move |store| store.settle_order(&id, &verdict))
                .await?;
            tracing::info!(order = %settled.order_id, points = settled.points, "top-up approved");
            return Ok(settled);
        }
        let detail = format!(
            "the approval did not match this order ({}): nothing was credited",
            problems.join("; ")
        );
        tracing::error!(order = %id, tid = ?order.tid, %detail, "top-up rejected");
        let verdict = Verdict::Ended {
            state: OrderState::Rejected,
            detail: detail.clone(),
            facts: paid.facts,
        };
        let settled = self
            .store
            .write(move |store| store.settle_order(&id, &verdict))
            .await?;
        self.refund(&settled, &paid.tid, paid.amount, &detail)
            .await?;
        self.order(&settled.order_id).await
    }

    /// Cancels a payment we will not honour, for what Kakao Pay says can be canceled.
    async fn refund(
        &self,
        order: &Order,
        tid: &str,
        approved: Amount,
        detail: &str,
    ) -> Result<(), PaymentError> {
        let kakao = self.kakao()?;
        let amount = match kakao.order(tid).await {
            Ok(status) => status.cancel_available_amount.unwrap_or(approved),
            Err(_) => approved,
        };
        let (note, facts) = match kakao.cancel(tid, &amount).await {
            Ok(answer) => (
                format!("{detail}; the payment was canceled at Kakao Pay"),
                answer,
            ),
            Err(error) => {
                tracing::error!(order = %order.order_id, %tid, %error,
                    "could not cancel a rejected payment: cancel it in Kakao Pay's console");
                (
                    format!("{detail}; canceling it at Kakao Pay failed ({error}): the venue will refund it"),
                    serde_json::json!({"cancel_error": error.to_string()}),
                )
            }
        };
        let id = order.order_id.clone();
        self.store
            .write(move |store| store.note_order(&id, &note, facts))
            .await?;
        Ok(())
    }

    /// Asks Kakao Pay's order API what became of a pending order, and settles it if the
    /// answer is final. `error` is why we are asking (a failed approve), if anything.
    async fn reconcile(
        &self,
        order: &Order,
        error: Option<&KakaoError>,
    ) -> Result<Order, PaymentError> {
        let kakao = self.kakao()?;
        let tid = order.tid.clone().unwrap_or_default();
        let undecided = |message: String, unreachable| async move {
            let (id, note) = (order.order_id.clone(), message.clone());
            self.store
                .write(move |store| store.update_pending_order(&id, None, None, &note))
                .await?;
            Err(PaymentError::Undecided {
                message,
                unreachable,
            })
        };
        let status = match kakao.order(&tid).await {
            Ok(status) => status,
            Err(order_error) => {
                let why = error.unwrap_or(&order_error);
                return undecided(
                    format!(
                        "could not confirm the payment with Kakao Pay ({why}); nothing is \
                         lost: the order is kept and will be checked again"
                    ),
                    true,
                )
                .await;
            }
        };
        let facts = serde_json::json!({"status": status.status, "amount": status.amount});
        let ended = |state, detail: String| Verdict::Ended {
            state,
            detail,
            facts: facts.clone(),
        };
        let because = error.map(|e| format!(" ({e})")).unwrap_or_default();
        let verdict = match status.status.as_str() {
            "SUCCESS_PAYMENT" => {
                let paid = Paid {
                    aid: status.aid().unwrap_or_default(),
                    tid: status.tid.clone(),
                    partner_order_id: status.partner_order_id.clone(),
                    partner_user_id: status.partner_user_id.clone(),
                    amount: status.amount.clone(),
                    facts,
                };
                return self.judge(order, paid).await;
            }
            "FAIL_PAYMENT" | "FAIL_AUTH_PASSWORD" => ended(
                OrderState::Failed,
                format!("Kakao Pay did not approve the payment{because}; nothing was charged"),
            ),
            "QUIT_PAYMENT" => ended(
                OrderState::Canceled,
                "the payment was stopped or expired at Kakao Pay; nothing was charged".into(),
            ),
            "CANCEL_PAYMENT" | "PART_CANCEL_PAYMENT" => ended(
                OrderState::Canceled,
                "the payment was canceled at Kakao Pay; nothing was credited".into(),
            ),
            in_progress => {
                return undecided(
                    format!(
                        "the payment is not complete at Kakao Pay yet ({in_progress}){because}"
                    ),
                    false,
                )
                .await
            }
        };
        let id = order.order_id.clone();
        Ok(self
            .store
            .write(move |store| store.settle_order(&id, &verdict))
            .await?)
    }
}

/// An attempt on an order under way; on drop, its time is recorded.
struct Attempt<'a> {
    payments: &'a Payments,
    order_id: String,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut attempts = self
            .payments
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        attempts.insert(std::mem::take(&mut self.order_id), Some(Instant::now()));
        // Settled orders are never attempted again; keep the map to recent ones.
        attempts.retain(|_, at| at.is_none_or(|at| at.elapsed() < Duration::from_secs(3600)));
    }
}

/// An SVG QR code of `url` (any URL Kakao Pay gives fits a QR code; if one ever did not,
/// the page still has the link).
fn qr_svg(url: &str) -> String {
    match qrcode::QrCode::new(url.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
        Err(_) => String::new(),
    }
}
