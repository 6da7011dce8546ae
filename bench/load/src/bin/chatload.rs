//! Chat fan-out load generator for `bench/chat-fanout.sh`.
//!
//! Opens `--sockets` WebSocket connections to one chat room; the first `--senders` of them
//! also send, paced so the room gets a steady total rate. It steps through `--rates`
//! (messages per second into the room), and for each step measures what every socket
//! received: deliveries per second, delivery latency (each message carries its send time;
//! sender and receivers share this process's clock), messages lost, sockets the server
//! closed, and the server's CPU and RSS from `/proc/<server pid>`. Prints one JSON object.
//!
//! It speaks commeowd's frames (`{"type":"chat","text":…}` out, `"type":"chat"` frames
//! with a `"text"` field in), which the baseline server in `bench/chat/` speaks too.

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// ws://host:port/api/channels/<slug>/chat
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    #[arg(long, default_value_t = 100)]
    senders: usize,
    /// Access tokens for the senders, one per line (sent as `Authorization: Bearer`).
    #[arg(long)]
    tokens_file: Option<std::path::PathBuf>,
    /// Messages per second into the room, one step each, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,25,50,100,200,400,700,1000,1500,2000,3000"
    )]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 10.0)]
    step_seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Stop after the first step whose p99 latency exceeds this (ms).
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// The server process, for CPU and RSS.
    #[arg(long)]
    server_pid: u32,
    /// Characters per message (a typical chat line).
    #[arg(long, default_value_t = 60)]
    text_chars: usize,
}

/// Latency histogram: 64 linear sub-buckets per power of two of microseconds (~1.5 %
/// resolution), atomics so every receiver task records without a lock.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const SUB: u64 = 64;
const POWERS: u64 = 40;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..SUB * POWERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(micros: u64) -> usize {
        if micros < SUB {
            return micros as usize;
        }
        // micros in [2^power, 2^(power+1)), power >= 6: its top 7 bits are 64..128.
        let power = 63 - u64::from(micros.leading_zeros());
        let mantissa = (micros >> (power - 6)) - SUB;
        ((power - 5) * SUB + mantissa).min(SUB * POWERS - 1) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        (SUB + index % SUB) << (index / SUB - 1)
    }

    fn record(&self, micros: u64) {
        self.buckets[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `p`th percentile, in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Self::lower_bound(i) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// Messages sent outside a measured window carry this tag and are not counted.
const UNMEASURED: usize = usize::MAX;

struct Shared {
    clock: Instant,
    /// The step being measured, or [`UNMEASURED`].
    tag: AtomicUsize,
    histograms: Vec<Histogram>,
    delivered: Vec<AtomicU64>,
    errors: AtomicU64,
    closed: AtomicU64,
    hellos: AtomicU64,
}

impl Shared {
    fn now_micros(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }
}

/// Reads `"text":"<tag> <sent micros> …"` out of a chat frame without a full JSON parse:
/// the load generator must cost far less than the server it measures.
fn parse_chat(frame: &str) -> Option<(usize, u64)> {
    if !frame.starts_with(r#"{"type":"chat""#) {
        return None;
    }
    let text = &frame[frame.find(r#""text":""#)? + 8..];
    let mut fields = text.split(' ');
    let tag = fields.next()?.parse().ok()?;
    let sent = fields.next()?.parse().ok()?;
    Some((tag, sent))
}

async fn connect(
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    // Small buffers: a thousand sockets in one process.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

/// One socket: counts and times every chat frame; a sender also sends what it is handed.
async fn run_socket(
    shared: Arc<Shared>,
    url: String,
    token: Option<String>,
    mut outbox: Option<mpsc::Receiver<String>>,
    connected: mpsc::Sender<anyhow::Result<()>>,
) {
    let socket = match connect(&url, token.as_deref()).await {
        Ok(socket) => {
            let _ = connected.send(Ok(())).await;
            socket
        }
        Err(e) => {
            let _ = connected.send(Err(e)).await;
            return;
        }
    };
    drop(connected);
    let (mut sink, mut stream) = socket.split();
    let writer = outbox.take().map(|mut outbox| {
        tokio::spawn(async move {
            while let Some(text) = outbox.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        })
    });
    while let Some(message) = stream.next().await {
        let Ok(message) = message else { break };
        let Message::Text(text) = message else {
            continue;
        };
        let text = text.as_str();
        if let Some((tag, sent)) = parse_chat(text) {
            if tag < shared.histograms.len() {
                let now = shared.now_micros();
                shared.histograms[tag].record(now.saturating_sub(sent));
                shared.delivered[tag].fetch_add(1, Ordering::Relaxed);
            }
        } else if text.starts_with(r#"{"type":"error""#) {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with(r#"{"type":"hello""#) {
            shared.hellos.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.abort();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.senders == 0 || args.senders > args.sockets {
        bail!("--senders must be within 1..=--sockets");
    }
    let tokens: Vec<String> = match &args.tokens_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect(),
        None => Vec::new(),
    };
    if !tokens.is_empty() && tokens.len() < args.senders {
        bail!("{} tokens for {} senders", tokens.len(), args.senders);
    }
    let pid = args.server_pid;
    let shared = Arc::new(Shared {
        clock: Instant::now(),
        tag: AtomicUsize::new(UNMEASURED),
        histograms: args.rates.iter().map(|_| Histogram::new()).collect(),
        delivered: args.rates.iter().map(|_| AtomicU64::new(0)).collect(),
        errors: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        hellos: AtomicU64::new(0),
    });

    let rss_before = commeow_bench::server_rss_kb(pid);
    let started = Instant::now();
    let mut outboxes = Vec::new();
    let (connected_tx, mut connected_rx) = mpsc::channel(args.sockets);
    // Connect in waves, as a venue fills: not a thousand handshakes in the same millisecond.
    for i in 0..args.sockets {
        let outbox = (i < args.senders).then(|| {
            let (tx, rx) = mpsc::channel(64);
            outboxes.push(tx);
            rx
        });
        let token = (i < args.senders).then(|| tokens.get(i).cloned()).flatten();
        tokio::spawn(run_socket(
            shared.clone(),
            args.url.clone(),
            token,
            outbox,
            connected_tx.clone(),
        ));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(connected_tx);
    for _ in 0..args.sockets {
        match connected_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => bail!("a socket failed to connect: {e}"),
            None => bail!("connections ended early"),
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Idle: every socket has its hello and the room's viewer count has settled.
    let settle = Instant::now();
    while shared.hellos.load(Ordering::Relaxed) < args.sockets as u64
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = commeow_bench::server_rss_kb(pid);

    let pad: String = "x".repeat(args.text_chars.saturating_sub(24));
    let mut steps = Vec::new();
    let mut sent_total = 0u64;
    for (step, &rate) in args.rates.iter().enumerate() {
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut pacer = tokio::time::interval(period);
        pacer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup_seconds);
        let measure = Duration::from_secs_f64(args.step_seconds);
        let mut measuring_since = None;
        let mut cpu_start = 0.0;
        let mut sent = 0u64;
        let mut backlog = 0u64;
        loop {
            pacer.tick().await;
            let now = Instant::now();
            match measuring_since {
                None if now >= warm_until => {
                    measuring_since = Some(now);
                    cpu_start = commeow_bench::server_cpu_seconds(pid);
                    shared.tag.store(step, Ordering::Relaxed);
                }
                Some(since) if now.duration_since(since) >= measure => break,
                _ => {}
            }
            let tag = shared.tag.load(Ordering::Relaxed);
            let text = format!("{tag} {} {pad}", shared.now_micros());
            let frame = json!({"type": "chat", "text": text}).to_string();
            let outbox = &outboxes[(sent_total as usize) % outboxes.len()];
            sent_total += 1;
            if outbox.try_send(frame).is_err() {
                backlog += 1; // the sender's socket is not keeping up
                continue;
            }
            if tag == step {
                sent += 1;
            }
        }
        let elapsed = measuring_since.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let cpu = commeow_bench::server_cpu_seconds(pid) - cpu_start;
        shared.tag.store(UNMEASURED, Ordering::Relaxed);
        // Let what was sent arrive before counting it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let open = args.sockets as u64 - shared.closed.load(Ordering::Relaxed);
        let delivered = shared.delivered[step].load(Ordering::Relaxed);
        let expected = sent * args.sockets as u64;
        let histogram = &shared.histograms[step];
        let p99 = histogram.percentile(99.0);
        steps.push(json!({
            "rate": rate,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "deliveries_per_s": delivered as f64 / elapsed,
            "p50_ms": histogram.percentile(50.0),
            "p99_ms": p99,
            "max_ms": histogram.percentile(100.0),
            "server_cpu_cores": cpu / elapsed,
            "errors": shared.errors.load(Ordering::Relaxed),
            "sockets_open": open,
            "sender_backlog": backlog,
        }));
        eprintln!("{}", steps.last().map_or(String::new(), |s| s.to_string()));
        if p99 > args.p99_limit_ms || p99.is_nan() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = json!({
        "sockets": args.sockets,
        "senders": args.senders,
        "connect_seconds": connect_seconds,
        "rss_before_kb": rss_before,
        "rss_idle_kb": rss_idle,
        "rss_after_kb": commeow_bench::server_rss_kb(pid),
        "steps": steps,
    });
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for micros in [0, 1, 63, 64, 65, 127, 128, 1000, 100_000, 5_000_000] {
            let index = Histogram::index(micros);
            assert!(index >= last, "{micros}");
            last = index;
            let low = Histogram::lower_bound(index);
            assert!(
                low <= micros && micros - low <= micros / 60 + 1,
                "{micros}: {low}"
            );
        }
        let h = Histogram::new();
        for micros in 1..=1000 {
            h.record(micros * 100);
        }
        assert!((h.percentile(50.0) - 50.0).abs() < 1.0);
        assert!((h.percentile(99.0) - 99.0).abs() < 2.0);
    }

    #[test]
    fn chat_frames_are_read_without_a_parser() {
        let frame = r#"{"type":"chat","id":5,"user":{"id":1,"nickname":"a","role":"viewer"},"text":"3 123456 xxxx","at":"x"}"#;
        assert_eq!(parse_chat(frame), Some((3, 123_456)));
        assert_eq!(parse_chat(r#"{"type":"viewers","count":3}"#), None);
    }
}
