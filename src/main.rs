//! The `meshsync` command line: parse, call the library, print.

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshsync::config::{Config, LogFormat, ShareMode};
use meshsync::home::Home;
use meshsync::identity::Role;
use meshsync::ops::control::PeersChange;
use meshsync::{daemon, demo, logging, ops, setup};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "meshsync", version, about = "Peer-to-peer mesh sync: every host feeds every other host")]
struct Cli {
    /// Node home directory (keys, config, index). Defaults to ~/.meshsync.
    #[arg(long, global = true, env = "MESHSYNC_HOME")]
    home: Option<PathBuf>,
    /// Log format: human or json (overrides the config's `log`).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
        #[arg(long, value_delimiter = ',')]
        advertise: Vec<SocketAddr>,
    },
    /// Print a one-time join token for another host. The new node is a member: it
    /// may invite in turn (an admin signs the certificates), but holds no CA key.
    Invite {
        /// How long the token is valid (s, m, h, d).
        #[arg(long, default_value = "1h", value_parser = setup::parse_ttl)]
        ttl: std::time::Duration,
        /// The new node may not invite others.
        #[arg(long, conflicts_with = "admin")]
        no_invite: bool,
        /// The new node is an admin: it receives the mesh CA key (admins only).
        #[arg(long)]
        admin: bool,
    },
    /// Manage the mesh's nodes.
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
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
        #[arg(long, value_delimiter = ',')]
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
        #[arg(long, value_parser = setup::parse_ttl)]
        timeout: Option<std::time::Duration>,
        /// Wait for connected peers only; by default an unreachable member means
        /// not caught up.
        #[arg(long)]
        connected_only: bool,
    },
    /// Put the mesh's versions back over a receive-only share's local changes
    /// (local additions are deleted).
    Revert {
        /// Share name.
        share: String,
    },
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

#[derive(Subcommand)]
enum ShareCmd {
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
        change: Option<PeersCmd>,
    },
    /// Resume a share paused because its folder looked wrong (missing marker, other
    /// filesystem), confirming the folder as it is now.
    Resume {
        /// Share name.
        name: String,
    },
}

#[derive(Subcommand)]
enum PeersCmd {
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

#[derive(Subcommand)]
enum PeerCmd {
    /// (Admin) remove a node from the mesh: every member drops and refuses it.
    Remove {
        /// Its name or node id.
        peer: String,
    },
}

fn home(cli_home: Option<PathBuf>) -> anyhow::Result<Home> {
    match cli_home {
        Some(h) => Ok(Home::new(h)),
        None => {
            let base = std::env::var_os("HOME").context("neither --home, MESHSYNC_HOME nor HOME is set")?;
            Ok(Home::new(PathBuf::from(base).join(".meshsync")))
        }
    }
}

/// The home of a command that writes to it, refused if another user owns it.
fn own_home(cli_home: Option<PathBuf>) -> anyhow::Result<Home> {
    let h = home(cli_home)?;
    meshsync::owner::check_home(&h, &std::env::args().collect::<Vec<_>>())?;
    Ok(h)
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init { name, listen, advertise } => {
            let h = own_home(cli.home)?;
            let id = setup::init(&h, &name, listen, &advertise)?;
            println!("created mesh; node {name} is {id}\nhome: {}", h.dir().display());
            println!("next: `meshsync share add NAME PATH`, `meshsync run`, and `meshsync invite` for other hosts");
        }
        Cmd::Invite { ttl, no_invite, admin } => {
            let role = match (admin, no_invite) {
                (true, _) => Role::Admin,
                (false, true) => Role::NoInvite,
                (false, false) => Role::Member,
            };
            println!("{}", setup::invite(&own_home(cli.home)?, ttl, role)?);
        }
        Cmd::Peer { cmd: PeerCmd::Remove { peer } } => {
            let r = ops::control::remove_peer(&home(cli.home)?, peer).await?;
            println!("removed {} ({}) from the mesh: every member drops and refuses it", r.name, r.id);
        }
        Cmd::Join { token, token_file, name, listen, advertise } => {
            let h = own_home(cli.home)?;
            let source = setup::TokenSource::from_args(token, token_file)?;
            if let Some(w) = source.warning() {
                eprintln!("warning: {w}");
            }
            let token = source.read()?;
            let out = daemon::join(&h, &token, &name, listen, &advertise).await?;
            println!(
                "joined via {} as {}; node {name} is {}; {} peer(s) known",
                out.inviter,
                out.role.as_str(),
                out.id,
                out.peers
            );
        }
        Cmd::Share { cmd: ShareCmd::Add { name, path, mode, peers } } => {
            let h = own_home(cli.home)?;
            if !peers.is_empty() {
                // Members first: the share must never run, even briefly, open to everyone.
                meshsync::config::valid_share_name(&name).map_err(anyhow::Error::msg)?;
                let set = ops::control::share_peers(&h, name.clone(), PeersChange::Set(peers))
                    .await
                    .context("setting the share's members (an admin, with its daemon running, signs them)")?;
                print!("{}", set.human());
            }
            setup::share_add(&h, &name, &path, mode)?;
            println!("share {name} added ({})", mode.as_str());
        }
        Cmd::Share { cmd: ShareCmd::Peers { name, change } } => {
            let change = match change {
                None => PeersChange::Show,
                Some(PeersCmd::Add { peer }) => PeersChange::Add(peer),
                Some(PeersCmd::Remove { peer }) => PeersChange::Remove(peer),
            };
            print!("{}", ops::control::share_peers(&home(cli.home)?, name, change).await?.human());
        }
        Cmd::Run => {
            let h = own_home(cli.home)?;
            let cfg = Config::load(&h.config())?;
            logging::init(cli.log_format.unwrap_or(cfg.node.log), "info,quinn=warn,quinn_proto=warn");
            let signals = daemon::Signals::install()?;
            let node = ops::start_node(&h).await?;
            daemon::run(node, signals, ops::status_line::of).await?;
        }
        Cmd::Status { json } => {
            let h = home(cli.home)?;
            let raw = ops::control::request(&h, &ops::control::Request::Status).await?;
            if json {
                print!("{raw}");
            } else {
                let st: ops::status::Status =
                    serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))?;
                print!("{}", st.human());
            }
        }
        Cmd::Bench { size_mib, probe_mib, json } => {
            let report = ops::bench_view::run(&home(cli.home)?, size_mib, probe_mib).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", ops::bench_view::table(&report));
            }
        }
        Cmd::Share { cmd: ShareCmd::Resume { name } } => {
            ops::control::resume(&home(cli.home)?, name.clone()).await?;
            println!("share {name} resumed: its folder is marked as the share's again, and scanned");
        }
        Cmd::Revert { share } => {
            let n = ops::control::revert(&home(cli.home)?, share.clone()).await?;
            println!("reverting {n} local change(s) of share {share} to the mesh's versions");
        }
        Cmd::Rescan { share } => {
            let names = ops::control::rescan(&home(cli.home)?, share).await?;
            println!("rescanning {}", names.join(", "));
        }
        Cmd::Wait { share, timeout, connected_only } => {
            use ops::status::Waiting;
            let waiting = if connected_only { Waiting::ForConnected } else { Waiting::ForEveryMember };
            ops::control::wait(&home(cli.home)?, share, timeout, waiting).await?;
            println!("caught up: every peer has this node's versions");
        }
        Cmd::Demo { keep, size_mib } => demo::run(keep, size_mib).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run) {
        logging::init(cli.log_format.unwrap_or_default(), "warn");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(meshsync::exit::Exit::of(&e) as u8)
        }
    }
}
