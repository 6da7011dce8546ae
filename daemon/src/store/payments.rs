//! Kakao Pay orders: created when the viewer asks to pay, settled exactly once.
//!
//! An order holds the catalog price at `ready` time; nothing a browser sends later can
//! change it. It stays `pending` until a verdict: `approved` (the points are credited from
//! the `kakao_pay` account in the same SQL transaction), or `rejected` / `canceled` /
//! `failed` (nothing credited). The first verdict wins: a replayed approval finds the order
//! settled and credits nothing. Every verdict writes an outbox event with what Kakao Pay
//! said (tid, aid, amounts), for the central side's reconciliation.

use super::ledger::{now, AccountKind};
use super::outbox::{event_id, Event, OrderFacts, TopupEnded};
use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderState {
    /// Waiting for the payer, or for Kakao Pay's answer.
    Pending,
    /// Paid and credited.
    Approved,
    /// Kakao Pay's approval did not match the order (amount, ids): canceled, not credited.
    Rejected,
    /// The payer stopped.
    Canceled,
    /// Kakao Pay declined, or could not start the payment.
    Failed,
}

impl OrderState {
    fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Approved => "approved",
            OrderState::Rejected => "rejected",
            OrderState::Canceled => "canceled",
            OrderState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> OrderState {
        match text {
            "approved" => OrderState::Approved,
            "rejected" => OrderState::Rejected,
            "canceled" => OrderState::Canceled,
            "failed" => OrderState::Failed,
            _ => OrderState::Pending,
        }
    }
}

/// A top-up order. `tid` and `pg_token` stay on the box (the page needs neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: String,
    #[serde(skip)]
    pub user_id: i64,
    pub product_id: String,
    pub points: i64,
    pub price_krw: i64,
    pub state: OrderState,
    /// What happened, in a sentence for the viewer (empty while pending without news).
    pub detail: String,
    #[serde(skip)]
    pub tid: Option<String>,
    #[serde(skip)]
    pub pg_token: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// How a pending order ends.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Kakao Pay approved this order's price for this order and user: credit the points.
    /// `facts` is what Kakao Pay reported (aid, amount, approved_at).
    Approved {
        aid: String,
        facts: serde_json::Value,
    },
    /// No points: `state` is rejected, canceled or failed.
    Ended {
        state: OrderState,
        detail: String,
        facts: serde_json::Value,
    },
}

/// An order id (Kakao Pay's `partner_order_id`): time-ordered and unguessable.
fn order_id() -> String {
    format!("o{}", event_id())
}

const ORDER_COLUMNS: &str = "id, user_id, product_id, points, price_krw, state, detail, tid, \
                             pg_token, created_at, updated_at";

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        order_id: row.get(0)?,
        user_id: row.get(1)?,
        product_id: row.get(2)?,
        points: row.get(3)?,
        price_krw: row.get(4)?,
        state: OrderState::parse(&row.get::<_, String>(5)?),
        detail: row.get(6)?,
        tid: row.get(7)?,
        pg_token: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

impl Store {
    /// A new pending order for a catalog product at its catalog price (the caller looks
    /// them up in the configured catalog; nothing here trusts a browser's figures).
    pub fn create_order(
        &self,
        user_id: i64,
        product_id: &str,
        points: i64,
        price_krw: i64,
    ) -> Result<Order, StoreError> {
        let id = order_id();
        let at = now();
        self.conn()
            .prepare_cached(
                "INSERT INTO payment_orders
                   (id, user_id, product_id, points, price_krw, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
            )?
            .execute(params![id, user_id, product_id, points, price_krw, at])?;
        self.order(&id)?
            .ok_or(StoreError::CommitFailed("the new order vanished".into()))
    }

    pub fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM payment_orders WHERE id = ?1");
        Ok(self
            .conn()
            .prepare_cached(&sql)?
            .query_row(params![id], order_from_row)
            .optional()?)
    }

    /// The newest `limit` orders, any state, newest first, each with its buyer's username.
    pub fn recent_orders(&self, limit: usize) -> Result<Vec<(Order, String)>, StoreError> {
        let columns = ORDER_COLUMNS
            .split(", ")
            .map(|c| format!("o.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns}, u.username FROM payment_orders o JOIN users u ON u.id = o.user_id
             ORDER BY o.created_at DESC LIMIT ?1"
        );
        let orders = self
            .conn()
            .prepare_cached(&sql)?
            .query_map(params![limit as i64], |row| {
                Ok((order_from_row(row)?, row.get(11)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(orders)
    }

    /// Pending orders Kakao Pay has a tid for, least recently touched first, untouched for
    /// at least `idle_seconds`: the ones to confirm with Kakao Pay.
    pub fn stale_orders(&self, idle_seconds: u64, limit: usize) -> Result<Vec<Order>, StoreError> {
        let before = (chrono::Utc::now() - chrono::Duration::seconds(idle_seconds as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM payment_orders
             WHERE state = 'pending' AND tid IS NOT NULL AND updated_at < ?1
             ORDER BY updated_at LIMIT ?2"
        );
        let orders = self
            .conn()
            .prepare_cached(&sql)?
            .query_map(params![before, limit as i64], order_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(orders)
    }

    /// Records what arrived for a pending order: Kakao Pay's tid after `ready`, the
    /// payer's pg_token on return (the first one kept: a later, made-up one cannot replace
    /// it), or news for the viewer. A settled order is left alone.
    pub fn update_pending_order(
        &self,
        id: &str,
        tid: Option<&str>,
        pg_token: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE payment_orders
                 SET tid = COALESCE(?2, tid), pg_token = COALESCE(pg_token, ?3), detail = ?4,
                     updated_at = ?5
                 WHERE id = ?1 AND state = 'pending'",
            )?
            .execute(params![id, tid, pg_token, detail, now()])?;
        Ok(())
    }

    /// Settles a pending order once; the first verdict wins, and later ones get the order
    /// as it stands. An approval credits the points in this same transaction.
    pub fn settle_order(&self, id: &str, verdict: &Verdict) -> Result<Order, StoreError> {
        let order = self.order(id)?.ok_or(StoreError::Invalid {
            field: "order_id",
            reason: "no such order",
        })?;
        if order.state != OrderState::Pending {
            return Ok(order);
        }
        let facts_of_order = OrderFacts {
            order_id: order.order_id.clone(),
            user_id: order.user_id,
            product_id: order.product_id.clone(),
            points: order.points,
            price_krw: order.price_krw,
            tid: order.tid.clone(),
        };
        let (state, aid, transaction, detail) = match verdict {
            Verdict::Approved { aid, facts } => {
                let memo = format!("Kakao Pay top-up ({})", order.product_id);
                let (transaction, _, _) = self
                    .transfer(
                        "topup",
                        (AccountKind::KakaoPay, None),
                        (AccountKind::Wallet, Some(order.user_id)),
                        order.points,
                        &memo,
                        |transaction_id, at| Event::TopupApproved {
                            order: facts_of_order,
                            aid: aid.clone(),
                            kakao_pay: facts.clone(),
                            transaction_id,
                            at: at.to_string(),
                        },
                    )?
                    .ok_or(StoreError::CommitFailed(
                        "the kakao_pay account refused a debit".into(),
                    ))?;
                let detail = format!("{} points added", order.points);
                (
                    OrderState::Approved,
                    Some(aid.as_str()),
                    Some(transaction),
                    detail,
                )
            }
            Verdict::Ended {
                state,
                detail,
                facts,
            } => {
                let ended = TopupEnded {
                    order: facts_of_order,
                    detail: detail.clone(),
                    kakao_pay: facts.clone(),
                    at: now(),
                };
                self.add_event(&match state {
                    OrderState::Canceled => Event::TopupCanceled(ended),
                    OrderState::Failed => Event::TopupFailed(ended),
                    // Pending or approved are not endings; a verdict naming them is a
                    // rejection all the same (nothing was credited).
                    _ => Event::TopupRejected(ended),
                })?;
                (*state, None, None, detail.clone())
            }
        };
        self.conn()
            .prepare_cached(
                "UPDATE payment_orders
                 SET state = ?2, aid = ?3, transaction_id = ?4, detail = ?5, updated_at = ?6
                 WHERE id = ?1",
            )?
            .execute(params![id, state.as_str(), aid, transaction, detail, now()])?;
        self.order(id)?
            .ok_or(StoreError::CommitFailed("the order vanished".into()))
    }

    /// Adds to a settled order's story (a refund's outcome), with an outbox event.
    pub fn note_order(
        &self,
        id: &str,
        detail: &str,
        facts: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE payment_orders SET detail = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, detail, now()])?;
        self.add_event(&Event::PaymentNote {
            order_id: id.to_string(),
            detail: detail.to_string(),
            kakao_pay: facts,
            at: now(),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn store_with_user() -> (tempfile::TempDir, Store, i64) {
        let (dir, mut store) = Store::temporary();
        let user = store
            .add_user("viewer", "Viewer", "$argon2id$unused", Role::Viewer)
            .expect("user");
        (dir, store, user.id)
    }

    /// A catalog product: id, points, price.
    fn new_order(store: &Store, user: i64) -> Order {
        store
            .create_order(user, "points-1000", 1000, 1100)
            .expect("order")
    }

    #[test]
    fn the_first_verdict_wins_and_credits_once() {
        let (_dir, mut store, user) = store_with_user();
        let order = new_order(&store, user);
        assert_eq!(order.state, OrderState::Pending);
        assert_eq!(order.price_krw, 1100);
        let approved = Verdict::Approved {
            aid: "A1".into(),
            facts: serde_json::json!({"amount": {"total": 1100}}),
        };
        for _ in 0..3 {
            let settled = store
                .in_transaction(|s| s.settle_order(&order.order_id, &approved))
                .expect("settle");
            assert_eq!(settled.state, OrderState::Approved);
        }
        let rejected = Verdict::Ended {
            state: OrderState::Rejected,
            detail: "late".into(),
            facts: serde_json::Value::Null,
        };
        let after = store
            .in_transaction(|s| s.settle_order(&order.order_id, &rejected))
            .expect("settle");
        assert_eq!(
            after.state,
            OrderState::Approved,
            "a later verdict changes nothing"
        );
        assert_eq!(store.wallet(user, 10).expect("wallet").balance, 1000);
        assert!(store.ledger_problems().expect("check").is_empty());
        let events: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE type = 'topup_approved'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(events, 1);
    }

    #[test]
    fn an_ended_order_credits_nothing_and_leaves_an_event() {
        let (_dir, mut store, user) = store_with_user();
        let order = new_order(&store, user);
        let verdict = Verdict::Ended {
            state: OrderState::Rejected,
            detail: "amount mismatch".into(),
            facts: serde_json::json!({"amount": {"total": 1}}),
        };
        let settled = store
            .in_transaction(|s| s.settle_order(&order.order_id, &verdict))
            .expect("settle");
        assert_eq!(settled.state, OrderState::Rejected);
        assert_eq!(store.wallet(user, 10).expect("wallet").balance, 0);
        let payload: String = store
            .conn()
            .query_row(
                "SELECT payload FROM outbox WHERE type = 'topup_rejected'",
                [],
                |r| r.get(0),
            )
            .expect("event");
        assert!(payload.contains("\"type\":\"topup_rejected\""), "{payload}");
        assert!(payload.contains("\"total\":1"), "{payload}");
    }
}
