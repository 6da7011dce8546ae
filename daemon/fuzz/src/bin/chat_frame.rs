//! AFL++ target: [`commeow_fuzz::chat_frame`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::chat_frame(data));
}
