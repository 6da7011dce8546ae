//! Donations end to end, for `bench/donations.sh`: `--clients` keep-alive HTTP connections,
//! one donor account (token) each, post donations to one channel at stepped total rates
//! (open loop: a request's latency counts from when it was due, so a slow server cannot
//! hide its queue). Prints one JSON object: per step, donations/s committed (201) and
//! latency percentiles.

use anyhow::{bail, Context};
use clap::Parser;
use commeow_bench::percentile_ms;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
struct Args {
    /// host:port of the daemon.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "stage")]
    channel: String,
    /// Access tokens, one per line: one client (connection, donor) each.
    #[arg(long)]
    tokens_file: std::path::PathBuf,
    /// Donations per second offered, one step each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,3000,4000,5000,6000,8000"
    )]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 10.0)]
    step_seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
}

/// A due request: which step it belongs to (`None` while warming up), and when it was due.
type Due = (Option<usize>, Instant);
/// What a client saw: step, latency in µs, whether it was a 201.
type Sample = (usize, u64, bool);

async fn client(
    addr: String,
    path: String,
    token: String,
    id: usize,
    mut due: mpsc::Receiver<Due>,
) -> anyhow::Result<Vec<Sample>> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut samples = Vec::new();
    let mut n = 0u64;
    while let Some((step, at)) = due.recv().await {
        n += 1;
        let request = hyper::Request::post(&path)
            .header("host", &addr)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header(
                "idempotency-key",
                commeow_bench::idempotency_key(id as u64, n),
            )
            .body(Full::new(Bytes::from_static(br#"{"amount":100}"#)))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let created = response.status() == hyper::StatusCode::CREATED;
        response.into_body().collect().await?;
        if let Some(step) = step {
            samples.push((step, at.elapsed().as_micros() as u64, created));
        }
    }
    Ok(samples)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens_file)
        .with_context(|| format!("reading {}", args.tokens_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        bail!("no tokens");
    }
    let path = format!("/api/channels/{}/donations", args.channel);
    let mut queues = Vec::new();
    let mut clients = Vec::new();
    for (id, token) in tokens.into_iter().enumerate() {
        // Deep enough to hold a client's share of a whole step: overload shows as latency.
        let (tx, rx) = mpsc::channel(100_000);
        queues.push(tx);
        clients.push(tokio::spawn(client(
            args.addr.clone(),
            path.clone(),
            token,
            id,
            rx,
        )));
    }

    let mut steps_run = Vec::new();
    let mut next = 0usize;
    for (step, &rate) in args.rates.iter().enumerate() {
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup_seconds);
        let end = measure_from + Duration::from_secs_f64(args.step_seconds);
        let mut due_at = start;
        while due_at < end {
            tokio::time::sleep_until(due_at.into()).await;
            // Everything due by now goes out (the timer is coarser than the period).
            let now = Instant::now();
            while due_at <= now && due_at < end {
                let tag = (due_at >= measure_from).then_some(step);
                let _ = queues[next % queues.len()].try_send((tag, due_at));
                next += 1;
                due_at += period;
            }
        }
        steps_run.push((step, rate));
        // Drain: wait until the step's requests are answered (bounded), then judge it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        eprintln!("step {rate}/s offered");
    }
    drop(queues);
    let mut samples = Vec::new();
    for handle in clients {
        match handle.await? {
            Ok(mut s) => samples.append(&mut s),
            Err(e) => eprintln!("a client failed: {e}"),
        }
    }
    let mut report = Vec::new();
    for (step, rate) in steps_run {
        let mut latencies: Vec<u64> = samples
            .iter()
            .filter(|s| s.0 == step)
            .map(|s| s.1)
            .collect();
        let created = samples.iter().filter(|s| s.0 == step && s.2).count();
        latencies.sort_unstable();
        report.push(json!({
            "offered_per_s": rate,
            "answered": latencies.len(),
            "created_per_s": created as f64 / args.step_seconds,
            "not_created": latencies.len() - created,
            "p50_ms": percentile_ms(&latencies, 50.0),
            "p99_ms": percentile_ms(&latencies, 99.0),
            "max_ms": percentile_ms(&latencies, 100.0),
        }));
    }
    println!("{}", json!({ "steps": report }));
    Ok(())
}
