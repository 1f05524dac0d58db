//! meshsync: a peer-to-peer mesh sync daemon.
//!
//! The module tree is the architecture (`../shared/DESIGN.md`, README "Layout"),
//! top to bottom; a module imports only those below it (`tests/layers.rs` checks):
//!
//! - `cli`: the command line's grammar (main.rs dispatches it; completions, man page).
//! - `ops`: control socket, status, metrics, bench view, day-to-day commands; reads
//!   the daemon's `Handle`.
//! - `daemon`: the running node: sessions, share workers, dialer, join, trust records
//!   and certificates over the mesh, service.
//! - `transfer`, `gossip`: the engine around the pure cores: assembling, fetching and
//!   serving chunks; the index exchange, peers' progress maps, wire/storage boundary.
//! - `sync`: pure cores (planner, swarm scheduler, pieces, upload policy).
//! - `scan`, `watch`: finding local changes (walker, chunker, marker; inotify).
//! - `index`, `proto`, `identity`, `net`, `config`: storage, wire, trust, QUIC, config.
//! - `ids`, `relpath`, `codec`, `stats`, `util`, `home`: the ground floor.

pub mod cli;
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
