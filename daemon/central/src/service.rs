//! The central service's MQTT side: every box's `events` and `status` through a shared
//! subscription (`$share/<group>/…`, so several replicas split the boxes' messages), each
//! batch stored durably, then acknowledged on the box's `ack` topic.
//!
//! Receiving and storing are separate tasks: the MQTT event loop must keep being polled for
//! acknowledgements to go out, so it hands messages over a bounded queue and never waits on
//! storage. When the queue is full a batch is dropped, which is safe: the box resends
//! everything central has not acknowledged.

use crate::store::Storage;
use fleet_proto::broker::Broker;
use fleet_proto::{Ack, BoxId, Desired, Envelope, EventsBatch, Reported, Status, Topic};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker: Broker,
    /// Unique per replica.
    pub client_id: String,
    /// The shared-subscription group: replicas in one group split the messages.
    pub group: String,
    /// A SQLite file's path or a `postgres://` URL.
    pub db: String,
    pub keepalive: Duration,
}

/// Messages waiting for storage.
const QUEUE: usize = 256;

/// What a replica did, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events batches it stored (and acknowledged).
    pub batches: u64,
}

/// Runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let storage = Arc::new(Mutex::new(crate::store::open(&config.db)?));
    let options = config.broker.options(&config.client_id, config.keepalive)?;
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (queue, inbox) = mpsc::channel(QUEUE);
    let worker = tokio::spawn(store_and_acknowledge(storage, client.clone(), inbox));
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(broker = %config.broker.url, "connected");
                for topic in [Topic::Events, Topic::Status, Topic::Reported] {
                    let filter = format!("$share/{}/{}", config.group, topic.of_every_box());
                    client.subscribe(filter, QoS::AtLeastOnce).await?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = (publish.topic.clone(), publish.payload.to_vec());
                if queue.try_send(message).is_err() {
                    tracing::warn!(topic = %publish.topic, "storage is behind; dropped a message (the box resends it)");
                }
            }
            Ok(_) => {}
            Err(error) => {
                failures += 1;
                let wait = fleet_proto::backoff(failures);
                tracing::warn!(%error, ?wait, "broker connection lost; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    drop(queue);
    let _ = client.disconnect().await;
    let batches = worker.await.unwrap_or(0);
    Ok(Summary { batches })
}

/// Stores each message, then acknowledges what was stored.
async fn store_and_acknowledge(
    storage: Arc<Mutex<Box<dyn Storage>>>,
    client: AsyncClient,
    mut inbox: mpsc::Receiver<(String, Vec<u8>)>,
) -> u64 {
    let mut batches = 0;
    while let Some((topic, payload)) = inbox.recv().await {
        let (box_id, kind) = match Topic::parse(&topic) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%error, "ignored");
                continue;
            }
        };
        let storage = storage.clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match kind {
            Topic::Events => {
                let batch = match EventsBatch::read(&payload, &box_id) {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::warn!(box_id = %box_id, %error, "refused an events batch");
                        continue;
                    }
                };
                let at = now.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    let mut storage = storage
                        .lock()
                        .map_err(|_| "storage lock poisoned".to_string())?;
                    storage.store_batch(&batch, &at).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                match stored {
                    Ok(stored) => {
                        if let Some((from, to)) = stored.gap {
                            tracing::error!(box_id = %box_id, from, to, "gap: the box no longer holds events central never stored");
                        }
                        if let Some(skew) = stored.clock_skew_seconds {
                            tracing::warn!(box_id = %box_id, skew_seconds = skew, "the box's clock is off; its events are taken in sequence order");
                        }
                        if !stored.conflicts.is_empty() {
                            tracing::error!(box_id = %box_id, seqs = ?stored.conflicts, "quarantined: sequences came back with other event ids (the box's data was reset?)");
                        }
                        batches += 1;
                        acknowledge(&client, &box_id, stored.acknowledge, stored.high_water, now)
                            .await;
                    }
                    // Not stored, not acknowledged: the box sends it again.
                    Err(error) => {
                        tracing::error!(box_id = %box_id, %error, "could not store a batch")
                    }
                }
            }
            Topic::Status => match Status::read(&payload, &box_id) {
                Ok(status) => {
                    let result = tokio::task::spawn_blocking(move || {
                        let mut storage = storage
                            .lock()
                            .map_err(|_| "storage lock poisoned".to_string())?;
                        storage
                            .note_status(&status, &now)
                            .map_err(|e| e.to_string())
                    })
                    .await;
                    if let Ok(Err(error)) = result {
                        tracing::error!(box_id = %box_id, %error, "could not store a status");
                    }
                }
                Err(error) => tracing::warn!(box_id = %box_id, %error, "refused a status"),
            },
            Topic::Reported => match Reported::read(&payload, &box_id) {
                Ok(reported) => {
                    let result = tokio::task::spawn_blocking(move || {
                        let mut storage = storage
                            .lock()
                            .map_err(|_| "storage lock poisoned".to_string())?;
                        storage.note_reported(&reported).map_err(|e| e.to_string())
                    })
                    .await;
                    if let Ok(Err(error)) = result {
                        tracing::error!(box_id = %box_id, %error, "could not store a reported state");
                    }
                }
                Err(error) => tracing::warn!(box_id = %box_id, %error, "refused a reported state"),
            },
            _ => {}
        }
    }
    batches
}

/// Publishes a box's desired state, retained (a box that is offline gets the newest when
/// it connects), and waits for the broker to take it.
pub async fn publish_desired(
    broker: &Broker,
    client_id: &str,
    desired: &Desired,
) -> anyhow::Result<()> {
    let topic = Topic::Desired.of(&desired.box_id);
    publish(broker, client_id, topic, desired.to_bytes(), true).await
}

/// Sends a command without waiting for its answer (it comes on `cmd/res`).
pub async fn publish_command(
    broker: &Broker,
    client_id: &str,
    command: &fleet_proto::Command,
) -> anyhow::Result<()> {
    let topic = Topic::Cmd.of(&command.box_id);
    publish(broker, client_id, topic, command.to_bytes(), false).await
}

/// One QoS 1 publish from a short-lived client, once the broker has taken it.
async fn publish(
    broker: &Broker,
    client_id: &str,
    topic: String,
    payload: Vec<u8>,
    retain: bool,
) -> anyhow::Result<()> {
    let options = broker.options(client_id, Duration::from_secs(15))?;
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await?;
    let taken = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(anyhow::anyhow!("broker: {error}")),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the broker did not take the message within 15 s"))?;
    taken?;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
    Ok(())
}

async fn acknowledge(
    client: &AsyncClient,
    box_id: &BoxId,
    event_ids: Vec<String>,
    high_water: i64,
    central_now: String,
) {
    if event_ids.is_empty() {
        return;
    }
    let ack = Ack {
        box_id: box_id.clone(),
        event_ids,
        high_water,
        central_now,
    };
    if let Err(error) = client
        .publish(
            Topic::Ack.of(box_id),
            QoS::AtLeastOnce,
            false,
            ack.to_bytes(),
        )
        .await
    {
        // The box resends; the duplicate is acknowledged then.
        tracing::warn!(box_id = %box_id, %error, "could not send an ack");
    }
}

/// Sends a command to a box and waits up to `wait` for its result on `cmd/res`.
pub async fn send_command(
    broker: &Broker,
    client_id: &str,
    command: &fleet_proto::Command,
    wait: Duration,
) -> anyhow::Result<fleet_proto::CommandResult> {
    let options = broker.options(client_id, Duration::from_secs(15))?;
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let results = Topic::CmdRes.of(&command.box_id);
    let answer = tokio::time::timeout(wait, async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client.subscribe(results.clone(), QoS::AtLeastOnce).await?;
                }
                // Subscribed before sending, so the answer cannot slip by.
                Event::Incoming(Packet::SubAck(_)) => {
                    client
                        .publish(
                            Topic::Cmd.of(&command.box_id),
                            QoS::AtLeastOnce,
                            false,
                            command.to_bytes(),
                        )
                        .await?;
                }
                Event::Incoming(Packet::Publish(publish)) if publish.topic == results => {
                    if let Ok(result) =
                        fleet_proto::CommandResult::read(&publish.payload, &command.box_id)
                    {
                        if result.id == command.id {
                            return Ok::<_, anyhow::Error>(result);
                        }
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer from {} within {wait:?}", command.box_id))??;
    let _ = client.disconnect().await;
    Ok(answer)
}
