//! The node-setup commands that do not need the daemon: init, invite, share add.

use crate::config::{valid_share_name, Config, ShareConfig, ShareMode};
use crate::home::Home;
use crate::identity::token::{self, InviteRight};
use crate::identity::{new_mesh, Identity};
use crate::ids::NodeId;
use crate::owner;
use crate::scan::marker;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Creates a new mesh in `home`: CA, this node's identity, config. `advertise`
/// empty: peers are told the listen address, or this host's interface addresses
/// for a wildcard listen.
pub fn init(home: &Home, name: &str, listen: SocketAddr, advertise: &[SocketAddr]) -> anyhow::Result<NodeId> {
    if home.config().exists() {
        bail!("{} already holds a node (found {})", home.dir().display(), home.config().display());
    }
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    std::fs::create_dir_all(home.dir()).with_context(|| format!("creating {}", home.dir().display()))?;
    let ident = new_mesh(name)?;
    ident.save(home)?;
    crate::home::write_atomic(&home.config(), Config::initial_text(name, listen, advertise).as_bytes(), 0o644)
        .with_context(|| format!("writing {}", home.config().display()))?;
    Ok(ident.id)
}

/// Issues a one-time join token for this node's mesh.
pub fn invite(home: &Home, ttl: Duration, right: InviteRight) -> anyhow::Result<String> {
    let cfg = Config::load(&home.config())?;
    let ident = Identity::load(home)?;
    if ident.ca_key_der.is_none() {
        bail!("this node joined with --no-invite and holds no CA key; run `meshsync invite` on another member");
    }
    let addrs = crate::net::addrs::advertised(cfg.node.listen, &cfg.node.advertise);
    if addrs.is_empty() {
        bail!(
            "no address to put in the token: this host has no usable interface address for listen = {}; \
             set `advertise = [\"<ip>:<port>\"]` in {}",
            cfg.node.listen,
            home.config().display()
        );
    }
    let t = token::issue(home, ident.ca_fingerprint(), addrs, ttl, right)?;
    Ok(t.encode())
}

/// Adds a share to the config (the running daemon picks it up).
pub fn share_add(home: &Home, name: &str, path: &Path, mode: ShareMode) -> anyhow::Result<()> {
    valid_share_name(name).map_err(anyhow::Error::msg)?;
    let path = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    std::fs::create_dir_all(&path).with_context(|| {
        let me = owner::user_name(owner::euid());
        format!("creating {} as user {me} (or make it as root: install -d -o {me} -g {me} {0})", path.display())
    })?;
    let path = path.canonicalize().with_context(|| format!("resolving {}", path.display()))?;
    let cfg = Config::load(&home.config())?;
    if let Some(s) = cfg.shares.iter().find(|s| s.name == name) {
        bail!("share {name:?} is already in {} (folder {})", home.config().display(), s.path.display());
    }
    let mesh = data_encoding::HEXLOWER.encode(&Identity::load(home)?.ca_fingerprint());
    let m = match marker::read_marker(&path, name)? {
        Some(m) if m.mesh == mesh && m.share == name => m,
        Some(m) => bail!(
            "{} is already marked as share {:?} of {} ({}); pick another folder",
            path.display(),
            m.share,
            if m.mesh == mesh { "this mesh" } else { "another mesh" },
            marker::marker_path(&path).display()
        ),
        None => marker::new_marker(&mesh, name),
    };
    // The daemon runs as this user (the home's owner) and writes into the share.
    owner::check_writable(&path)?;
    // The marker tells the daemon later that this folder is the share and not an
    // empty mount point left by an unmounted disk.
    marker::write_marker(&path, &m).with_context(|| format!("writing the share marker into {}", path.display()))?;
    Config::append_share(
        &home.config(),
        &ShareConfig { name: name.to_string(), path, mode, ignore: Vec::new(), schedule: None },
    )?;
    Ok(())
}

/// Parses durations like `90s`, `15m`, `1h`, `2d`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}: expected e.g. 30m, 1h, 2d"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("bad duration unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n * mul))
}
