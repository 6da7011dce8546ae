//! AFL++ target: [`commeow_fuzz::json_body`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::json_body(data));
}
