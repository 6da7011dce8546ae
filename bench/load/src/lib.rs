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
