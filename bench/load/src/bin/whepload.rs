//! WebRTC viewers for `bench/webrtc.sh`: opens `--viewers` WHEP sessions on one channel
//! (each a `str0m` client on its own loopback UDP socket, on its own thread), waits until
//! every one receives video, then for `--seconds` measures what each received and the
//! server's CPU and RSS from `/proc/<server pid>`. Prints one JSON object.

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

#[derive(Parser, Debug)]
struct Args {
    /// The WHEP endpoint: http://host:port/whep/<slug>
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    viewers: usize,
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The server process, for CPU and RSS.
    #[arg(long)]
    server_pid: u32,
}

/// What one viewer received.
#[derive(Default)]
struct Counts {
    video_frames: AtomicU64,
    audio_frames: AtomicU64,
    bytes: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    let stop = Arc::new(AtomicBool::new(false));
    let rss_before = commeow_bench::server_rss_kb(args.server_pid);
    let mut viewers = Vec::new();
    for _ in 0..args.viewers {
        let counts = Arc::new(Counts::default());
        let (rtc, socket) = join(&args.url)?;
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || run(rtc, &socket, &counts, &stop))
        };
        viewers.push((counts, thread));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while viewers
        .iter()
        .any(|(c, _)| c.video_frames.load(Ordering::Relaxed) == 0)
    {
        if Instant::now() > deadline {
            bail!("not every viewer received video within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two seconds to settle, then the measured window.
    std::thread::sleep(Duration::from_secs(2));
    let snapshot = |viewers: &[(Arc<Counts>, _)]| -> Vec<(u64, u64, u64)> {
        viewers
            .iter()
            .map(|(c, _)| {
                (
                    c.video_frames.load(Ordering::Relaxed),
                    c.audio_frames.load(Ordering::Relaxed),
                    c.bytes.load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    let before = snapshot(&viewers);
    let cpu_before = commeow_bench::server_cpu_seconds(args.server_pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = commeow_bench::server_cpu_seconds(args.server_pid) - cpu_before;
    let after = snapshot(&viewers);
    let rss = commeow_bench::server_rss_kb(args.server_pid);
    stop.store(true, Ordering::Relaxed);
    for (_, thread) in viewers {
        let _ = thread.join();
    }
    let per_viewer: Vec<_> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            json!({
                "video_fps": (a.0 - b.0) as f64 / elapsed,
                "audio_fps": (a.1 - b.1) as f64 / elapsed,
                "kbps": (a.2 - b.2) as f64 * 8.0 / 1000.0 / elapsed,
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "viewers": args.viewers,
            "seconds": elapsed,
            "server_cpu_percent": cpu / elapsed * 100.0,
            "server_rss_kb": rss,
            "server_rss_before_kb": rss_before,
            "per_viewer": per_viewer,
        })
    );
    Ok(())
}

/// Offers to receive one video and one audio track; the session and its socket.
fn join(url: &str) -> anyhow::Result<(Rtc, UdpSocket)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr()?, "udp")?);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().context("no offer")?;
    let answer = post_offer(url, &offer.to_sdp_string())?;
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
    Ok((rtc, socket))
}

/// POST of the offer over a plain HTTP/1.1 connection: the answer's body.
fn post_offer(url: &str, sdp: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http:// only")?;
    let (host, path) = rest.split_once('/').context("no path")?;
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/sdp\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{sdp}",
        sdp.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no answer")?;
    if !head.starts_with("HTTP/1.1 201") {
        bail!("{head}\n{body}");
    }
    Ok(body.to_string())
}

fn run(mut rtc: Rtc, socket: &UdpSocket, counts: &Counts, stop: &AtomicBool) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buffer = vec![0u8; 2000];
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    let counter = if data.params.spec().codec.is_video() {
                        &counts.video_frames
                    } else {
                        &counts.audio_frames
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    counts
                        .bytes
                        .fetch_add(data.data.len() as u64, Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        if socket.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        let input = match socket.recv_from(&mut buffer) {
            Ok((n, source)) => match Receive::new(Protocol::Udp, source, local, &buffer[..n]) {
                Ok(receive) => Input::Receive(Instant::now(), receive),
                Err(_) => continue,
            },
            Err(_) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
    }
}
