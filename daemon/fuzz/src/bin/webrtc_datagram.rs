//! AFL++ target: [`commeow_fuzz::webrtc_datagram`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::webrtc_datagram(data));
}
