//! Operating a node: the control socket, status, counters.

pub mod control;
pub mod stats;
pub mod status;
