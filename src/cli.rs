//! The command line's grammar (clap): `main.rs` parses and dispatches it, and the
//! shell completions and the man page are made from it.

use crate::config::{LogFormat, ShareMode};
use clap::{CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole command line.
#[derive(Parser)]
#[command(name = "meshsync", version, about = "Peer-to-peer mesh sync: every host feeds every other host")]
pub struct Cli {
    /// Node home directory (keys, config, index). Defaults to ~/.meshsync.
    #[arg(long, global = true, env = "MESHSYNC_HOME")]
    pub home: Option<PathBuf>,
    /// Log format: human or json (overrides the config's `log`).
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Create a new mesh with this node as its first member.
    Init {
        /// This node's name.
        #[arg(long)]
        name: String,
        /// UDP address to listen on, e.g. 0.0.0.0:7700 (all interfaces).
        #[arg(long)]
        listen: SocketAddr,
        /// Addresses peers reach this node at, comma-separated (default: the listen
        /// address, or every interface address for a 0.0.0.0 / [::] listen).
        #[arg(long, value_delimiter = ',', value_parser = advertised_addr)]
        advertise: Vec<SocketAddr>,
    },
    /// Print a one-time join token for another host. The new node is a member: it
    /// may invite in turn (an admin signs the certificates), but holds no CA key.
    Invite {
        /// How long the token is valid (s, m, h, d).
        #[arg(long, default_value = "1h", value_parser = crate::setup::parse_ttl)]
        ttl: std::time::Duration,
        /// The new node may not invite others.
        #[arg(long, conflicts_with = "admin")]
        no_invite: bool,
        /// The new node is an admin: it receives the mesh CA key (admins only).
        #[arg(long)]
        admin: bool,
    },
    /// Join a mesh with a token from `meshsync invite`, read from stdin or --token-file.
    Join {
        /// The token; `-` or none (with stdin not a terminal): read it from stdin.
        /// Given here, it shows in `ps` and shell history.
        token: Option<String>,
        /// Read the token from this file.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// This node's name.
        #[arg(long)]
        name: String,
        /// UDP address to listen on, e.g. 0.0.0.0:7700 (all interfaces).
        #[arg(long)]
        listen: SocketAddr,
        /// Addresses peers reach this node at, comma-separated (default: the listen
        /// address, or every interface address for a 0.0.0.0 / [::] listen).
        #[arg(long, value_delimiter = ',', value_parser = advertised_addr)]
        advertise: Vec<SocketAddr>,
    },
    /// Manage shares.
    Share {
        #[command(subcommand)]
        cmd: ShareCmd,
    },
    /// Run the daemon in the foreground (SIGINT/SIGTERM stop it cleanly).
    Run,
    /// Show peers, shares and transfers of the running daemon.
    Status {
        /// Machine-readable output (shape documented in README.md).
        #[arg(long)]
        json: bool,
    },
    /// Measure the running mesh: per-peer RTT and throughput, then swarm a synthetic
    /// blob (kept outside every share, deleted afterwards) to all peers.
    Bench {
        /// Blob size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Bytes downloaded from each peer for its throughput figure, in MiB.
        #[arg(long, default_value_t = 32)]
        probe_mib: u64,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Scan shares now instead of at the next interval (e.g. at the end of an upload job).
    Rescan {
        /// Only this share (default: all).
        share: Option<String>,
    },
    /// Wait until every peer has this node's versions (e.g. after an upload job's
    /// `meshsync rescan`); exit status 1, with what is still behind, after --timeout.
    Wait {
        /// Only this share (default: all).
        share: Option<String>,
        /// Give up after this long (s, m, h, d); default: wait as long as it takes.
        #[arg(long, value_parser = crate::setup::parse_ttl)]
        timeout: Option<std::time::Duration>,
        /// Wait for connected peers only; by default an unreachable member means
        /// not caught up.
        #[arg(long)]
        connected_only: bool,
    },
    /// List the versions a share keeps of files peers' changes replaced or deleted.
    Versions {
        /// Share name.
        share: String,
        /// Only versions of this path (relative to the share).
        path: Option<String>,
    },
    /// Put a kept version back at its path (it then replicates like any edit).
    Restore {
        /// Share name.
        share: String,
        /// The path, relative to the share.
        path: String,
        /// The newest version kept at or before this time (2026-12-04T18:00:00Z or
        /// 20261204-180000, UTC); default: the newest.
        #[arg(long, value_parser = crate::ops::versions::parse_at)]
        at: Option<std::time::SystemTime>,
    },
    /// Put the mesh's versions back over a receive-only share's local changes
    /// (local additions are deleted).
    Revert {
        /// Share name.
        share: String,
    },
    /// The running daemon's peers: name, id, connected or not, addresses
    /// (`meshsync peer remove NAME` works too).
    #[command(alias = "peer")]
    Peers {
        #[command(subcommand)]
        cmd: Option<PeersCmd>,
        /// Machine-readable output (the `peers` of `status --json`).
        #[arg(long)]
        json: bool,
    },
    /// Leave the mesh: tell the connected peers (they forget this node), stop the
    /// daemon, and remove this node's keys, certificates and index from its home.
    /// The shares' files stay.
    Leave {
        /// Confirm: this node cannot come back as itself (`join` it again as a new node).
        #[arg(long)]
        yes: bool,
        /// Leave without a running daemon: peers are not told (forget it on each with
        /// `meshsync peers forget NAME`).
        #[arg(long)]
        offline: bool,
    },
    /// Make the running daemon apply config.toml now (as SIGHUP does) and say what
    /// it applied and what needs a restart.
    Reload,
    /// Check a config file (default: the home's config.toml): errors as
    /// `file:line: ...` with exit status 3, or a short summary.
    CheckConfig {
        /// The file to check.
        file: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `meshsync completions bash > /etc/bash_completion.d/meshsync`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `meshsync man > /usr/local/share/man/man1/meshsync.1`.
    Man,
    /// Run a local 3-node demo mesh on 127.0.0.1.
    Demo {
        /// Leave the mesh running and print how to look at it.
        #[arg(long)]
        keep: bool,
        /// Size of the demo file in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
    },
}

/// `meshsync share ...`.
#[derive(Subcommand)]
pub enum ShareCmd {
    /// Take part in share NAME with the local folder PATH (created if missing).
    Add {
        /// Share name, the same on every node.
        name: String,
        /// Local folder.
        path: PathBuf,
        /// send-receive, send-only or receive-only.
        #[arg(long, default_value = "send-receive")]
        mode: ShareMode,
        /// Only these nodes (names or ids, comma-separated) and this one take part
        /// (default: every member). Needs an admin with its daemon running.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
    },
    /// Show a share's members, or (on an admin) add or remove one.
    Peers {
        /// Share name.
        name: String,
        #[command(subcommand)]
        change: Option<SharePeersCmd>,
    },
    /// This node's shares: name, folder, mode, and (with a running daemon) whether
    /// each is paused.
    List,
    /// Stop taking part in share NAME: the running daemon stops syncing it at once,
    /// and its table leaves config.toml. Its files and its marker stay.
    Remove {
        /// Share name.
        name: String,
    },
    /// Resume a share paused because its folder looked wrong (missing marker, other
    /// filesystem), confirming the folder as it is now.
    Resume {
        /// Share name.
        name: String,
    },
    /// Resume a share paused because a scan found more deletions than `max_delete`
    /// allows: they are recorded and reach the peers.
    ConfirmDeletes {
        /// Share name.
        name: String,
    },
}

/// `meshsync peers ...`.
#[derive(Subcommand)]
pub enum PeersCmd {
    /// Forget a member that is gone for good (it left while this node was offline,
    /// or its host no longer exists): it is no longer dialed, listed or waited for.
    Forget {
        /// Its name, id, or the start of its id.
        peer: String,
    },
    /// (Admin) remove a node from the mesh: every member drops and refuses it.
    Remove {
        /// Its name or node id.
        peer: String,
    },
}

/// `meshsync share peers NAME ...`.
#[derive(Subcommand)]
pub enum SharePeersCmd {
    /// Let a node take part in the share.
    Add {
        /// Its name or node id.
        peer: String,
    },
    /// Stop a node taking part: it gets nothing more of the share.
    Remove {
        /// Its name or node id.
        peer: String,
    },
}

/// One `--advertise` address: one a peer can dial (a wildcard or port 0 would
/// reach no peer, and a join would spend its token before the config refused it).
fn advertised_addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|e| format!("{e}: expected IP:PORT, e.g. 203.0.113.7:7700"))?;
    if !crate::net::addrs::dialable(&a) {
        return Err(format!(
            "{a} is not an address peers can dial: name this host's own address and port, e.g. 203.0.113.7:7700"
        ));
    }
    Ok(a)
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "meshsync", out);
}

/// Writes the man page (roff): the command, then each subcommand's synopsis and
/// options, so one page covers them all.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    clap_mangen::Man::new(root.clone()).render(out)?;
    man_commands(&root, out)
}

fn man_commands(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for sub in cmd.get_subcommands() {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase().replace('-', "\\-"))?;
        let page = clap_mangen::Man::new(sub.clone());
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(out)?;
        }
        man_commands(sub, out)?;
    }
    Ok(())
}
