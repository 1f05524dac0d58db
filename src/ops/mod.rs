//! Operating a node: the control socket, status, counters, bench.

pub mod bench_view;
pub mod control;
pub mod metrics;
pub mod stats;
pub mod status;
pub mod status_line;
