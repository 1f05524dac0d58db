//! meshsync: a peer-to-peer mesh sync daemon.
//!
//! The module tree is the architecture: see `../shared/DESIGN.md` and `README.md`.

pub mod codec;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod gossip;
pub mod home;
pub mod identity;
pub mod ids;
pub mod index;
pub mod logging;
pub mod net;
pub mod ops;
pub mod owner;
pub mod proto;
pub mod relpath;
pub mod scan;
pub mod setup;
pub mod stats;
pub mod sync;
pub mod transfer;
pub mod util;
pub mod watch;
