//! Reconciliation: the ledger central can rebuild from a box's events against the balances
//! the box reports (`ledger_summary`), and Kakao Pay's takings across the fleet.
//!
//! From the events alone: the box's `promotions` account gave out every grant, its
//! `kakao_pay` account every approved top-up, each donation moved points from a wallet to
//! an earnings account. So wallets hold grants + top-ups − donations, earnings hold the
//! donations, and the two system accounts hold minus what they gave. A box whose
//! balances differ, or which still holds events central has not stored, does not
//! reconcile.

use crate::store::{EventFilter, Storage, StorageError};
use serde::Serialize;

/// Balances by account kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balances {
    pub wallet: i64,
    pub earnings: i64,
    pub promotions: i64,
    pub kakao_pay: i64,
}

/// One box's reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliation {
    pub box_id: String,
    /// From central's events.
    pub expected: Balances,
    /// From the box's `ledger_summary`.
    pub reported: Balances,
    /// Events the box holds that central has not acknowledged.
    pub pending: i64,
    /// The box's own ledger check.
    pub box_problems: Vec<String>,
    /// Approved top-ups in won, from central's events.
    pub kakao_pay_krw: i64,
    pub reconciled: bool,
}

/// What central's events say the box's balances are, and the won taken by Kakao Pay.
pub fn expected(storage: &mut dyn Storage, box_id: &str) -> Result<(Balances, i64), StorageError> {
    let events = storage.events(&EventFilter {
        box_id: Some(box_id.to_string()),
        limit: usize::MAX >> 1,
        ..EventFilter::default()
    })?;
    let mut balances = Balances::default();
    let mut krw = 0;
    for event in events {
        let number = |field: &str| event.payload[field].as_i64().unwrap_or(0);
        match event.kind.as_str() {
            "grant" => {
                balances.wallet += number("points");
                balances.promotions -= number("points");
            }
            "topup_approved" => {
                balances.wallet += number("points");
                balances.kakao_pay -= number("points");
                krw += number("price_krw");
            }
            "donation" => {
                balances.wallet -= number("amount");
                balances.earnings += number("amount");
            }
            _ => {}
        }
    }
    Ok((balances, krw))
}

/// Compares central's view with the box's `ledger_summary` result.
pub fn reconcile(
    storage: &mut dyn Storage,
    box_id: &str,
    summary: &serde_json::Value,
) -> Result<Reconciliation, StorageError> {
    let (expected, kakao_pay_krw) = expected(storage, box_id)?;
    let mut reported = Balances::default();
    for account in summary["accounts"].as_array().into_iter().flatten() {
        let balance = account["balance"].as_i64().unwrap_or(0);
        match account["kind"].as_str() {
            Some("wallet") => reported.wallet = balance,
            Some("earnings") => reported.earnings = balance,
            Some("promotions") => reported.promotions = balance,
            Some("kakao_pay") => reported.kakao_pay = balance,
            _ => {}
        }
    }
    let pending = summary["outbox_depth"].as_i64().unwrap_or(0);
    let box_problems: Vec<String> = summary["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    Ok(Reconciliation {
        box_id: box_id.to_string(),
        reconciled: expected == reported && pending == 0 && box_problems.is_empty(),
        expected,
        reported,
        pending,
        box_problems,
        kakao_pay_krw,
    })
}
