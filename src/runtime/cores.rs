//! Process topology: checks io_uring, recovers the spools, binds every listener (so that bind
//! errors surface at start, with their fix), starts the pinned SMTP cores and the delivery
//! cores with crossbeam mailboxes between them, prints what it runs, and on SIGTERM/SIGINT
//! stops accepting, lets sessions in flight finish (bounded), flushes the spools and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::handoff::{Mailbox, ToDelivery, ToSmtp, mailbox};
use super::shared::Shared;
use super::smtp_core::{self, CoreStart};
use super::{delivery_core, net, probe};
use crate::config::Loaded;
use crate::spool::{self, Recovered};

/// Listen backlog per core listener.
const BACKLOG: i32 = 1024;
/// io_uring submission queue entries per core.
const RING_ENTRIES: u32 = 1024;

/// Runs the relay until SIGTERM or SIGINT, then shuts down cleanly.
pub fn serve(loaded: Loaded) -> Result<(), String> {
    probe::io_uring()?;
    // Handlers first: a SIGTERM during start must still mean a clean stop.
    let mut signals = Signals::install()?;
    // check-config's warnings are printed with the startup summary.
    let Loaded { config, mut warnings, source } = loaded;
    let source = (source.as_os_str() != crate::config::embedded::SOURCE).then_some(source);
    warnings.extend(crate::obs::startup_warnings(&config));
    let smtp_cores = config.smtp_cores();
    let delivery_cores = config.cores.delivery;
    let spool_dir = config.spool.dir.clone();
    std::fs::create_dir_all(&spool_dir).map_err(|e| {
        format!(
            "cannot create the spool directory {}: {e}; create it and make it writable by ringrelay's user (spool.dir)",
            spool_dir.display()
        )
    })?;
    let (mut own, mut adopted) = recover_all(&spool_dir, smtp_cores)?;
    let hub = crate::obs::Hub::start(&config, smtp_cores, delivery_cores)?;
    let admin_listener = if config.admin.enabled { Some(crate::obs::admin::bind(config.admin.listen)?) } else { None };
    let shared = Arc::new(Shared::build(config)?.with_source(source));
    let binds: Vec<SocketAddr> = shared.policy().connectors.binds().collect();
    let mut listeners: Vec<Vec<(SocketAddr, std::net::TcpListener)>> = (0..smtp_cores).map(|_| Vec::new()).collect();
    for &bind in &binds {
        wait_port_free(bind)?;
        for per_core in listeners.iter_mut() {
            let l = net::reuseport_listener(bind, BACKLOG).map_err(|e| bind_error(bind, &e))?;
            per_core.push((bind, l));
        }
    }
    let core_ids =
        if shared.config.pin_cores() { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let (shutdown_tx, shutdown_rx) = watch::channel(smtp_core::RUNNING);
    let (drained_tx, drained_rx) = crossbeam_channel::unbounded();
    // Mailboxes: one inbox per core of each kind.
    let (smtp_mail, smtp_inboxes): (Vec<Mailbox<ToSmtp>>, Vec<_>) = (0..smtp_cores).map(|_| mailbox()).unzip();
    let (delivery_mail, delivery_inboxes): (Vec<Mailbox<ToDelivery>>, Vec<_>) =
        (0..delivery_cores).map(|_| mailbox()).unzip();
    let mut delivery_threads = Vec::new();
    for (j, inbox) in delivery_inboxes.into_iter().enumerate() {
        let start = delivery_core::DeliveryStart {
            index: j,
            shared: Arc::clone(&shared),
            inbox,
            smtp: smtp_mail.clone(),
            obs: hub.delivery_core(j),
        };
        let pin = core_ids.get((smtp_cores + j) % core_ids.len().max(1)).copied();
        delivery_threads.push(spawn_core(format!("delivery-{j}"), pin, move || Box::pin(delivery_core::run(start)))?);
    }
    let mut smtp_threads = Vec::new();
    for (i, (inbox, core_listeners)) in smtp_inboxes.into_iter().zip(listeners).enumerate() {
        let start = CoreStart {
            index: i as u16,
            shared: Arc::clone(&shared),
            listeners: core_listeners,
            recovered: std::mem::take(&mut own[i]),
            adopted: std::mem::take(&mut adopted[i]),
            delivery: delivery_mail.clone(),
            inbox,
            shutdown: shutdown_rx.clone(),
            drained: drained_tx.clone(),
            spool_gate: None,
            obs: hub.smtp_core(i as u16),
        };
        let pin = core_ids.get(i % core_ids.len().max(1)).copied();
        smtp_threads.push(spawn_core(format!("smtp-{i}"), pin, move || Box::pin(smtp_core::run(start)))?);
    }
    drop(smtp_mail);
    // The admin endpoint answers until the cores have stopped (queue questions during a drain
    // get what the delivery cores still hold).
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_thread = match admin_listener {
        Some(listener) => Some(crate::obs::admin::spawn(crate::obs::admin::AdminStart {
            listener,
            registry: Arc::clone(&hub.registry),
            delivery: delivery_mail.clone(),
            shutdown: admin_stop_rx,
        })?),
        None => None,
    };
    print_summary(&shared, smtp_cores, delivery_cores, &binds, &warnings);
    crate::obs::sd_notify::notify("READY=1");
    while signals.wait() == Signal::Reload {
        crate::obs::sd_notify::notify("RELOADING=1");
        reload(&shared);
        crate::obs::sd_notify::notify("READY=1");
    }
    crate::obs::sd_notify::notify("STOPPING=1");
    tracing::info!("shutting down: no new connections; sessions in flight may finish");
    // 1. SMTP cores stop accepting and finish their sessions; 2. delivery cores finish their
    // transactions and report outcomes; 3. SMTP cores record those and close their spools.
    let _ = shutdown_tx.send(smtp_core::DRAIN);
    let wait = shared.config.limits.shutdown_grace.get() + std::time::Duration::from_secs(10);
    for _ in 0..smtp_cores {
        if drained_rx.recv_timeout(wait).is_err() {
            tracing::warn!("an SMTP core did not finish draining in time");
            break;
        }
    }
    let mut failed = false;
    for m in &delivery_mail {
        m.send(ToDelivery::Stop);
    }
    for t in delivery_threads {
        failed |= !join(t);
    }
    let _ = shutdown_tx.send(smtp_core::FINAL);
    for t in smtp_threads {
        failed |= !join(t);
    }
    let _ = admin_stop.send(true);
    if let Some(t) = admin_thread {
        let _ = t.join();
    }
    hub.finish();
    if failed {
        return Err("a core stopped with an error (see the log above)".into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// Recovers every core directory: own ones, and orphans (cores that no longer exist) handed
/// to core `k % smtp_cores`.
#[allow(clippy::type_complexity)]
fn recover_all(
    spool_dir: &std::path::Path,
    smtp_cores: usize,
) -> Result<(Vec<Recovered>, Vec<Vec<(std::path::PathBuf, Recovered)>>), String> {
    let mut own: Vec<Recovered> = (0..smtp_cores).map(|_| Recovered::default()).collect();
    let mut adopted: Vec<Vec<(std::path::PathBuf, Recovered)>> = (0..smtp_cores).map(|_| Vec::new()).collect();
    let dirs = spool::list_core_dirs(spool_dir).map_err(|e| format!("cannot read {}: {e}", spool_dir.display()))?;
    for (n, path) in dirs {
        let rec =
            spool::recover(&path, n).map_err(|e| format!("cannot recover the spool in {}: {e}", path.display()))?;
        for (file, offset, what) in &rec.damage {
            tracing::warn!(file = %file.display(), offset, "spool: {what}");
        }
        if (n as usize) < smtp_cores {
            own[n as usize] = rec;
        } else {
            tracing::info!(dir = %path.display(), messages = rec.messages.len(), "adopting the spool of a core that no longer exists");
            adopted[n as usize % smtp_cores].push((path, rec));
        }
    }
    Ok((own, adopted))
}

/// Checks that nothing else listens on `bind`. A listener of a process that just died can
/// outlive it for a moment (io_uring releases the files of in-flight operations after the
/// process exits), and joining it with SO_REUSEPORT would send connections into a socket that
/// nobody accepts from: so wait for it to go, for a few seconds, before calling the port taken.
fn wait_port_free(bind: SocketAddr) -> Result<(), String> {
    let deadline = crate::clock::now() + std::time::Duration::from_secs(5);
    let mut logged = false;
    loop {
        match net::check_port_free(bind) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && crate::clock::now() < deadline => {
                if !logged {
                    tracing::info!(%bind, "address in use; waiting up to 5s in case it is a listener of a process that just stopped");
                    logged = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(bind_error(bind, &e)),
        }
    }
}

fn bind_error(bind: SocketAddr, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => "another program (or another ringrelay) is listening there".to_string(),
        std::io::ErrorKind::PermissionDenied if bind.port() < 1024 => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (see the systemd unit in dist/)".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => "this machine has no such address".to_string(),
        _ => "check receive_connector.bind".to_string(),
    };
    format!("cannot listen on {bind}: {e}; {hint}")
}

fn spawn_core<F>(name: String, pin: Option<core_affinity::CoreId>, body: F) -> Result<JoinHandle<bool>, String>
where
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>> + Send + 'static,
{
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(id) = pin {
                core_affinity::set_for_current(id);
            }
            let result = super::probe::ring_builder(RING_ENTRIES).start(body());
            match result {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(thread = %thread_name, error = %e, "core failed");
                    false
                }
            }
        })
        .map_err(|e| format!("cannot start thread: {e}"))
}

fn join(t: JoinHandle<bool>) -> bool {
    t.join().unwrap_or(false)
}

/// SIGHUP: reads the configuration file again and replaces the receive-side policy (accepted
/// domains, users, the receive connectors' ranges, rights, limits and TLS certificates) for
/// connections accepted from now on; sessions in flight keep theirs, nothing is dropped. When
/// the file does not load or cannot be applied, the policy in force stays, and only the
/// certificates and keys are read again. Listeners, cores, spool, delivery and logs need a
/// restart (the README says so).
fn reload(shared: &Shared) {
    let Some(path) = &shared.source else {
        // The embedded default has no file and no certificates.
        tracing::info!("SIGHUP: running the embedded default, nothing to read again");
        return;
    };
    let outcome = crate::config::Config::load(path).map_err(|e| e.to_string()).and_then(|mut loaded| {
        for w in &loaded.warnings {
            tracing::warn!(key = %w.key, "SIGHUP: {}", w.message);
        }
        // Logging is set at start, from the file and the command line (--log-json).
        loaded.config.log = shared.config.log.clone();
        shared.reload_policy(loaded.config)
    });
    match outcome {
        Ok(reloaded) => {
            if !reloaded.ignored.is_empty() {
                tracing::warn!(
                    ignored = %reloaded.ignored.join(", "),
                    "SIGHUP: these parts of the file changed but need a restart; they are not applied"
                );
            }
            tracing::info!(
                file = %path.display(),
                "SIGHUP: configuration reloaded: accepted domains, users, receive connector policy and TLS certificates, for new connections"
            );
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "SIGHUP: the configuration was not reloaded: {e}; the policy in force stays");
            let (reloaded, errors) = shared.reload_certificates();
            for e in &errors {
                tracing::error!("SIGHUP: {e}");
            }
            tracing::info!(certificates = reloaded, failed = errors.len(), "SIGHUP: TLS certificates reloaded");
        }
    }
}

/// What the relay runs, once every listener is bound: for people, lines on stdout; with
/// `--log-json` / `[log] format = "json"`, the same as structured events on the log (stderr),
/// so that a log collector gets one format. The last one is always "ringrelay ready".
fn print_summary(
    shared: &Shared,
    smtp_cores: usize,
    delivery_cores: usize,
    binds: &[SocketAddr],
    warnings: &[crate::config::Problem],
) {
    let c = &shared.config;
    let json = c.log.format == crate::config::LogFormat::Json;
    for bind in binds {
        let names: Vec<&str> =
            c.receive_connectors.iter().filter(|rc| rc.bind.contains(bind)).map(|rc| rc.name.as_str()).collect();
        let names = names.join(", ");
        if json {
            tracing::info!(listen = %bind, connectors = %names, smtp_cores, "listening");
        } else {
            println!("listening on {bind} (connectors: {names}) on {smtp_cores} SMTP cores");
        }
    }
    let pinned = match (c.pin_cores(), c.cores.pin) {
        (true, _) => "pinned to CPUs",
        (false, crate::config::Pin::Auto) => "not pinned (cores.pin = \"auto\": fewer than 4 CPUs)",
        (false, _) => "not pinned (cores.pin = false)",
    };
    let spool = c.spool.dir.display();
    let fsync = format!("{:?}", c.spool.fsync).to_lowercase();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capped = c.cores.smtp == 0 && cpus.saturating_sub(delivery_cores) > crate::config::SMTP_CORES_MAX;
    if json {
        tracing::info!(smtp = smtp_cores, delivery = delivery_cores, pinned, "cores");
        if capped {
            tracing::info!(
                cpus,
                smtp_cores_max = crate::config::SMTP_CORES_MAX,
                "cores.smtp = 0 capped (queue ids carry the core number in 8 bits)"
            );
        }
        tracing::info!(dir = %spool, fsync, "spool");
    } else {
        println!("cores: {smtp_cores} SMTP, {delivery_cores} delivery, {pinned}");
        if capped {
            println!(
                "cores: cores.smtp = 0 on {cpus} CPUs, capped at {} SMTP cores (queue ids carry the core number in 8 bits)",
                crate::config::SMTP_CORES_MAX
            );
        }
        println!("spool: {spool} (fsync = {fsync:?})");
    }
    match (c.admin.enabled, json) {
        (true, true) => tracing::info!(metrics = %format!("http://{}/metrics", c.admin.listen), "admin endpoint"),
        (true, false) => println!("admin: http://{}/metrics", c.admin.listen),
        (false, true) => {
            tracing::info!("admin endpoint disabled ([admin] enabled = false): no metrics, no queue control")
        }
        (false, false) => println!("admin: disabled ([admin] enabled = false): no metrics, no queue control"),
    }
    if c.tracking.enabled {
        let dir = c.spool.dir.join("tracking");
        if json {
            tracing::info!(dir = %dir.display(), "tracking log");
        } else {
            println!("tracking: {}", dir.display());
        }
    }
    let logged: Vec<&str> =
        c.receive_connectors.iter().filter(|rc| rc.protocol_log).map(|rc| rc.name.as_str()).collect();
    if !logged.is_empty() {
        let dir = c.spool.dir.join("protocol");
        let names = logged.join(", ");
        if json {
            tracing::info!(dir = %dir.display(), connectors = %names, "protocol log");
        } else {
            println!("protocol log: {} (connectors: {names})", dir.display());
        }
    }
    // check-config's warnings, at every start: fsync = never, admin off loopback, open relays,
    // AUTH without TLS, ... (config::validate), and the settings obs adjusts.
    for w in warnings {
        if json {
            tracing::warn!(key = %w.key, "{}", w.message);
        } else {
            println!("WARNING: {}: {}", w.key, w.message);
        }
    }
    if json {
        tracing::info!("ringrelay ready");
    } else {
        println!("ringrelay ready");
    }
}

/// What the main thread was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, caught on the main thread.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the signal runtime: {e}"))?;
        let (term, int, hup) = rt.block_on(async {
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        });
        let term = term.map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let int = int.map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        let hup = hup.map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        Ok(Signals { rt, term, int, hup })
    }

    /// Blocks until SIGTERM, SIGINT or SIGHUP.
    fn wait(&mut self) -> Signal {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => Signal::Stop,
                _ = self.int.recv() => Signal::Stop,
                _ = self.hup.recv() => Signal::Reload,
            }
        })
    }
}
