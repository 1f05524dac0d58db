//! The sync engine: the pure planner and swarm scheduler, and the executor that
//! carries their decisions out on disk and over the network.

pub mod apply;
pub mod availability;
pub mod local;
pub mod pieces;
pub mod planner;
pub mod swarm;

pub use apply::{ApplyError, ShareCtx};
pub use planner::{plan_path, Action};
