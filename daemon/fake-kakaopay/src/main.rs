//! `fake-kakaopay`: the fake Kakao Pay server as a process, for tests that are not Rust
//! (the browser tests). Prints its base URL on the first line of stdout once it listens.

use clap::Parser;

/// A stand-in for Kakao Pay's single-payment API on loopback. Control it with
/// `PUT /__fake/misbehaviour` (JSON, see the library docs) and inspect payments at
/// `GET /__fake/payments/<tid>`.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// File holding the secret key merchants must send (`Authorization: SECRET_KEY …`).
    #[arg(long)]
    secret_key_file: std::path::PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::fs::read_to_string(&args.secret_key_file)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("http://{}", listener.local_addr()?);
    fake_kakaopay::serve(listener, secret.trim()).await
}
