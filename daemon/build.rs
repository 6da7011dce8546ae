//! Checks that the web app's npm dependency (hls.js, embedded in the binary) is installed,
//! with a message that says how, instead of a bare "file not found" from `include_bytes!`.

fn main() {
    let player = "web/node_modules/hls.js/dist/hls.light.min.js";
    println!("cargo:rerun-if-changed={player}");
    if !std::path::Path::new(player).exists() {
        println!(
            "cargo:warning=daemon/{player} is missing: run `npm ci --prefix daemon/web` (the \
             README's commands and .ci/setup-debian do)"
        );
        std::process::exit(1);
    }
}
