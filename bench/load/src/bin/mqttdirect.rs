//! The fleet benchmark's second baseline (`bench/fleet.sh`): events published with rumqttc
//! QoS 1 straight from the place they happen, with no outbox, as a quick integration
//! would. A subscriber (standing in for central) counts what arrives. The driver stops
//! and restarts the broker in the middle; this prints what was sent, what arrived, and
//! what was lost.
//!
//! Publishing never waits (`try_publish`, as a donation path must not block on the
//! network); a publish refused because the client's queue is full counts as lost at once.

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    port: u16,
    /// Events to publish.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds to wait for stragglers after the last publish.
    #[arg(long, default_value_t = 10)]
    settle: u64,
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = "bench/direct";
    let received = Arc::new(Mutex::new((HashSet::new(), 0u64)));

    // The subscriber: reconnects by itself (rumqttc does) and resubscribes on each connect.
    let (subscriber, mut sub_loop) = AsyncClient::new(options("direct-sub", args.port), 1024);
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.subscribe(topic, QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let seq = String::from_utf8_lossy(&publish.payload)
                        .parse::<u64>()
                        .ok();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(seq) = seq {
                        if !seen.0.insert(seq) {
                            seen.1 += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The publisher, as a donation path would use it.
    let (publisher, mut pub_loop) = AsyncClient::new(options("direct-pub", args.port), 1024);
    tokio::spawn(async move {
        loop {
            if pub_loop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let mut refused = 0u64;
    let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    for seq in 0..args.events {
        every.tick().await;
        if publisher
            .try_publish(topic, QoS::AtLeastOnce, false, seq.to_string())
            .is_err()
        {
            refused += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let (arrived, duplicates) = {
        let seen = received.lock().unwrap_or_else(|e| e.into_inner());
        (seen.0.len() as u64, seen.1)
    };
    println!(
        "{}",
        serde_json::json!({
            "sent": args.events,
            "arrived": arrived,
            "lost": args.events - arrived,
            "refused_at_once": refused,
            "duplicates": duplicates,
        })
    );
    Ok(())
}
