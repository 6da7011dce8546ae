//! Donations: the one place their rules live, for every caller (the HTTP API today; a
//! fleet command or the CLI may follow). Amount within `[points]` limits; the message
//! cleaned like a chat message and, like one, refused from a donor who may not speak in
//! the channel's chat (before any points move: they may donate without words); the points
//! move in one durable, idempotent write; the room hears of it only after the commit.

use crate::chat::{clean_text, Author, Chat, Refusal};
use crate::config::PointsConfig;
use crate::store::{Donation, DonationRefused, DonationRequest, StoreError, StoreHandle};

/// What a donor asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub channel: String,
    pub amount: i64,
    pub message: String,
    /// The client's key: a retry with it returns the first donation.
    pub idempotency_key: String,
}

/// Why a donation was not made (nothing moved).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("amount must be {min} to {max} points")]
    Amount { min: i64, max: i64 },
    #[error("message: {0}")]
    Message(Refusal),
    /// The donor may not speak in this chat (banned, timed out).
    #[error("{0}: donate without a message")]
    Muted(Refusal),
    #[error(transparent)]
    Ledger(DonationRefused),
}

/// Makes the donation, or says why not. `Ok(Ok((donation, replayed)))`: `replayed` when
/// the key had been used for this same donation before (nothing moved again).
pub async fn donate(
    store: &StoreHandle,
    chat: &Chat,
    limits: &PointsConfig,
    donor: &Author,
    ask: Ask,
) -> Result<Result<(Donation, bool), Refused>, StoreError> {
    if !(limits.donation_min..=limits.donation_max).contains(&ask.amount) {
        return Ok(Err(Refused::Amount {
            min: limits.donation_min,
            max: limits.donation_max,
        }));
    }
    let message = match clean_text(&ask.message, limits.message_max_chars) {
        Ok(message) => message,
        Err(Refusal::Empty) => String::new(),
        Err(refusal) => return Ok(Err(Refused::Message(refusal))),
    };
    if !message.is_empty() {
        if let Some(room) = chat.room(&ask.channel, store).await? {
            if let Err(refusal) = room.may_speak(donor) {
                return Ok(Err(Refused::Muted(refusal)));
            }
        }
    }
    let request = DonationRequest {
        channel: ask.channel,
        donor_id: donor.id,
        donor_nickname: donor.nickname.clone(),
        amount: ask.amount,
        message,
        idempotency_key: ask.idempotency_key,
    };
    let (donation, replayed) = match store.write(move |s| s.donate(&request)).await? {
        Ok(done) => done,
        Err(refused) => return Ok(Err(Refused::Ledger(refused))),
    };
    if !replayed {
        metrics::counter!("commeow_donations_total").increment(1);
        metrics::counter!("commeow_donation_points_total").increment(donation.amount.max(0) as u64);
        tracing::info!(
            channel = %donation.channel,
            donor = %donor.nickname,
            amount = donation.amount,
            "donation"
        );
        // The commit is on disk: now the room may hear of it. A donor restricted meanwhile
        // is not announced (the room applies its rule again).
        if let Ok(Some(room)) = chat.room(&donation.channel, store).await {
            if !room.donation(
                donor,
                donation.amount,
                &donation.message,
                &donation.created_at,
            ) {
                tracing::info!(channel = %donation.channel, "donation from a restricted donor: not shown in chat");
            }
        }
    }
    Ok(Ok((donation, replayed)))
}
