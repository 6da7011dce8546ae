//! `commeow-central`: the service (`serve`) and the fleet admin's commands.

use clap::{Args, Parser, Subcommand};
use commeow_central::service::{self, Config};
use commeow_central::store::EventFilter;
use fleet_proto::broker::Broker;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "The central side of a Commeow Edge fleet")]
struct Cli {
    /// The central database: a SQLite file, or a PostgreSQL URL (`postgres://…`).
    #[arg(
        long,
        env = "COMMEOW_CENTRAL_DB",
        default_value = "central.db",
        global = true
    )]
    db: String,
    #[command(subcommand)]
    command: Action,
}

/// How to reach the broker.
#[derive(Args)]
struct BrokerArgs {
    /// mqtt://host:port or mqtts://host:port
    #[arg(long, env = "COMMEOW_CENTRAL_BROKER")]
    broker: String,
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(long)]
    cert_file: Option<PathBuf>,
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn broker(self) -> Broker {
        Broker {
            url: self.broker,
            ca_file: self.ca_file,
            cert_file: self.cert_file,
            key_file: self.key_file,
        }
    }
}

#[derive(Subcommand)]
enum Action {
    /// Receive every box's events and status, store them, acknowledge them.
    Serve {
        #[command(flatten)]
        broker: BrokerArgs,
        /// This replica's MQTT client id (unique per replica).
        #[arg(long, default_value = "central-1")]
        client_id: String,
        /// Replicas in one group split the boxes' messages.
        #[arg(long, default_value = "central")]
        group: String,
    },
    /// Every box: high water, events held, last status.
    Boxes {
        #[arg(long)]
        json: bool,
    },
    /// Stored events, in each box's sequence order.
    Events {
        #[arg(long = "box")]
        box_id: Option<String>,
        #[arg(long = "type")]
        kind: Option<String>,
        /// Received at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Sequences boxes lost before central stored them.
    Gaps {
        #[arg(long)]
        json: bool,
    },
    /// One box: `box show BOX`.
    #[command(subcommand)]
    Box(BoxAction),
    /// Commands to boxes: `command send BOX NAME`.
    #[command(subcommand)]
    Command(CommandAction),
    /// Per box, the balances central's events add up to against the box's own
    /// (`ledger_summary`), and Kakao Pay's takings across the fleet. Exits non-zero when a
    /// box does not reconcile.
    Reconcile {
        /// Only this box (default: every box central knows).
        #[arg(long = "box")]
        box_id: Option<String>,
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        json: bool,
    },
    /// What boxes should have: `provision channel BOX SLUG`.
    #[command(subcommand)]
    Provision(ProvisionAction),
}

#[derive(Subcommand)]
enum BoxAction {
    /// A box's row (high water, events, status, skew, quarantine) and what it reported it
    /// has.
    Show {
        box_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProvisionAction {
    /// Provision a channel on a box: its desired state gets a new version, published
    /// retained, applied by the box when it is newer than what it applied.
    Channel {
        box_id: String,
        slug: String,
        #[arg(long, default_value = "")]
        title: String,
        /// The owner's username on the box.
        #[arg(long)]
        owner: Option<String>,
        /// Remove the channel instead (the box refuses while it has donations).
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CommandAction {
    /// Send a command to a box (ping, resync, grant, rotate_key, set_role, ledger_summary);
    /// with --wait, wait for its result. The same --id sent again is answered from the
    /// box's record instead of acting twice.
    Send {
        box_id: String,
        name: String,
        /// The command's arguments, as JSON (`{"user":"fan","points":500,"reason":"promo"}`).
        #[arg(long, default_value = "{}")]
        args: String,
        /// Seconds it may wait to be run, by central's clock.
        #[arg(long, default_value_t = 60)]
        ttl: u64,
        /// Its id (default: a new one).
        #[arg(long)]
        id: Option<String>,
        /// Wait for the box's answer (and exit non-zero unless it is `done`).
        #[arg(long)]
        wait: bool,
        /// How long to wait for it, seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        json: bool,
    },
}

fn print<T: serde::Serialize>(rows: &[T], json: bool, line: impl Fn(&T) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
    } else {
        for row in rows {
            println!("{}", line(row));
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Action::Serve {
            broker,
            client_id,
            group,
        } => {
            let config = Config {
                broker: broker.broker(),
                client_id,
                group,
                db: cli.db,
                keepalive: Duration::from_secs(15),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                service::run(config, shutdown).await.map(|_| ())
            })
        }
        Action::Boxes { json } => {
            let rows = commeow_central::store::open(&cli.db)?.boxes()?;
            print(&rows, json, |b| {
                format!(
                    "{}\thigh water {}\t{} events\t{}{}",
                    b.box_id,
                    b.high_water,
                    b.events,
                    match b.online {
                        Some(true) => "online",
                        Some(false) => "offline",
                        None => "never seen",
                    },
                    b.quarantined
                        .as_ref()
                        .map(|q| format!("\tQUARANTINED: {q}"))
                        .unwrap_or_default()
                )
            });
            Ok(())
        }
        Action::Events {
            box_id,
            kind,
            since,
            limit,
            json,
        } => {
            let filter = EventFilter {
                box_id,
                kind,
                since,
                limit,
            };
            let rows = commeow_central::store::open(&cli.db)?.events(&filter)?;
            print(&rows, json, |e| {
                format!(
                    "{}\t{}\t{}\t{}\t{}",
                    e.box_id, e.seq, e.kind, e.at, e.payload
                )
            });
            Ok(())
        }
        Action::Box(BoxAction::Show { box_id, json }) => {
            let id = fleet_proto::BoxId::new(&box_id)?;
            let mut storage = commeow_central::store::open(&cli.db)?;
            let row = storage.boxes()?.into_iter().find(|b| b.box_id == box_id);
            let shown = serde_json::json!({
                "box": row,
                "reported": storage.reported(&id)?,
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            } else {
                println!("{shown:#}");
            }
            Ok(())
        }
        Action::Provision(ProvisionAction::Channel {
            box_id,
            slug,
            title,
            owner,
            absent,
            broker,
            json,
        }) => {
            let id = fleet_proto::BoxId::new(&box_id)?;
            let change = fleet_proto::DesiredChannel {
                slug,
                title,
                owner,
                absent,
            };
            let desired = commeow_central::store::open(&cli.db)?.provision(&id, change)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(service::publish_desired(
                &broker.broker(),
                &format!("central-admin-{}", std::process::id()),
                &desired,
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&desired).unwrap_or_default()
                );
            } else {
                println!("{box_id}: desired version {} published", desired.version);
            }
            Ok(())
        }
        Action::Command(CommandAction::Send {
            box_id,
            name,
            args,
            ttl,
            id,
            wait,
            timeout,
            broker,
            json,
        }) => {
            let args: serde_json::Value = serde_json::from_str(&args)
                .map_err(|e| anyhow::anyhow!("--args is not JSON: {e}"))?;
            let expires = chrono::Utc::now() + chrono::Duration::seconds(ttl as i64);
            let command = fleet_proto::Command {
                box_id: fleet_proto::BoxId::new(&box_id)?,
                id: id.unwrap_or_else(|| format!("cmd-{:016x}", rand::random::<u64>())),
                name,
                args,
                expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let client_id = format!("central-admin-{}", std::process::id());
            if !wait {
                runtime.block_on(service::publish_command(
                    &broker.broker(),
                    &client_id,
                    &command,
                ))?;
                println!("{box_id}: command {} sent", command.id);
                return Ok(());
            }
            let result = runtime.block_on(service::send_command(
                &broker.broker(),
                &client_id,
                &command,
                Duration::from_secs(timeout),
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else {
                println!(
                    "{} {}: {} {}",
                    box_id, result.id, result.status, result.result
                );
            }
            if result.status == "done" {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the command was not run: {}",
                    result.status
                ))
            }
        }
        Action::Reconcile {
            box_id,
            broker,
            json,
        } => {
            let mut storage = commeow_central::store::open(&cli.db)?;
            let boxes: Vec<String> = match box_id {
                Some(id) => vec![id],
                None => storage.boxes()?.into_iter().map(|b| b.box_id).collect(),
            };
            let broker = broker.broker();
            let runtime = tokio::runtime::Runtime::new()?;
            let mut results = Vec::new();
            for id in boxes {
                let command = fleet_proto::Command {
                    box_id: fleet_proto::BoxId::new(&id)?,
                    id: format!("reconcile-{:016x}", rand::random::<u64>()),
                    name: "ledger_summary".into(),
                    args: serde_json::json!({}),
                    expires_at: (chrono::Utc::now() + chrono::Duration::seconds(60))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                };
                let answer = runtime.block_on(service::send_command(
                    &broker,
                    &format!("central-admin-{}", std::process::id()),
                    &command,
                    Duration::from_secs(30),
                ))?;
                results.push(commeow_central::reconcile::reconcile(
                    storage.as_mut(),
                    &id,
                    &answer.result,
                )?);
            }
            let total_krw: i64 = results.iter().map(|r| r.kakao_pay_krw).sum();
            if json {
                let shown = serde_json::json!({"boxes": results, "kakao_pay_krw": total_krw});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            } else {
                for r in &results {
                    println!(
                        "{}	{}	expected {:?}	reported {:?}	pending {}	Kakao Pay {} KRW",
                        r.box_id,
                        if r.reconciled { "ok" } else { "MISMATCH" },
                        r.expected,
                        r.reported,
                        r.pending,
                        r.kakao_pay_krw
                    );
                }
                println!("Kakao Pay across the fleet: {total_krw} KRW");
            }
            if results.iter().all(|r| r.reconciled) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the fleet does not reconcile"))
            }
        }
        Action::Gaps { json } => {
            let rows = commeow_central::store::open(&cli.db)?.gaps()?;
            print(&rows, json, |g| {
                format!(
                    "{}\t{}..={}\tfound {}",
                    g.box_id, g.from_seq, g.to_seq, g.found_at
                )
            });
            Ok(())
        }
    }
}
