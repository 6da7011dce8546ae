//! AFL++ target: [`commeow_fuzz::whep_offer`] on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| commeow_fuzz::whep_offer(data));
}
