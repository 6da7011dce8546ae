//! The daemon, wired: starts every subsystem on the listeners it is given, runs until
//! `shutdown` is cancelled, then stops them in order. The top of the crate: it may use every
//! module, and only the CLI (and tests) call it.

use crate::config::Config;
use crate::store::{Store, StoreHandle};
use crate::{
    auth, chat, fleet, hls, http, ingest, media, obs, payments, store, system, throttle, webrtc,
};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long each shutdown phase (ending publishes, draining HTTP) may take.
const SHUTDOWN_PHASE_LIMIT: Duration = Duration::from_secs(5);

/// Sockets the daemon serves on, bound by the caller.
pub struct Listeners {
    pub http: TcpListener,
    pub rtmp: TcpListener,
    /// WebRTC's UDP port from systemd; `None`: bound from `webrtc.port`.
    pub webrtc: Option<std::net::UdpSocket>,
}

/// Runs the daemon until `shutdown` is cancelled, then stops in order: stop accepting,
/// end every publish (playlists get EXT-X-ENDLIST), drain HTTP, close the store.
pub async fn run(
    config: Config,
    store: Store,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let kakao_pay = payments::Payments::client(&config.kakao_pay)?;
    // A bad code file turns web onboarding off, loudly; it never keeps viewers from a stream.
    let setup_code =
        config
            .onboarding
            .code_file()
            .and_then(|path| match http::SetupCode::read(&path) {
                Ok(code) => Some(code),
                Err(e) => {
                    tracing::error!("{e:#}; web onboarding is off until it is fixed");
                    None
                }
            });
    ffmpeg_next::init()?;
    // libav prints to stderr by itself; keep it to what an operator should see.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    let rtmp_port = listeners.rtmp.local_addr()?.port();
    // Every connection is a descriptor: say what the box may hold (the unit sets it).
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => tracing::info!(
            soft,
            hard,
            http_max_connections = config.http.max_connections,
            "file descriptor limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
    }
    let health = system::Health::new();
    let health_for_metrics = health.clone();
    let store_activity = system::Activity::new("store");
    health.watch(&store_activity);
    let store_path = store.path();
    let (store, store_thread) =
        StoreHandle::spawn_watched(store, Arc::new(WatchedStore(store_activity)))?;
    let broadcasts = Arc::new(hls::Broadcasts::new(
        config.hls.window_segments,
        config.hls.target(),
        config.hls.part_target(),
    ));
    let tracker = TaskTracker::new();
    // The encoder probe takes a few hundred milliseconds of libav work: off the runtime,
    // and not awaited (publishes get the ladder once it has said yes).
    let ladder = media::ladder::Plan::new(config.transcode.clone());
    {
        let ladder = ladder.clone();
        tracker.spawn(async move {
            match tokio::task::spawn_blocking(move || ladder.probe()).await {
                Ok(report) => tracing::info!(
                    enabled = report.enabled,
                    "transcode probe: {}",
                    report.status_line()
                ),
                Err(e) => tracing::error!(error = %e, "transcode probe failed: passthrough only"),
            }
        });
    }

    let ingest = Arc::new(ingest::Ingest {
        store: store.clone(),
        broadcasts: broadcasts.clone(),
        hls: config.hls.clone(),
        // Wrong stream keys: keys are 160 random bits, so this protects the box's CPU, not
        // the keys. A quarter second doubling to one second: a flood gets one lookup per
        // second per address (and one at a time), and a streamer whose OBS kept trying the
        // old key waits at most a second with the new one.
        throttle: throttle::Throttle::new(Duration::from_millis(250), Duration::from_secs(1)),
        connections: Arc::new(tokio::sync::Semaphore::new(config.rtmp.max_connections)),
        per_address: Arc::default(),
        connections_per_address: config.rtmp.connections_per_address,
        health: health.clone(),
        ladder: ladder.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    });
    let rtmp = tokio::spawn(ingest::serve(listeners.rtmp, ingest));

    let signing_key = store
        .write(|store| store.secret("access_token_signing_key", auth::Authority::generate_key))
        .await?;
    let authority = auth::Authority::new(
        &signing_key,
        config.auth.access_ttl(),
        config.auth.refresh_ttl(),
    );
    let access_ttl = config.auth.access_token_seconds as i64;
    for session in store
        .read(move |store| store.revoked_sessions(auth::now_seconds() as i64, access_ttl))
        .await?
    {
        authority.revoke(&session);
    }
    let authority = Arc::new(authority);
    tracker.spawn(follow_account_changes(
        store.clone(),
        authority.clone(),
        access_ttl,
        shutdown.clone(),
    ));
    let chat = Arc::new(chat::Chat::new(config.chat.clone()));
    let payments = Arc::new(payments::Payments::new(
        kakao_pay,
        config.kakao_pay.products.clone(),
        store.clone(),
    ));
    // Background work runs under the same tracker and token as connections: shutdown
    // cancels it and waits for it.
    tracker.spawn(
        payments
            .clone()
            .sweep(config.kakao_pay.recheck_interval(), shutdown.clone()),
    );
    tracker.spawn(chat.clone().run_ticker(shutdown.clone()));
    tracker.spawn(forget_expired_sessions(
        store.clone(),
        access_ttl,
        shutdown.clone(),
    ));
    let fleet_health = config.fleet.enabled.then(fleet::HealthWatch::default);
    if let Some(health_watch) = &fleet_health {
        let path = store_path
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the fleet relay needs the database's file"))?;
        let relay = fleet::Relay {
            box_id: fleet_proto::BoxId::new(&config.fleet.box_id)?,
            config: config.fleet.clone(),
            outbox: store::outbox::OutboxReader::open(&path, store.commits())?,
            store: store.clone(),
            live: {
                let (broadcasts, chat) = (broadcasts.clone(), chat.clone());
                Box::new(move || (broadcasts.live_slugs(), chat.total_viewers() as u64))
            },
            activity: health.register("fleet relay"),
            boot_id: fleet::boot_id(),
            health: health_watch.clone(),
        };
        tracker.spawn(relay.run(shutdown.clone()));
    }
    let status = {
        let (broadcasts, chat) = (broadcasts.clone(), chat.clone());
        let ladder = ladder.clone();
        Box::new(move || {
            let mut line = status_line(broadcasts.live_count(), chat.total_viewers());
            if let Some(ladder) = ladder.status_line() {
                line.push_str("; ");
                line.push_str(&ladder);
            }
            line
        })
    };
    let webrtc = webrtc::Webrtc::start(
        config.webrtc.clone(),
        listeners.webrtc,
        broadcasts.clone(),
        shutdown.clone(),
        tracker.clone(),
    );
    let app = http::app(http::AppState {
        store: store.clone(),
        broadcasts,
        webrtc,
        auth: authority,
        // Wrong passwords: 1 s doubling to 5 min, so guessing online is hopeless.
        login_by_address: Arc::new(throttle::Throttle::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
        )),
        login_by_account: Arc::new(throttle::Throttle::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
        )),
        // New accounts: the first is free, then 10 s doubling to 10 min between them.
        signup_by_address: Arc::new(throttle::Throttle::new(
            Duration::from_secs(10),
            Duration::from_secs(600),
        )),
        passwords: Arc::new(auth::Passwords::new(
            config.auth.password_hash_threads,
            config.auth.password_hash_wait(),
        )?),
        sessions_per_user: config.auth.sessions_per_user,
        channels_per_streamer: config.channels.per_streamer,
        rtmp_port,
        rtmp_host: obs::public_host(&config.rtmp),
        segment_seconds: config.hls.target_duration,
        chat,
        points: config.points.clone(),
        payments,
        setup_code,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        fleet: fleet_health,
        ladder: ladder.clone(),
        held_requests: Arc::new(tokio::sync::Semaphore::new(config.hls.max_held_requests)),
        held_requests_max: config.hls.max_held_requests,
        metrics: match http::install_metrics() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics are not recorded");
                None
            }
        },
        metrics_token: match &config.metrics.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read metrics.token_file {}", path.display()))?
                    .trim()
                    .to_string(),
            )
            .filter(|t| !t.is_empty()),
            None => None,
        },
        health: health_for_metrics,
        console: Arc::new(http::ConsoleState {
            config: tokio::sync::Mutex::new(config.clone()),
        }),
    });
    let http_connections = TaskTracker::new();
    let http = tokio::spawn(http::server::serve(
        listeners.http,
        app,
        http::server::Limits {
            max_connections: config.http.max_connections,
            per_address: config.http.connections_per_address,
            header_timeout: Duration::from_secs_f64(config.http.header_timeout_seconds),
        },
        shutdown.clone(),
        http_connections.clone(),
    ));

    // The listeners are listening and the store is open: connections made from now on are
    // served, so systemd may start what depends on us.
    let notifier = system::Notifier::ready(system::Watch {
        health,
        runtime: tokio::runtime::Handle::current(),
        status,
    });

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    notifier.stopping();
    let _ = rtmp.await;
    // Connection tasks end their publishes (closing segments, ending playlists); linger
    // timers watch the same token and end at once.
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_PHASE_LIMIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("publishes still ending after {SHUTDOWN_PHASE_LIMIT:?}; exiting anyway");
    }
    let _ = http.await;
    http_connections.close();
    if tokio::time::timeout(SHUTDOWN_PHASE_LIMIT, http_connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after {SHUTDOWN_PHASE_LIMIT:?}; closing them");
    }
    drop(store);
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    drop(notifier);
    tracing::info!("shutdown complete");
    Ok(())
}

/// The store thread's progress, as the watchdog sees it.
struct WatchedStore(Arc<system::Activity>);

impl store::Progress for WatchedStore {
    fn begin(&self) {
        self.0.mark_busy();
    }

    fn end(&self) {
        self.0.mark_idle();
    }
}

/// Deletes refresh tokens nobody can present any more, at startup and then hourly.
async fn forget_expired_sessions(store: StoreHandle, access_ttl: i64, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store
            .write(move |store| store.forget_expired_sessions(access_ttl))
            .await
        {
            Ok(0) => {}
            Ok(gone) => tracing::info!(gone, "expired refresh tokens deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete expired refresh tokens"),
        }
    }
}

/// How often the daemon looks for accounts changed outside it (the CLI, in its own
/// process): a role change or a disabled account reaches open sessions within this.
const ACCOUNT_CHANGES_POLL: Duration = Duration::from_secs(2);

/// Feeds the token checker every account change the store records (role, disabled,
/// password reset), wherever it was made: at startup those recent enough for a token
/// issued before them to be unexpired, then every [`ACCOUNT_CHANGES_POLL`]. The console
/// tells the checker at once as well; this catches the CLI's and the fleet's.
async fn follow_account_changes(
    store: StoreHandle,
    authority: Arc<auth::Authority>,
    access_ttl: i64,
    shutdown: CancellationToken,
) {
    let mut seen = store::now_ms() - access_ttl * 1000 - 1000;
    let mut every = tokio::time::interval(ACCOUNT_CHANGES_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.read(move |s| s.accounts_changed_since(seen)).await {
            Ok(changes) => {
                for (user, at) in changes {
                    authority.account_changed(user, at);
                    seen = seen.max(at);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read account changes"),
        }
    }
}

/// systemd's one-line status: "2 live channels, 31 viewers".
fn status_line(live: usize, viewers: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {}",
        plural(live, "live channel", "live channels"),
        plural(viewers, "viewer", "viewers")
    )
}
