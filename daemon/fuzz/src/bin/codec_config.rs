//! AFL++ target: [`commeow_fuzz::codec_config`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::codec_config(data));
}
