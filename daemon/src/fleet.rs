//! The fleet relay: the outbox's events to the central service over MQTT, exactly once
//! through any outage (the protocol is in the `fleet-proto` crate).
//!
//! It reads the outbox in sequence order on its own read-only connection, publishes
//! batches, keeps at most `window` events in flight, and deletes rows only when central
//! acknowledges them by event id. After a reconnect, or when acknowledgements stop for
//! `ack_timeout`, it sends again from the oldest unacknowledged event (go-back-N): central
//! drops what it already has. Nothing here ever makes a donation wait: the ledger writes
//! its outbox rows whether or not a broker is reachable, and the relay only reads them
//! and, on an ack, deletes them through the store like any other write.
//!
//! Each connection is a new MQTT session with a new session number (kept in the store),
//! whose last will is a retained `status` saying `online: false` for that session; central
//! ignores a will older than the newest status it has seen. Reconnects back off
//! exponentially with full jitter.

use crate::config::FleetConfig;
use crate::store::outbox::{OutboxReader, Stored};
use crate::store::{Store, StoreError, StoreHandle};
use crate::system::Activity;
use fleet_proto::broker::Broker;
use fleet_proto::{
    Ack, BoxId, Command, CommandResult, Desired, Envelope, EventsBatch, Refusal, Reported,
    ReportedChannel, Status, Topic, WireEvent,
};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the status reports of the box besides the outbox: live channels and viewers.
pub type Live = Box<dyn Fn() -> (Vec<String>, u64) + Send + Sync>;

/// The relay's state for `/healthz`, updated as it goes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub connected: bool,
    /// Events waiting for central's acknowledgement, as of the last status.
    pub outbox_depth: u64,
    /// Past `fleet.outbox_warn`: the uplink or central is down for long. Nothing is lost.
    pub outbox_over_bound: bool,
    /// How long the oldest event has waited for central's acknowledgement, in seconds.
    pub oldest_unacked_seconds: Option<f64>,
    /// When central last acknowledged something (RFC 3339).
    pub last_ack_at: Option<String>,
    /// Central's clock minus this box's, learned from acks: a box with no real-time clock
    /// judges time-limited things (command expiry) by central's time.
    pub clock_offset_seconds: Option<f64>,
}

/// Shared between the relay (writer) and HTTP (reader).
pub type HealthWatch = Arc<std::sync::Mutex<Health>>;

pub struct Relay {
    pub config: FleetConfig,
    pub box_id: BoxId,
    pub store: StoreHandle,
    pub outbox: OutboxReader,
    pub live: Live,
    /// Watched by the watchdog while the relay works (not while it waits on the network).
    pub activity: Arc<Activity>,
    pub boot_id: Option<String>,
    pub health: HealthWatch,
}

/// What the connection task hands the relay.
enum Incoming {
    Connected,
    /// A message on one of our topics (`ack`, `desired`).
    Message(String, Vec<u8>),
    Lost(String),
}

/// Events sent and not yet acknowledged, by sequence, with when each was sent.
#[derive(Default)]
struct InFlight {
    events: BTreeMap<i64, (String, Instant)>,
    /// The highest sequence sent on this connection.
    sent_up_to: i64,
}

impl InFlight {
    /// How long until the oldest unacknowledged event has waited `timeout`: then
    /// everything from it is sent again. Judged per event, not by the last ack: a batch
    /// central dropped must not wait behind later ones that were acknowledged.
    fn until_timeout(&self, timeout: Duration) -> Option<Duration> {
        let (_, sent) = self.events.values().next()?;
        Some(timeout.saturating_sub(sent.elapsed()))
    }
}

impl Relay {
    /// Runs until `shutdown`: connect, relay, and on any failure back off and connect again.
    pub async fn run(self, shutdown: CancellationToken) {
        let broker = self.config.broker();
        let mut failures = 0u32;
        loop {
            match self.connection(&broker, &shutdown).await {
                Ok(()) => return,
                Err(why) => {
                    failures += 1;
                    let wait = fleet_proto::backoff(failures);
                    tracing::warn!(reason = %why, ?wait, "fleet broker unreachable; events wait in the outbox");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One MQTT session, from connect until it fails (`Err`) or shutdown (`Ok`).
    async fn connection(
        &self,
        broker: &Broker,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let session = self
            .store
            .write(|store| store.next_fleet_session())
            .await
            .map_err(|e| format!("store: {e}"))?;
        let mut options = broker
            .options(
                self.box_id.as_str(),
                Duration::from_secs(self.config.keepalive_seconds),
            )
            .map_err(|e| e.to_string())?;
        let will = Status::will(self.box_id.clone(), session, now());
        options.set_last_will(LastWill::new(
            Topic::Status.of(&self.box_id),
            will.to_bytes(),
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tell, mut incoming) = mpsc::channel(256);
        let connection = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if tell.send(Incoming::Connected).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        // Never wait on the relay here (it may be waiting on us to send): a
                        // dropped ack only means those events are sent again.
                        let _ = tell.try_send(Incoming::Message(
                            publish.topic.clone(),
                            publish.payload.to_vec(),
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = tell.send(Incoming::Lost(error.to_string())).await;
                        return;
                    }
                }
            }
        });
        let result = self.relay(&client, session, &mut incoming, shutdown).await;
        if result.is_ok() {
            // Shutting down: say so, rather than leave it to the will.
            let mut bye = Status::will(self.box_id.clone(), session, now());
            bye.online = false;
            let _ = client
                .publish(
                    Topic::Status.of(&self.box_id),
                    QoS::AtLeastOnce,
                    true,
                    bye.to_bytes(),
                )
                .await;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
        } else {
            connection.abort();
        }
        result
    }

    async fn relay(
        &self,
        client: &AsyncClient,
        session: u64,
        incoming: &mut mpsc::Receiver<Incoming>,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let mut outbox = self.outbox.clone();
        let ack_timeout = Duration::from_secs_f64(self.config.ack_timeout_seconds);
        let mut status_every =
            tokio::time::interval(Duration::from_secs(self.config.status_seconds));
        status_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        let mut flight = InFlight::default();
        loop {
            let room = self
                .config
                .window
                .saturating_sub(flight.events.len())
                .min(self.config.batch);
            let want_more = connected && room > 0;
            let stalled = flight.until_timeout(ack_timeout).unwrap_or(Duration::MAX);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = incoming.recv() => match message {
                    None => return Err("connection task ended".into()),
                    Some(Incoming::Lost(why)) => {
                        self.note(|h| h.connected = false);
                        return Err(why);
                    }
                    Some(Incoming::Connected) => {
                        connected = true;
                        self.note(|h| h.connected = true);
                        // A new session: whatever was in flight may be lost. Send again
                        // from the oldest unacknowledged event (all the outbox holds).
                        flight = InFlight::default();
                        for topic in [Topic::Ack, Topic::Desired, Topic::Cmd] {
                            client
                                .subscribe(topic.of(&self.box_id), QoS::AtLeastOnce)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        self.publish_status(client, session).await?;
                        self.publish_reported(client, Vec::new()).await?;
                        tracing::info!(broker = %self.config.broker, session, "fleet relay connected");
                    }
                    Some(Incoming::Message(topic, payload)) => {
                        let _busy = self.activity.begin();
                        match Topic::parse(&topic) {
                            Ok((_, Topic::Ack)) => self.acknowledged(&payload, &mut flight).await,
                            Ok((_, Topic::Desired)) => self.provision(client, &payload).await?,
                            Ok((_, Topic::Cmd)) => {
                                if self.command(client, &payload).await? {
                                    // `resync`: send everything again from the oldest.
                                    flight = InFlight::default();
                                }
                            }
                            _ => tracing::debug!(%topic, "ignored a message"),
                        }
                    }
                },
                events = outbox.next(flight.sent_up_to, room.max(1)), if want_more => {
                    let events = events.map_err(|e| format!("outbox: {e}"))?;
                    let _busy = self.activity.begin();
                    self.send(client, events, &mut flight).await?;
                }
                () = tokio::time::sleep(stalled), if connected && stalled != Duration::MAX => {
                    tracing::warn!(in_flight = flight.events.len(), "no acknowledgement from central; sending again from the oldest");
                    flight = InFlight::default();
                }
                _ = status_every.tick(), if connected => {
                    self.publish_status(client, session).await?;
                }
            }
        }
    }

    async fn send(
        &self,
        client: &AsyncClient,
        events: Vec<Stored>,
        flight: &mut InFlight,
    ) -> Result<(), String> {
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        let floor = match flight.events.keys().next() {
            Some(oldest) => (*oldest).min(events[0].seq),
            None => events[0].seq,
        };
        let batch = EventsBatch {
            box_id: self.box_id.clone(),
            floor,
            sent_at: now(),
            events: events
                .iter()
                .map(|e| WireEvent {
                    seq: e.seq,
                    event_id: e.event_id.clone(),
                    kind: e.kind.clone(),
                    v: e.v,
                    at: e.at.clone(),
                    payload: e.payload.clone(),
                })
                .collect(),
        };
        client
            .publish(
                Topic::Events.of(&self.box_id),
                QoS::AtLeastOnce,
                false,
                batch.to_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        tracing::debug!(
            from = events[0].seq,
            to = last,
            in_flight = flight.events.len(),
            "events sent"
        );
        for event in events {
            flight.events.insert(event.seq, (event.event_id, sent));
        }
        flight.sent_up_to = last;
        Ok(())
    }

    async fn acknowledged(&self, payload: &[u8], flight: &mut InFlight) {
        let ack = match Ack::read(payload, &self.box_id) {
            Ok(ack) => ack,
            Err(error) => {
                tracing::warn!(%error, "ignored a message on the ack topic");
                return;
            }
        };
        let offset = chrono::DateTime::parse_from_rfc3339(&ack.central_now)
            .ok()
            .map(|central| {
                central
                    .signed_duration_since(chrono::Utc::now())
                    .num_milliseconds() as f64
                    / 1000.0
            });
        self.note(|h| h.clock_offset_seconds = offset.or(h.clock_offset_seconds));
        let ids = ack.event_ids;
        let deleting = ids.clone();
        // Deleted through the store like any write: group committed with the rest.
        match self
            .store
            .write(move |store| store.acknowledge_events(&deleting))
            .await
        {
            Ok(_) => {
                let acked: std::collections::HashSet<&String> = ids.iter().collect();
                flight.events.retain(|_, (id, _)| !acked.contains(id));
                self.note(|h| h.last_ack_at = Some(now()));
            }
            // Kept: the events are sent again and acknowledged again.
            Err(error) => tracing::error!(%error, "could not delete acknowledged events"),
        }
    }

    /// Applies a `desired` state newer than the last applied, then reports.
    async fn provision(&self, client: &AsyncClient, payload: &[u8]) -> Result<(), String> {
        let desired = match Desired::read(payload, &self.box_id) {
            Ok(desired) => desired,
            Err(error) => {
                tracing::warn!(%error, "ignored a desired state");
                return Ok(());
            }
        };
        let version = desired.version;
        match self.store.write(move |store| apply(store, &desired)).await {
            Ok(Some(refused)) => {
                tracing::info!(
                    version,
                    refused = refused.len(),
                    "applied the fleet's desired channels"
                );
                self.publish_reported(client, refused).await
            }
            Ok(None) => {
                tracing::info!(
                    version,
                    "ignored a desired state no newer than the one applied"
                );
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, version, "could not apply the desired channels");
                Ok(())
            }
        }
    }

    /// Runs a command once (a repeated id replays the stored result) unless it expired by
    /// central's clock, and answers on `cmd/res`. Whether it was a `resync` that ran.
    async fn command(&self, client: &AsyncClient, payload: &[u8]) -> Result<bool, String> {
        let command = match Command::read(payload, &self.box_id) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, "ignored a command");
                return Ok(false);
            }
        };
        let offset = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clock_offset_seconds
            .unwrap_or(0.0);
        let central_now =
            chrono::Utc::now() + chrono::Duration::milliseconds((offset * 1000.0) as i64);
        let expired = chrono::DateTime::parse_from_rfc3339(&command.expires_at)
            .map_or(true, |expires| central_now > expires);
        let ran = command.clone();
        let outcome = self
            .store
            .write(move |store| run_command(store, &ran, expired))
            .await;
        let (status, result, replayed) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                // Nothing recorded, no answer: central may send it again.
                tracing::error!(%error, id = %command.id, "could not run a command");
                return Ok(false);
            }
        };
        tracing::info!(id = %command.id, name = %command.name, %status, replayed, "fleet command");
        let answer = CommandResult {
            box_id: self.box_id.clone(),
            id: command.id.clone(),
            status: status.clone(),
            result,
            replayed,
            at: now(),
        };
        client
            .publish(
                Topic::CmdRes.of(&self.box_id),
                QoS::AtLeastOnce,
                false,
                answer.to_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(command.name == "resync" && status == "done" && !replayed)
    }

    async fn publish_reported(
        &self,
        client: &AsyncClient,
        refused: Vec<Refusal>,
    ) -> Result<(), String> {
        let state = self
            .store
            .read(|store| {
                Ok((
                    store.fleet_desired_version()?,
                    store.channels_with_owners()?,
                ))
            })
            .await;
        let Ok((applied_version, channels)) = state else {
            return Ok(());
        };
        let reported = Reported {
            box_id: self.box_id.clone(),
            applied_version,
            channels: channels
                .into_iter()
                .map(|(slug, title, owner)| ReportedChannel { slug, title, owner })
                .collect(),
            refused,
            at: now(),
        };
        client
            .publish(
                Topic::Reported.of(&self.box_id),
                QoS::AtLeastOnce,
                true,
                reported.to_bytes(),
            )
            .await
            .map_err(|e| e.to_string())
    }

    fn note(&self, update: impl FnOnce(&mut Health)) {
        update(&mut self.health.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn publish_status(&self, client: &AsyncClient, session: u64) -> Result<(), String> {
        let (depth, oldest) = self.outbox.depth().await.unwrap_or((0, None));
        let oldest_age = oldest.and_then(|at| {
            let at = chrono::DateTime::parse_from_rfc3339(&at).ok()?;
            let age = chrono::Utc::now().signed_duration_since(at);
            Some(age.num_milliseconds().max(0) as f64 / 1000.0)
        });
        let over = depth > self.config.outbox_warn;
        self.note(|h| {
            h.outbox_depth = depth;
            h.outbox_over_bound = over;
            h.oldest_unacked_seconds = oldest_age;
        });
        if over {
            tracing::error!(depth, bound = self.config.outbox_warn, "the fleet outbox is past its bound: central is not acknowledging (nothing is lost)");
        }
        let (live_channels, viewers) = (self.live)();
        let status = Status {
            box_id: self.box_id.clone(),
            online: true,
            session,
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            boot_id: self.boot_id.clone(),
            outbox_depth: Some(depth),
            oldest_unacked_seconds: oldest_age,
            outbox_over_bound: over,
            live_channels,
            viewers,
            at: now(),
        };
        client
            .publish(
                Topic::Status.of(&self.box_id),
                QoS::AtLeastOnce,
                true,
                status.to_bytes(),
            )
            .await
            .map_err(|e| e.to_string())
    }
}

/// Runs `command` in the caller's transaction with the record of it: `(status, result,
/// replayed)`. A domain refusal (no such user, bad arguments) is an answer, recorded like
/// success, so the same id always gets the same answer.
fn run_command(
    store: &mut Store,
    command: &Command,
    expired: bool,
) -> Result<(String, serde_json::Value, bool), StoreError> {
    if let Some((status, result)) = store.fleet_command(&command.id)? {
        let result = serde_json::from_str(&result).unwrap_or(serde_json::Value::Null);
        return Ok((status, result, true));
    }
    let (status, result) = if expired {
        ("expired", serde_json::json!({}))
    } else {
        match effect(store, command) {
            Ok(Some(result)) => ("done", result),
            Ok(None) => (
                "unknown",
                serde_json::json!({"error": format!("no command `{}`", command.name)}),
            ),
            Err(
                error @ (StoreError::NoSuchUser(_)
                | StoreError::NoSuchChannel(_)
                | StoreError::Invalid { .. }
                | StoreError::LastAdmin(_)),
            ) => ("refused", serde_json::json!({"error": error.to_string()})),
            Err(other) => return Err(other),
        }
    };
    store.record_fleet_command(&command.id, &command.name, status, &result.to_string())?;
    Ok((status.to_string(), result, false))
}

/// What a command does; `None` for a name this box does not know.
fn effect(store: &mut Store, command: &Command) -> Result<Option<serde_json::Value>, StoreError> {
    // A fleet admin acts through the same functions as the venue's console and CLI (the
    // last admin stays; each act is in the audit log).
    let actor = crate::console::Actor {
        name: "fleet".into(),
        address: format!("command {}", command.id),
    };
    let text = |name: &'static str| -> Result<String, StoreError> {
        command.args[name]
            .as_str()
            .map(str::to_string)
            .ok_or(StoreError::Invalid {
                field: name,
                reason: "is required",
            })
    };
    let result = match command.name.as_str() {
        "ping" => serde_json::json!({"pong": true, "version": env!("CARGO_PKG_VERSION")}),
        "resync" => serde_json::json!({"resending": true}),
        "grant" => {
            let (user, reason) = (text("user")?, text("reason")?);
            let points = command.args["points"].as_i64().ok_or(StoreError::Invalid {
                field: "points",
                reason: "must be a whole number",
            })?;
            let wallet = crate::console::grant(store, &actor, &user, points, &reason)?;
            serde_json::json!({"user": user, "points": points, "balance": wallet.balance})
        }
        "rotate_key" => {
            let channel = text("channel")?;
            // The new key stays on the box (its owner sees it on the dashboard); a publish
            // on the old one ends within seconds.
            crate::console::rotate_key(store, &actor, &channel)?;
            serde_json::json!({"channel": channel, "rotated": true})
        }
        "set_role" => {
            let user = text("user")?;
            let role =
                crate::store::Role::from_name(&text("role")?).ok_or(StoreError::Invalid {
                    field: "role",
                    reason: "must be viewer, streamer or admin",
                })?;
            crate::console::set_role(store, &actor, &user, role)?;
            serde_json::json!({"user": user, "role": role.as_str()})
        }
        "ledger_summary" => {
            let accounts: Vec<serde_json::Value> = store
                .ledger_summary()?
                .into_iter()
                .map(|(kind, accounts, balance)| {
                    serde_json::json!({"kind": kind, "accounts": accounts, "balance": balance})
                })
                .collect();
            serde_json::json!({
                "accounts": accounts,
                "problems": store.ledger_problems()?,
                "outbox_depth": store.outbox_depth()?,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(result))
}

/// Applies `desired` if it is newer than the last version applied, all in the caller's
/// transaction (with the new version): `None` if it was not newer, else what was refused.
/// Idempotent: a channel already as desired is left alone; keys are made on the box.
fn apply(store: &mut Store, desired: &Desired) -> Result<Option<Vec<Refusal>>, StoreError> {
    if desired.version <= store.fleet_desired_version()? {
        return Ok(None);
    }
    let mut refused = Vec::new();
    for channel in &desired.channels {
        let slug = channel.slug.as_str();
        let outcome = if channel.absent {
            match store.remove_channel(slug) {
                Err(StoreError::NoSuchChannel(_)) => Ok(()),
                other => other,
            }
        } else if store.channel_owner(slug)?.is_some() {
            if channel.title.is_empty() {
                Ok(())
            } else {
                store.retitle_channel(slug, &channel.title).map(|_| ())
            }
        } else {
            let owner = match &channel.owner {
                Some(name) => match store.user_by_name(name)? {
                    Some(user) => Ok(Some(user.id)),
                    None => Err(StoreError::NoSuchUser(name.clone())),
                },
                None => Ok(None),
            };
            let title = if channel.title.is_empty() {
                slug
            } else {
                &channel.title
            };
            owner.and_then(|owner| {
                store
                    .add_channel_owned(slug, title, owner, None)
                    .map(|_| ())
            })
        };
        match outcome {
            Ok(()) => {}
            Err(
                error @ (StoreError::InvalidSlug(_)
                | StoreError::InvalidTitle(_)
                | StoreError::ChannelExists(_)
                | StoreError::ChannelHasDonations(_)
                | StoreError::NoSuchUser(_)
                | StoreError::TooManyChannels(_)),
            ) => refused.push(Refusal {
                slug: slug.to_string(),
                reason: error.to_string(),
            }),
            Err(other) => return Err(other),
        }
    }
    store.set_fleet_desired_version(desired.version)?;
    Ok(Some(refused))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The kernel's id for this boot, if it has one (status tells central a box rebooted).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ack timeout runs from the oldest event still in flight: acknowledgements of later
    /// batches do not hide one that central dropped.
    #[test]
    fn the_oldest_unacknowledged_event_sets_the_timeout() {
        let timeout = Duration::from_secs(10);
        let mut flight = InFlight::default();
        assert_eq!(flight.until_timeout(timeout), None, "nothing in flight");
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(9))
            .unwrap_or_else(Instant::now);
        flight.events.insert(1, ("dropped".into(), long_ago));
        flight.events.insert(2, ("later".into(), Instant::now()));
        // The later one is acknowledged; the dropped one still counts.
        flight.events.remove(&2);
        let left = flight.until_timeout(timeout).unwrap_or(Duration::MAX);
        assert!(left <= Duration::from_secs(1), "{left:?}");
    }
}
