//! AFL++ target: [`commeow_fuzz::hls_request`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::hls_request(data));
}
