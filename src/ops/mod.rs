//! Operating a node: the control socket, status, counters, bench, and the
//! day-to-day commands (shares, peers, leave, check-config).

pub mod bench_view;
pub mod check;
pub mod control;
pub mod leave;
pub mod metrics;
pub mod peers;
pub mod shares;
pub mod status;
pub mod status_line;
pub mod versions;

use crate::daemon::{self, NodeHandle};
use crate::home::Home;
use anyhow::Context;
use tracing::Instrument;

/// Starts the node of `home` with its control socket and, if configured, its
/// Prometheus metrics: what `meshsync run` runs. A metrics address that cannot be
/// bound stops the start before anything runs, rather than leaving dashboards empty.
pub async fn start_node(home: &Home) -> anyhow::Result<NodeHandle> {
    let config = crate::config::Config::load(&home.config())?;
    let metrics =
        match config.node.metrics_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("metrics_listen = \"{addr}\": cannot listen there (in use? another address?)")
            })?),
            None => None,
        };
    let node = daemon::start(home).await?;
    let handle = node.handle();
    let span = tracing::info_span!("ops");
    // Bound after the node opened its index, which fails while another daemon runs
    // with this home: the socket of a running daemon is never taken over.
    let control = control::bind(handle.home());
    tokio::spawn(control::serve(handle.clone(), control).instrument(span.clone()));
    if let Some(listener) = metrics {
        tokio::spawn(metrics::serve(handle, listener).instrument(span));
    }
    Ok(node)
}
