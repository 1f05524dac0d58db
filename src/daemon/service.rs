//! `meshsync run`: the node in the foreground, told by signals what to do and telling
//! the service manager how it is (systemd's notify protocol: READY, STATUS, WATCHDOG,
//! STOPPING). Without `NOTIFY_SOCKET` (tests, a shell) nothing is sent.

use super::{Node, NodeHandle, NodeSnapshot};
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// How often the status line is refreshed at most.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The signals `meshsync run` obeys, caught from the moment this is made.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Do it before the node starts: until then SIGHUP's
    /// default action ends the process, and a reload sent while the node starts
    /// must not stop it.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Runs a started node until SIGINT or SIGTERM; SIGHUP re-reads the config at once.
/// `status_line` builds the one-line summary the service manager shows
/// (`systemctl status`) from a snapshot; it is computed off the runtime's workers.
pub async fn run(handle: NodeHandle, signals: Signals, status_line: fn(&NodeSnapshot) -> String) -> anyhow::Result<()> {
    let Signals { mut hup, mut term, mut int } = signals;
    let node = handle.node.clone();
    tell(&[NotifyState::Ready, NotifyState::Status("started")]);
    let reporter = notifying().then(|| tokio::spawn(report_status(handle.handle(), status_line)));
    let watchdog = sd_notify::watchdog_enabled();
    // systemd asks for a keep-alive at least every `watchdog`; half is its advice.
    let mut dog = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    dog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = int.recv() => { info!("SIGINT: shutting down"); break }
            _ = term.recv() => { info!("SIGTERM: shutting down"); break }
            // `meshsync leave`.
            _ = node.cancel.cancelled() => { info!("asked to stop: shutting down"); break }
            _ = hup.recv() => {
                info!("SIGHUP: reloading config");
                node.reload_now.notify_one();
            }
            _ = dog.tick(), if watchdog.is_some() => {
                if responsive(&node, dog.period() / 2).await {
                    tell(&[NotifyState::Watchdog]);
                } else {
                    warn!("the node's tasks did not answer in time; not telling the watchdog it is alive");
                }
            }
        }
    }
    tell(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    if let Some(r) = reporter {
        r.abort();
    }
    handle.shutdown().await;
    Ok(())
}

/// True when a service manager listens (`NOTIFY_SOCKET` is set).
fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends state changes to the service manager; a failure is logged, never fatal.
fn tell(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Keeps STATUS= current: the line is sent when it changes. Building it reads every
/// share's summary, which is cached but can take a while on a huge index that is
/// changing, so the pause after each build grows with what the build cost.
async fn report_status(node: super::Handle, status_line: fn(&NodeSnapshot) -> String) {
    let mut last = String::new();
    loop {
        let began = Instant::now();
        let n = node.clone();
        let Ok(line) = tokio::task::spawn_blocking(move || status_line(&n.snapshot())).await else { return };
        // The protocol separates assignments by newlines.
        let line = line.replace('\n', " ");
        if line != last {
            tell(&[NotifyState::Status(&line)]);
            last = line;
        }
        let pause = STATUS_EVERY.max(began.elapsed() * 10);
        tokio::select! {
            _ = node.stopped() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Whether the runtime's workers still run tasks and the node's shared tables can
/// be taken: what a deadlock or a starved runtime would stop.
async fn responsive(node: &Arc<Node>, within: Duration) -> bool {
    let n = node.clone();
    let probe = tokio::spawn(async move { (n.share_list().len(), n.peers.list().len()) });
    matches!(tokio::time::timeout(within, probe).await, Ok(Ok(_)))
}
