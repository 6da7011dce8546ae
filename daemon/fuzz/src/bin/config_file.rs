//! AFL++ target: [`commeow_fuzz::config_file`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::config_file(data));
}
