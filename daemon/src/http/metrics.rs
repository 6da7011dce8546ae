//! `/metrics`: the box in Prometheus text format, from the `metrics` facade and its
//! Prometheus exporter (only its recorder: the daemon serves the page itself, behind its own
//! access rule). Counters and histograms are recorded where things happen (ingest frames,
//! donations, chat, store commits, refused connections); gauges of state are set here, at
//! each scrape, from what the daemon already holds: live channels, held requests, chat
//! sockets, the outbox, the fleet relay, the watchdog's view of each task, the process.
//!
//! Who may scrape: the box itself (loopback) always; the LAN only with the token from
//! `[metrics] token_file`, as `Authorization: Bearer <token>`. Off the LAN by default.

use super::{ApiError, AppState};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Installs the process's recorder (once, at startup) and returns the handle `/metrics`
/// renders from. Gauges of a channel no longer live vanish a minute after its last scrape.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    let seconds = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
    ];
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("commeow_store_commit_seconds".into()),
            &seconds,
        )?
        .set_buckets_for_metric(
            Matcher::Full("commeow_store_group_commit_writes".into()),
            &sizes,
        )?
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(60)),
        )
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "commeow_ingest_video_frames_total",
        "Video frames received over RTMP, per channel"
    );
    describe_counter!(
        "commeow_ingest_audio_frames_total",
        "Audio frames received over RTMP, per channel"
    );
    describe_counter!(
        "commeow_ingest_dropped_frames_total",
        "Frames dropped before the pipeline (it fell behind), per channel"
    );
    describe_gauge!(
        "commeow_webrtc_viewers",
        "WebRTC (WHEP) sessions open on the box"
    );
    describe_gauge!(
        "commeow_webrtc_channel_viewers",
        "WebRTC (WHEP) sessions open, per live channel"
    );
    describe_counter!(
        "commeow_webrtc_datagrams_dropped_total",
        "Datagrams on the WebRTC port that reached no session: from no viewer (unknown), or for a viewer whose queue was full (inbox_full)"
    );
    describe_gauge!(
        "commeow_channel_viewers",
        "Chat sockets open on a live channel (people watching the page)"
    );
    describe_gauge!(
        "commeow_ingest_bitrate_kbps",
        "Ingest bitrate over the last 10 s, per live channel"
    );
    describe_gauge!(
        "commeow_ingest_lag_seconds",
        Unit::Seconds,
        "How far behind the publisher's clock the stream arrives"
    );
    describe_gauge!(
        "commeow_hls_part_age_seconds",
        Unit::Seconds,
        "Time since the newest LL-HLS part was cut, per live channel"
    );
    describe_gauge!(
        "commeow_hls_held_requests",
        "Blocking-reload requests held now"
    );
    describe_gauge!(
        "commeow_hls_held_requests_max",
        "The bound on held requests (hls.max_held_requests)"
    );
    describe_gauge!(
        "commeow_chat_viewers",
        "People with a chat socket open, all channels"
    );
    describe_counter!("commeow_chat_messages_total", "Chat messages said");
    describe_counter!(
        "commeow_chat_sockets_dropped_total",
        "Chat sockets the box closed (too slow, stalled writes, flooding)"
    );
    describe_counter!("commeow_donations_total", "Donations made");
    describe_counter!("commeow_donation_points_total", "Points donated");
    describe_histogram!(
        "commeow_store_commit_seconds",
        Unit::Seconds,
        "Time to commit one group of writes (the fsync)"
    );
    describe_histogram!(
        "commeow_store_group_commit_writes",
        "Writes committed together in one transaction"
    );
    describe_gauge!(
        "commeow_outbox_depth",
        "Events waiting for central's acknowledgement"
    );
    describe_gauge!(
        "commeow_fleet_connected",
        "1 when the fleet relay is connected to the broker"
    );
    describe_gauge!(
        "commeow_fleet_oldest_unacked_seconds",
        Unit::Seconds,
        "Age of the oldest event central has not acknowledged"
    );
    describe_gauge!("commeow_task_busy_seconds", Unit::Seconds, "How long each watched task's current work has run (0: idle); the watchdog stops past its limit");
    describe_counter!(
        "commeow_http_connections_refused_total",
        "HTTP connections refused at once past a bound, by reason"
    );
    describe_gauge!(
        "commeow_process_cpu_seconds",
        Unit::Seconds,
        "CPU time the daemon has used"
    );
    describe_gauge!(
        "commeow_process_resident_memory_bytes",
        Unit::Bytes,
        "The daemon's resident memory"
    );
    describe_gauge!(
        "commeow_store_sqlite_memory_bytes",
        Unit::Bytes,
        "Memory SQLite holds (page caches, bounded by cache_size), part of the resident memory"
    );
    describe_gauge!(
        "commeow_process_open_fds",
        "File descriptors the daemon holds"
    );
    describe_gauge!(
        "commeow_disk_free_bytes",
        Unit::Bytes,
        "Free space where the database is"
    );
}

/// Whether a scrape from `peer` with these headers may read the metrics.
pub fn allowed(peer: IpAddr, headers: &HeaderMap, token: Option<&str>) -> bool {
    // An IPv4 peer on a dual-stack socket arrives as ::ffff:127.0.0.1.
    if peer.to_canonical().is_loopback() {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    let presented = super::auth::bearer(headers).unwrap_or("").trim();
    // Compared in constant time: the token is a password.
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /metrics`.
pub async fn scrape(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(handle) = state.metrics.as_ref() else {
        return Err(ApiError::not_found("metrics are not recorded here"));
    };
    if !allowed(peer.ip(), &headers, state.metrics_token.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics are for the box itself, or a scraper with the token ([metrics] token_file)",
        ));
    }
    gauges(&state).await;
    let text = handle.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Sets every gauge of state from what the daemon holds now.
async fn gauges(state: &AppState) {
    use metrics::gauge;
    for slug in state.broadcasts.live_slugs() {
        let Some(broadcast) = state.broadcasts.get(&slug) else {
            continue;
        };
        let health = broadcast.health();
        let label = [("channel", slug.clone())];
        gauge!("commeow_channel_viewers", &label).set(state.chat.viewers(&slug) as f64);
        gauge!("commeow_ingest_bitrate_kbps", &label).set(health.bitrate_kbps_10s as f64);
        gauge!("commeow_ingest_lag_seconds", &label)
            .set(health.ingest_lag_ms.max(0) as f64 / 1000.0);
        if let Some(age) = broadcast.newest_part_age() {
            gauge!("commeow_hls_part_age_seconds", &label).set(age.as_secs_f64());
        }
    }
    let max_held = state.held_requests_max as f64;
    gauge!("commeow_hls_held_requests_max").set(max_held);
    gauge!("commeow_hls_held_requests")
        .set(max_held - state.held_requests.available_permits() as f64);
    gauge!("commeow_chat_viewers").set(state.chat.total_viewers() as f64);
    let (webrtc_viewers, by_channel) = state.webrtc.viewers();
    gauge!("commeow_webrtc_viewers").set(webrtc_viewers as f64);
    for slug in state.broadcasts.live_slugs() {
        let viewers = by_channel.get(&slug).copied().unwrap_or(0);
        gauge!("commeow_webrtc_channel_viewers", "channel" => slug).set(viewers as f64);
    }
    let (unknown, full) = state.webrtc.dropped();
    metrics::counter!("commeow_webrtc_datagrams_dropped_total", "reason" => "unknown")
        .absolute(unknown);
    metrics::counter!("commeow_webrtc_datagrams_dropped_total", "reason" => "inbox_full")
        .absolute(full);
    if let Ok(depth) = state.store.read(|s| s.outbox_depth()).await {
        gauge!("commeow_outbox_depth").set(depth as f64);
    }
    if let Some(fleet) = &state.fleet {
        let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gauge!("commeow_fleet_connected").set(if fleet.connected { 1.0 } else { 0.0 });
        gauge!("commeow_fleet_oldest_unacked_seconds")
            .set(fleet.oldest_unacked_seconds.unwrap_or(0.0));
    }
    for (task, busy) in state.health.activities() {
        gauge!("commeow_task_busy_seconds", "task" => task)
            .set(busy.map_or(0.0, |d| d.as_secs_f64()));
    }
    let data_dir = state.console.config.lock().await.data_dir();
    if let Ok(facts) =
        tokio::task::spawn_blocking(move || crate::system::facts::process(&data_dir)).await
    {
        if let Some(cpu) = facts.cpu_seconds {
            gauge!("commeow_process_cpu_seconds").set(cpu);
        }
        if let Some(rss) = facts.rss_bytes {
            gauge!("commeow_process_resident_memory_bytes").set(rss as f64);
        }
        gauge!("commeow_store_sqlite_memory_bytes").set(crate::store::sqlite_memory_bytes() as f64);
        if let Some(fds) = facts.open_files {
            gauge!("commeow_process_open_fds").set(fds as f64);
        }
        if let Some(free) = facts.disk_free_bytes {
            gauge!("commeow_disk_free_bytes").set(free as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_needs_the_token_and_the_box_itself_does_not() {
        let mut headers = HeaderMap::new();
        let lan: IpAddr = "192.168.0.20".parse().expect("ip");
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(allowed(local, &headers, None));
        assert!(allowed("::1".parse().expect("ip"), &headers, None));
        assert!(allowed(
            "::ffff:127.0.0.1".parse().expect("ip"),
            &headers,
            None
        ));
        assert!(!allowed(lan, &headers, None), "off the LAN by default");
        assert!(!allowed(lan, &headers, Some("s3cret-token")));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-tokeN".parse().expect("header"),
        );
        assert!(!allowed(lan, &headers, Some("s3cret-token")));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token".parse().expect("header"),
        );
        assert!(allowed(lan, &headers, Some("s3cret-token")));
        assert!(
            !allowed(lan, &headers, None),
            "no token configured: no LAN, whatever is sent"
        );
    }
}
