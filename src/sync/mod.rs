//! The pure cores of the sync engine: the planner, the swarm scheduler, pieces,
//! the upload policy and the tombstone rules. No I/O, no tokio, no locks, no clock but a `now` passed in;
//! `transfer`, `gossip` and `daemon` drive them.

pub mod batch;
pub mod compress;
pub mod dial;
pub mod pieces;
pub mod planner;
pub mod swarm;
pub mod tombstones;
pub mod upload;

pub use planner::{plan_path, Action};
