//! The `meshsync` command line: parse, call the library, print.

use anyhow::Context;
use clap::Parser;
use meshsync::cli::{Cli, Cmd, PeersCmd, ShareCmd, SharePeersCmd};
use meshsync::config::Config;
use meshsync::home::Home;
use meshsync::identity::Role;
use meshsync::ops::control::PeersChange;
use meshsync::{daemon, demo, logging, ops, setup};
use std::path::PathBuf;
use std::process::ExitCode;

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
        Cmd::Peers { cmd: Some(PeersCmd::Remove { peer }), .. } => {
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
                Some(SharePeersCmd::Add { peer }) => PeersChange::Add(peer),
                Some(SharePeersCmd::Remove { peer }) => PeersChange::Remove(peer),
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
        Cmd::Share { cmd: ShareCmd::ConfirmDeletes { name } } => {
            ops::control::confirm_deletes(&home(cli.home)?, name.clone()).await?;
            println!("share {name}: the deletions are confirmed and will reach the peers");
        }
        Cmd::Versions { share, path } => {
            print!("{}", ops::versions::table(&ops::versions::list(&home(cli.home)?, &share, path.as_deref())?));
        }
        Cmd::Restore { share, path, at } => {
            println!("{}", ops::versions::restore(&home(cli.home)?, &share, &path, at)?)
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
        Cmd::Share { cmd: ShareCmd::List } => print!("{}", ops::shares::list(&home(cli.home)?).await?),
        Cmd::Share { cmd: ShareCmd::Remove { name } } => {
            let h = own_home(cli.home)?;
            let (gone, by) = ops::shares::remove(&h, &name).await?;
            let how = match by {
                ops::shares::RemovedBy::Daemon => "the daemon stopped syncing it",
                ops::shares::RemovedBy::NoDaemon => "no daemon runs; its index is dropped",
            };
            println!("share {name} removed ({how}) and taken out of {}", h.config().display());
            println!(
                "its files in {0} stay, with the marker {0}/.meshsync/share.toml;                  `meshsync share add {name} {0}` takes the folder back",
                gone.path.display()
            );
        }
        Cmd::Peers { cmd: Some(PeersCmd::Forget { peer }), .. } => {
            let name = ops::control::forget_peer(&home(cli.home)?, peer).await?;
            println!("forgot {name}: it is no longer dialed, listed or waited for");
        }
        Cmd::Peers { cmd: None, json } => {
            let raw = ops::control::request(&home(cli.home)?, &ops::control::Request::Status).await?;
            if json {
                print!("{}", ops::peers::json(&raw)?);
            } else {
                let st: ops::status::Status =
                    serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))?;
                print!("{}", ops::peers::table(&st));
            }
        }
        Cmd::Leave { yes, offline } => {
            anyhow::ensure!(
                yes,
                "`meshsync leave` takes this node out of the mesh for good: its peers forget it and its keys and                  index leave its home (the shares' files stay); run `meshsync leave --yes` to do it"
            );
            print!("{}", ops::leave::describe(&ops::leave::leave(&own_home(cli.home)?, offline).await?));
        }
        Cmd::Reload => {
            let h = home(cli.home)?;
            // A broken file is named here, with its line, and exits with the config status.
            Config::load(&h.config())?;
            print!("{}", ops::check::reload_text(&ops::control::reload(&h).await?));
        }
        Cmd::CheckConfig { file } => {
            let path = match file {
                Some(f) => f,
                None => home(cli.home)?.config(),
            };
            print!("{}", ops::check::check(&path)?);
        }
        Cmd::Completions { shell } => meshsync::cli::completions(shell, &mut std::io::stdout()),
        Cmd::Man => meshsync::cli::man(&mut std::io::stdout())?,
        Cmd::Demo { keep, size_mib } => demo::run(keep, size_mib).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run) {
        logging::init(cli.log_format.unwrap_or_default(), "warn");
    }
    if matches!(cli.cmd, Cmd::Run) {
        meshsync::daemon::limit_arenas();
    }
    let rt = match meshsync::daemon::runtime::build() {
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
