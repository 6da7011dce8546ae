//! A client for Kakao Pay's single-payment API: ready, approve, cancel and order.
//!
//! Calls are JSON with `Authorization: SECRET_KEY <key>`; failures come back as HTTP 4xx
//! with `{error_code, error_message, extras}`. The client tells two kinds of failure apart,
//! because the caller must: [`KakaoError::Refused`] (Kakao Pay answered no: nothing
//! happened) and [`KakaoError::Unreachable`] (no usable answer: it may or may not have
//! acted, so the caller asks again with the order API before deciding anything).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The merchant's secret key. Its `Debug` never shows it, so it cannot reach a log.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Reads the key from its file (surrounding whitespace trimmed).
    pub fn read(path: &std::path::Path) -> anyhow::Result<SecretKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read kakao_pay.secret_key_file {}: {e}",
                path.display()
            )
        })?;
        let key = text.trim();
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "kakao_pay.secret_key_file {} does not hold a secret key (one line of visible characters)",
                path.display()
            );
        }
        Ok(SecretKey(key.to_string()))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KakaoError {
    /// Kakao Pay answered with an error: the request had no effect.
    #[error("Kakao Pay refused ({code}): {message}")]
    Refused { code: i64, message: String },
    /// No usable answer (timeout, connection, a non-JSON page): the outcome is unknown.
    #[error("Kakao Pay did not answer usably: {0}")]
    Unreachable(String),
}

/// An amount breakdown, in KRW.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default)]
    pub tax_free: i64,
    #[serde(default)]
    pub vat: i64,
    #[serde(default)]
    pub point: i64,
    #[serde(default)]
    pub discount: i64,
}

/// What `ready` needs from the merchant.
#[derive(Debug, Serialize)]
pub struct ReadyRequest<'a> {
    pub partner_order_id: &'a str,
    pub partner_user_id: &'a str,
    pub item_name: &'a str,
    pub total_amount: i64,
    pub approval_url: &'a str,
    pub cancel_url: &'a str,
    pub fail_url: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub tid: String,
    pub next_redirect_pc_url: String,
    pub next_redirect_mobile_url: String,
}

/// An approved payment, as approve reports it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Approval {
    pub aid: String,
    pub tid: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub amount: Amount,
    #[serde(default)]
    pub approved_at: Option<String>,
}

/// A payment's state, as the order API reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub tid: String,
    /// `READY`, `SEND_TMS`, `OPEN_PAYMENT`, `SELECT_METHOD`, `ARS_WAITING`,
    /// `AUTH_PASSWORD`, `ISSUED_SID`, `SUCCESS_PAYMENT`, `PART_CANCEL_PAYMENT`,
    /// `CANCEL_PAYMENT`, `FAIL_AUTH_PASSWORD`, `QUIT_PAYMENT`, `FAIL_PAYMENT`.
    pub status: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub amount: Amount,
    #[serde(default)]
    pub cancel_available_amount: Option<Amount>,
    #[serde(default)]
    pub payment_action_details: Vec<PaymentAction>,
}

/// One step in a payment's history (`PAYMENT`, `CANCEL`, …).
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentAction {
    #[serde(default)]
    pub aid: String,
    #[serde(default)]
    pub payment_action_type: String,
}

impl Order {
    /// The approval's id, once paid.
    pub fn aid(&self) -> Option<String> {
        self.payment_action_details
            .iter()
            .find(|a| a.payment_action_type == "PAYMENT")
            .map(|a| a.aid.clone())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    #[serde(default)]
    error_message: String,
}

/// Kakao Pay for one merchant.
#[derive(Debug, Clone)]
pub struct KakaoPay {
    http: reqwest::Client,
    base_url: String,
    cid: String,
    secret: SecretKey,
}

impl KakaoPay {
    pub fn new(
        base_url: &str,
        cid: &str,
        secret: SecretKey,
        timeout: Duration,
    ) -> anyhow::Result<KakaoPay> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(KakaoPay {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            cid: cid.to_string(),
            secret,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        body: serde_json::Value,
    ) -> Result<T, KakaoError> {
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("SECRET_KEY {}", self.secret.0))
                .map_err(|_| {
                    KakaoError::Unreachable("the secret key is not a valid header".into())
                })?;
        // Keeps the key out of reqwest's own debug output.
        authorization.set_sensitive(true);
        let url = format!("{}/online/v1/payment/{endpoint}", self.base_url);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(&body)
            .send()
            .await
            .map_err(|e| KakaoError::Unreachable(describe(e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| KakaoError::Unreachable(describe(e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                KakaoError::Unreachable(format!(
                    "{endpoint} answered {status} with unexpected JSON: {e}"
                ))
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            // A 4xx with Kakao Pay's error body is a definite no.
            Ok(error) if status.is_client_error() => Err(KakaoError::Refused {
                code: error.error_code,
                message: error.error_message,
            }),
            _ => Err(KakaoError::Unreachable(format!(
                "{endpoint} answered {status}"
            ))),
        }
    }

    pub async fn ready(&self, request: &ReadyRequest<'_>) -> Result<Ready, KakaoError> {
        let body = serde_json::json!({
            "cid": self.cid,
            "partner_order_id": request.partner_order_id,
            "partner_user_id": request.partner_user_id,
            "item_name": request.item_name,
            "quantity": 1,
            "total_amount": request.total_amount,
            "tax_free_amount": 0,
            "approval_url": request.approval_url,
            "cancel_url": request.cancel_url,
            "fail_url": request.fail_url,
        });
        self.call("ready", body).await
    }

    pub async fn approve(
        &self,
        tid: &str,
        partner_order_id: &str,
        partner_user_id: &str,
        pg_token: &str,
    ) -> Result<Approval, KakaoError> {
        let body = serde_json::json!({
            "cid": self.cid, "tid": tid, "partner_order_id": partner_order_id,
            "partner_user_id": partner_user_id, "pg_token": pg_token,
        });
        self.call("approve", body).await
    }

    /// Cancels (refunds) `amount` of an approved payment.
    pub async fn cancel(
        &self,
        tid: &str,
        amount: &Amount,
    ) -> Result<serde_json::Value, KakaoError> {
        let body = serde_json::json!({
            "cid": self.cid, "tid": tid, "cancel_amount": amount.total,
            "cancel_tax_free_amount": amount.tax_free,
        });
        self.call("cancel", body).await
    }

    pub async fn order(&self, tid: &str) -> Result<Order, KakaoError> {
        self.call("order", serde_json::json!({"cid": self.cid, "tid": tid}))
            .await
    }
}

/// A transport error in a sentence, without the URL's query (none carries secrets, but
/// the habit is cheap).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else {
        error.without_url().to_string()
    }
}
