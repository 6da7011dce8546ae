//! The donation path at the store, for `bench/ledger.sh`: `--concurrency` tasks donate to
//! one hot streamer through the daemon's real writer (`StoreHandle::write` → group commit →
//! `Store::donate`), durably (`synchronous=FULL`), for `--seconds`. Prints one JSON object:
//! donations per second and per-donation latency percentiles.

use clap::Parser;
use commeow::store::{DonationRequest, Role, Store, StoreHandle};
use commeow_bench::percentile_ms;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// A fresh directory for the database.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    donors: usize,
    /// Donations in flight at once.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut store = Store::open_in(&args.data_dir)?;
    let streamer = store.add_user("streamer", "Streamer", "-", Role::Streamer)?;
    store.add_channel_owned("stage", "", Some(streamer.id), None)?;
    let donors = store.in_transaction(|s| {
        let mut ids = Vec::new();
        for n in 0..args.donors {
            let donor = s.add_user(&format!("donor{n}"), "Donor", "-", Role::Viewer)?;
            s.grant(&donor.username, 1_000_000_000, "bench")?;
            ids.push(donor.id);
        }
        Ok(ids)
    })?;
    let (handle, thread) = StoreHandle::spawn(store)?;

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_seconds);
    let stop_at = measure_from + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let handle = handle.clone();
        let donor = donors[task % donors.len()];
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0u64;
            for n in 0u64.. {
                let began = Instant::now();
                if began >= stop_at {
                    break;
                }
                let request = DonationRequest {
                    channel: "stage".into(),
                    donor_id: donor,
                    donor_nickname: "Donor".into(),
                    amount: 100,
                    message: String::new(),
                    idempotency_key: commeow_bench::idempotency_key(task as u64, n),
                };
                let outcome = handle.write(move |s| s.donate(&request)).await;
                if !matches!(outcome, Ok(Ok(_))) {
                    refused += 1;
                }
                if began >= measure_from {
                    latencies.push(began.elapsed().as_micros() as u64);
                }
            }
            (latencies, refused)
        }));
    }
    let mut latencies = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (mut l, r) = task.await?;
        latencies.append(&mut l);
        refused += r;
    }
    latencies.sort_unstable();
    let problems = handle.read(|s| s.ledger_problems()).await?;
    drop(handle);
    let _ = thread.join();
    println!(
        "{}",
        json!({
            "concurrency": args.concurrency,
            "donations": latencies.len(),
            "per_second": latencies.len() as f64 / args.seconds,
            "p50_ms": percentile_ms(&latencies, 50.0),
            "p99_ms": percentile_ms(&latencies, 99.0),
            "max_ms": percentile_ms(&latencies, 100.0),
            "failed": refused,
            "ledger_problems": problems,
        })
    );
    Ok(())
}
