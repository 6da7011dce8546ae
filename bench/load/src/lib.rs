//! What the load generators share.

/// The `p`th percentile of sorted microsecond samples, in milliseconds (NaN if empty).
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// An Idempotency-Key as the web page makes them: the time in microseconds first (like a
/// UUIDv7), then who and which, so keys grow with time and land at the end of the store's
/// index instead of at a page per donor.
pub fn idempotency_key(client: u64, n: u64) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:014x}-{client:x}-{n:x}")
}

/// CPU seconds (user + system) the process `pid` has used, from `/proc`.
pub fn server_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let clock_ticks = 100.0; // USER_HZ on Linux
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / clock_ticks,
        _ => f64::NAN,
    }
}

/// The resident memory of process `pid`, KiB.
pub fn server_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}
