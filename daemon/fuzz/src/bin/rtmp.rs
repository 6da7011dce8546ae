//! AFL++ target: [`commeow_fuzz::rtmp`] on each input. Without AFL's panic hook: a panic
//! inside rml_rtmp's session is contained as the daemon contains it (that connection
//! ends), so only a panic that would reach the daemon is a crash here.
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| commeow_fuzz::rtmp(data));
}
