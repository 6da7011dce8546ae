//! The command line: run the daemon (the default) or act on its data as the operator.
//!
//! Global flags come before or after any subcommand, so `commeowd --data-dir X channel add`
//! acts on the same database the daemon started with `--data-dir X` uses.

use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::console::Actor;
use crate::store::{Channel, Role, Store, StreamKey};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

const ABOUT: &str =
    "Commeow Edge: OBS pushes RTMP to this box, viewers on the venue Wi-Fi watch HLS.";
const LONG_ABOUT: &str = "\
Commeow Edge: OBS pushes RTMP to this box, viewers on the venue Wi-Fi watch HLS.

With no subcommand, runs the daemon. It needs no config file: data goes to ./data (or
$STATE_DIRECTORY under systemd), HTTP listens on 0.0.0.0:8080 and RTMP on 0.0.0.0:1935.
Under systemd it takes the sockets its units pass (named http and rtmp), reads
$CONFIGURATION_DIRECTORY/commeowd.toml when there is one, and reports readiness, status and
watchdog pings.
Settings come from, lowest first: embedded defaults, the --config file, environment
variables, flags. `commeowd generate-config` prints the default file with every key.

Streamers set OBS to rtmp://<box>:1935/live with the key `commeowd channel add` prints.
Viewers open http://<box>:8080/ (the web app: channels, player, chat); any HLS player can
use http://<box>:8080/hls/<channel>/master.m3u8.";

#[derive(Debug, Parser)]
#[command(name = "commeowd", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// TOML config file (see `generate-config`); without it, the embedded defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "COMMEOW_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Directory for the database [default: $STATE_DIRECTORY, else ./data].
    #[arg(long, global = true, env = "COMMEOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for viewers and the API [default: 0.0.0.0:8080].
    #[arg(
        long,
        global = true,
        env = "COMMEOW_HTTP_LISTEN",
        value_name = "ADDR:PORT"
    )]
    pub http_listen: Option<SocketAddr>,

    /// Address OBS pushes RTMP to [default: 0.0.0.0:1935].
    #[arg(
        long,
        global = true,
        env = "COMMEOW_RTMP_LISTEN",
        value_name = "ADDR:PORT"
    )]
    pub rtmp_listen: Option<SocketAddr>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default when no subcommand is given).
    Run,
    /// Create and manage channels and their stream keys.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Create accounts and set their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// Hand out points and read balances.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// The transcoding ladder's encoders.
    #[command(subcommand)]
    Transcode(TranscodeCommand),
    /// The audit log: every admin action (console, CLI, fleet), newest first.
    Audit {
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the default configuration file, with every key commented.
    GenerateConfig,
    /// Load the configuration, report problems, and exit.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel and print its stream key (shown once) and the OBS settings.
    Add {
        /// Short name used in URLs: a-z, 0-9 and '-', up to 32 characters.
        slug: String,
        /// Title shown to viewers.
        #[arg(long, default_value = "")]
        title: String,
        /// Print {"slug", "stream_key", "rtmp_url"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List channels.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a channel to another streamer.
    Give { slug: String, username: String },
    /// Remove a channel (refused while it has donations: the ledger refers to them).
    Remove { slug: String },
    /// Replace a channel's stream key; the old key stops working at once.
    RotateKey {
        slug: String,
        /// Print {"slug", "stream_key", "rtmp_url"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input, so it never appears in
    /// the shell history or the process list: `echo "$PW" | commeowd user add ...`.
    Add {
        /// Login name: 3-32 characters a-z, 0-9, '_', '.', '-' (case-insensitive).
        name: String,
        #[arg(long, default_value = "viewer", value_parser = role_parser())]
        role: Role,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Name shown in chat [default: the login name].
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Change an account's role; a running daemon refuses the account's older tokens
    /// within seconds, so its open pages refresh into the new role.
    SetRole {
        name: String,
        #[arg(value_parser = role_parser())]
        role: Role,
    },
    /// List accounts (username, nickname, role, created, last seen, balance).
    List {
        /// Only accounts whose username or nickname contains this.
        #[arg(long, default_value = "")]
        search: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot log in, and its sessions end.
    Disable { name: String },
    /// Enable a disabled account again.
    Enable { name: String },
    /// Make a one-time password-reset code (valid 24 hours) to hand to the person; they
    /// type it with a new password on the log-in page.
    ResetCode { name: String },
}

/// Roles by name, for clap (the store's `Role` knows nothing of the command line).
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        // clap has checked the name against the same list.
        .map(|name| Role::from_name(&name).unwrap_or(Role::Viewer))
}

#[derive(Debug, Subcommand)]
pub enum TranscodeCommand {
    /// Test-encode with each candidate encoder at every rung's size, as the daemon does at
    /// startup, and report the choice and every rejection with its reason.
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Give a user points from the venue's promotions account (a ledger transaction, synced
    /// to the central side like any other).
    Grant {
        name: String,
        /// Whole points, at least 1.
        points: i64,
        /// Why: shown in the user's statement.
        #[arg(long)]
        reason: String,
    },
    /// Check the ledger: every transaction sums to zero, every balance equals its entries,
    /// no user is below zero. Exits non-zero, listing what is wrong, if not.
    Check,
    /// Show a user's balance, earnings and recent entries.
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The configuration: defaults, then the file, then flags and their variables.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => match systemd_config_file() {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            },
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        if let Some(addr) = self.http_listen {
            config.http.listen = addr;
        }
        if let Some(addr) = self.rtmp_listen {
            config.rtmp.listen = addr;
        }
        config.validate()?;
        // What the venue's console changed, over all of that.
        Ok(config.with_console()?)
    }
}

/// Under systemd (`ConfigurationDirectory=commeowd`), `/etc/commeowd/commeowd.toml` when
/// the operator has written one; the embedded defaults otherwise.
fn systemd_config_file() -> Option<PathBuf> {
    let dir = std::env::var_os("CONFIGURATION_DIRECTORY")?;
    // systemd may list several directories, separated by colons; ours is the first.
    let first = std::env::split_paths(&dir).next()?;
    Some(first.join("commeowd.toml")).filter(|path| path.is_file())
}

/// Entry point behind `main`: returns the process exit code.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    match cli.command {
        None | Some(Command::Run) => {
            run_daemon(config)?;
            if crate::system::restart_requested() {
                // The console asked: systemd starts us again on this status.
                std::process::exit(i32::from(crate::system::RESTART_EXIT_STATUS));
            }
            Ok(())
        }
        Some(Command::GenerateConfig) => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Some(Command::CheckConfig) => {
            config.fleet.check_broker()?;
            println!(
                "configuration is valid; data directory: {}",
                config.data_dir().display()
            );
            Ok(())
        }
        Some(Command::Channel(command)) => channel_command(&config, command),
        Some(Command::User(command)) => user_command(&config, command),
        Some(Command::Wallet(command)) => wallet_command(&config, command),
        Some(Command::Audit { limit, json }) => {
            let store = Store::open_in(&config.data_dir())?;
            let log = store.audit_log(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            }
            for e in log.iter().filter(|_| !json) {
                println!(
                    "{}  {:<16} {:<15} {:<14} {:<16} {}",
                    e.at, e.actor, e.address, e.action, e.target, e.detail
                );
            }
            Ok(())
        }
        Some(Command::Transcode(TranscodeCommand::Probe { json })) => {
            ffmpeg_next::init()?;
            let report = crate::media::ladder::probe_ladder(&config.transcode, true);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_probe(&report);
            }
            Ok(())
        }
    }
}

fn run_daemon(config: Config) -> anyhow::Result<()> {
    // Before the runtime starts its threads: this takes `LISTEN_*` out of the environment.
    let inherited = crate::system::inherited_sockets()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("commeowd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let data_dir = config.data_dir();
        let store = Store::open_in(&data_dir)
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        let http = listener(inherited.http, config.http.listen, "HTTP").await?;
        let rtmp = listener(inherited.rtmp, config.rtmp.listen, "RTMP").await?;
        tracing::info!(addr = %http.local_addr()?, "http listening");
        tracing::info!(addr = %rtmp.local_addr()?, "rtmp listening");
        tracing::info!(data_dir = %data_dir.display(), "store open");

        let shutdown = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(shutdown.clone()));
        crate::daemon::run(
            config,
            store,
            crate::daemon::Listeners {
                http,
                rtmp,
                webrtc: inherited.webrtc,
            },
            shutdown,
        )
        .await
    })
}

/// Connections the kernel may hold for the daemon to accept (systemd's socket units ask
/// for the same: `Backlog=` defaults to SOMAXCONN).
const LISTEN_BACKLOG: u32 = 4096;

/// The socket systemd passed for `what`, else one bound on `addr` from the configuration.
async fn listener(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    match inherited {
        Some(socket) => {
            let listener = tokio::net::TcpListener::from_std(socket)
                .with_context(|| format!("cannot use the {what} socket systemd passed"))?;
            tracing::info!("{what} socket from systemd");
            Ok(listener)
        }
        None => {
            // A deep accept queue (the kernel caps it at net.core.somaxconn): a venue's
            // phones reconnecting at once after a Wi-Fi blip, or a burst the box is busy
            // refusing, must not find it full (the kernel then drops SYNs, and clients wait
            // a second to retry). tokio's `bind` would ask for 1024.
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            socket
                .and_then(|socket| {
                    socket.set_reuseaddr(true)?;
                    socket.bind(addr)?;
                    socket.listen(LISTEN_BACKLOG)
                })
                .with_context(|| format!("cannot listen for {what} on {addr}"))
        }
    }
}

/// SIGTERM (systemd stop) and SIGINT (Ctrl-C) both start a graceful shutdown; a second
/// signal exits at once.
async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(1);
}

fn channel_command(config: &Config, command: ChannelCommand) -> anyhow::Result<()> {
    let mut store = Store::open_in(&config.data_dir())?;
    match command {
        ChannelCommand::Add { slug, title, json } => {
            let (channel, key) = store.in_transaction(|store| store.add_channel(&slug, &title))?;
            print_key(config, &channel.slug, &key, json, "created");
        }
        ChannelCommand::Give { slug, username } => {
            let owner = store.in_transaction(|s| {
                crate::console::give_channel(s, &Actor::cli(), &slug, &username)
            })?;
            println!("`{slug}` now belongs to `{}`.", owner.username);
        }
        ChannelCommand::Remove { slug } => {
            store.in_transaction(|s| crate::console::remove_channel(s, &Actor::cli(), &slug))?;
            println!("`{slug}` removed.");
        }
        ChannelCommand::RotateKey { slug, json } => {
            let key =
                store.in_transaction(|s| crate::console::rotate_key(s, &Actor::cli(), &slug))?;
            print_key(
                config,
                &slug,
                &key,
                json,
                "has a new stream key; the old one no longer works",
            );
        }
        ChannelCommand::List { json } => {
            let channels = store.list_channels()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&channels)?);
            } else {
                print_channels(&channels);
            }
        }
    }
    Ok(())
}

fn user_command(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let mut store = Store::open_in(&config.data_dir())?;
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin: _,
            nickname,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            crate::auth::validate_password(password)
                .map_err(|reason| anyhow::anyhow!("password: {reason}"))?;
            let hash = crate::auth::hash_password(password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            let nickname = nickname.unwrap_or_else(|| name.clone());
            let user = store.add_user(&name, &nickname, &hash, role)?;
            println!(
                "Account `{}` created ({}).",
                user.username,
                user.role.as_str()
            );
        }
        UserCommand::SetRole { name, role } => {
            let user = store
                .in_transaction(|s| crate::console::set_role(s, &Actor::cli(), &name, role))?;
            println!("`{}` is now {}.", user.username, user.role.as_str());
        }
        UserCommand::List { search, json } => {
            let accounts = store.accounts(&search, 10_000)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
                return Ok(());
            }
            for a in accounts {
                println!(
                    "{:<20} {:<20} {:<8} {:>9} {}{}",
                    a.username,
                    a.nickname,
                    a.role.as_str(),
                    a.balance,
                    a.last_seen_at.as_deref().unwrap_or("never seen"),
                    if a.disabled { "  DISABLED" } else { "" }
                );
            }
        }
        UserCommand::Disable { name } => {
            let (user, ended) = store
                .in_transaction(|s| crate::console::set_disabled(s, &Actor::cli(), &name, true))?;
            println!(
                "`{}` is disabled; {} sessions ended.",
                user.username,
                ended.len()
            );
        }
        UserCommand::Enable { name } => {
            store
                .in_transaction(|s| crate::console::set_disabled(s, &Actor::cli(), &name, false))?;
            println!("`{name}` is enabled.");
        }
        UserCommand::ResetCode { name } => {
            let (user, code) =
                store.in_transaction(|s| crate::console::reset_code(s, &Actor::cli(), &name))?;
            println!(
                "Reset code for `{}`: {code}\nValid {} hours, once: they type it with a new password on the log-in page.",
                user.username,
                crate::console::RESET_CODE_HOURS
            );
        }
    }
    Ok(())
}

fn print_probe(report: &crate::media::ladder::Report) {
    let state = if report.enabled { "on" } else { "off" };
    println!(
        "Ladder: {state} (configured {}): {}",
        report.configured, report.why
    );
    for rung in &report.rungs {
        let c = &rung.choice;
        let chosen = match (&c.encoder, c.measured_fps) {
            (Some(name), Some(fps)) => format!("{name} ({fps:.0} pictures/s in the test)"),
            _ => "none works".to_string(),
        };
        println!(
            "{:<8} {}x{} {} fps {} kbps -> {chosen}, probed in {} ms",
            rung.name, c.width, c.height, c.fps, rung.video_kbps, c.probe_ms
        );
        for rejection in &c.rejected {
            println!(
                "         rejected {}: {}",
                rejection.encoder, rejection.reason
            );
        }
    }
}

fn wallet_command(config: &Config, command: WalletCommand) -> anyhow::Result<()> {
    let mut store = Store::open_in(&config.data_dir())?;
    let (wallet, json) = match command {
        WalletCommand::Grant {
            name,
            points,
            reason,
        } => {
            let wallet = store.in_transaction(|s| {
                crate::console::grant(s, &Actor::cli(), &name, points, &reason)
            })?;
            println!("Granted {points} points to `{name}`.");
            (wallet, false)
        }
        WalletCommand::Check => {
            let problems = crate::console::ledger_problems(&store)?;
            if problems.is_empty() {
                println!("The ledger balances.");
                return Ok(());
            }
            anyhow::bail!("the ledger does not balance:\n{}", problems.join("\n"));
        }
        WalletCommand::Show { name, json } => {
            let user = store
                .user_by_name(&name)?
                .ok_or_else(|| anyhow::anyhow!("no user `{name}`"))?;
            (store.wallet(user.id, 20)?, json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&wallet)?);
    } else {
        println!("Balance: {}  Earnings: {}", wallet.balance, wallet.earnings);
        for entry in &wallet.entries {
            println!(
                "{}  {:>+9}  {:<8}  {}",
                entry.at, entry.amount, entry.account, entry.memo
            );
        }
    }
    Ok(())
}

fn print_channels(channels: &[Channel]) {
    if channels.is_empty() {
        println!("No channels yet. Create one with: commeowd channel add SLUG --title \"Title\"");
        return;
    }
    println!("{:<32}  {:<20}  TITLE", "SLUG", "CREATED");
    for c in channels {
        println!("{:<32}  {:<20}  {}", c.slug, c.created_at, c.title);
    }
}

fn print_key(config: &Config, slug: &str, key: &StreamKey, json: bool, what: &str) {
    let url = rtmp_url(config);
    if json {
        let out = serde_json::json!({ "slug": slug, "stream_key": key.as_str(), "rtmp_url": url });
        println!("{out}");
        return;
    }
    println!("Channel `{slug}` {what}.");
    println!();
    println!("OBS > Settings > Stream (Service: Custom...):");
    println!("  Server:      {url}");
    println!("  Stream Key:  {}", key.as_str());
    println!();
    println!("OBS > Settings > Output: keyframe interval 2 s, H.264 video, AAC audio.");
    println!("This key is shown only now. Lost it? `commeowd channel rotate-key {slug}`.");
}

/// What OBS should connect to: the configured public host, else the listen address if it
/// is a specific one, else this box's first LAN address.
fn rtmp_url(config: &Config) -> String {
    crate::obs::server_url(
        &crate::obs::public_host(&config.rtmp),
        config.rtmp.listen.port(),
    )
}
