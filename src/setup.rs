//! The node-setup commands that do not need the daemon: init, invite, share add,
//! and where `join` takes its token from.

use crate::config::{valid_share_name, Config, ShareConfig, ShareMode};
use crate::home::Home;
use crate::identity::token;
use crate::identity::{new_mesh, Identity, Role};
use crate::ids::NodeId;
use crate::owner;
use crate::scan::marker;
use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// Issues a one-time join token for this node's mesh; the joining node will have
/// `role`. An admin signs the certificate itself; a member's daemon asks an admin
/// over the mesh when the token is used.
pub fn invite(home: &Home, ttl: Duration, role: Role) -> anyhow::Result<String> {
    let cfg = Config::load(&home.config())?;
    let ident = Identity::load(home)?;
    match ident.role()? {
        Role::Admin => {}
        Role::Member if role == Role::Admin => {
            bail!("only an admin (a node holding the mesh CA key) can invite an admin; run `invite --admin` on one")
        }
        Role::Member => {}
        Role::NoInvite => {
            bail!("this node was invited with --no-invite and may not invite; run `meshsync invite` on another member")
        }
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
    let t = token::issue(home, ident.ca_fingerprint(), addrs, ttl, role)?;
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
        &ShareConfig {
            name: name.to_string(),
            path,
            mode,
            ignore: Vec::new(),
            schedule: None,
            max_delete: Default::default(),
            versioning: Default::default(),
            min_interval: crate::config::DEFAULT_MIN_INTERVAL,
            compression: Default::default(),
        },
    )?;
    Ok(())
}

/// Parses durations like `90s`, `15m`, `1h`, `2d` (see [`crate::config::parse_duration`]).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Where `meshsync join` takes its token from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The command line: visible to every local user in `ps` and kept in shell history.
    Argv(String),
    /// The first line of standard input (piped, or pasted after `join -`).
    Stdin,
    /// The first line of a file (`--token-file`).
    File(PathBuf),
}

/// Longest token text read from stdin or a file; a token is about 150 characters.
const MAX_TOKEN_TEXT: usize = 64 << 10;

impl TokenSource {
    /// Picks the source from `join`'s arguments: `-`, or no token while stdin is not
    /// a terminal, means stdin.
    pub fn from_args(token: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::choose(token, file, std::io::stdin().is_terminal())
    }

    fn choose(token: Option<String>, file: Option<PathBuf>, stdin_is_terminal: bool) -> anyhow::Result<Self> {
        match (token, file) {
            (Some(_), Some(_)) => bail!("give the token either as an argument or with --token-file, not both"),
            (None, Some(f)) => Ok(Self::File(f)),
            (Some(t), None) if t == "-" => Ok(Self::Stdin),
            (Some(t), None) => Ok(Self::Argv(t)),
            (None, None) if !stdin_is_terminal => Ok(Self::Stdin),
            (None, None) => bail!(
                "no join token given: pipe it in (`... | meshsync join --name N --listen A`), \
                 paste it after `meshsync join - ...`, or use --token-file FILE"
            ),
        }
    }

    /// What to tell the user about this source before using it, if anything.
    pub fn warning(&self) -> Option<&'static str> {
        match self {
            Self::Argv(_) => Some(
                "the join token is on the command line, where any local user can read it (`ps`) \
                 and use it before you, and your shell history keeps it; next time pass it on \
                 stdin (`meshsync join - ...` and paste, or pipe it in) or with --token-file FILE",
            ),
            Self::Stdin | Self::File(_) => None,
        }
    }

    /// The token text.
    pub fn read(self) -> anyhow::Result<String> {
        match self {
            Self::Argv(t) => Ok(t),
            Self::Stdin => first_line(std::io::stdin().lock(), "standard input"),
            Self::File(f) => {
                let file =
                    std::fs::File::open(&f).with_context(|| format!("reading the token file {}", f.display()))?;
                first_line(std::io::BufReader::new(file), &f.display().to_string())
            }
        }
    }
}

/// The first line of `r`, at most [`MAX_TOKEN_TEXT`] bytes: a token is one line.
fn first_line(r: impl BufRead, what: &str) -> anyhow::Result<String> {
    let mut line = Vec::new();
    r.take(MAX_TOKEN_TEXT as u64 + 1)
        .read_until(b'\n', &mut line)
        .with_context(|| format!("reading the join token from {what}"))?;
    if line.len() > MAX_TOKEN_TEXT {
        bail!("{what}: the first line is longer than {MAX_TOKEN_TEXT} bytes; expected one join token (msj1-...)");
    }
    let text = String::from_utf8(line)
        .map_err(|_| anyhow::anyhow!("{what}: expected a join token (msj1-...), found non-UTF-8 bytes"))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("no join token on {what}: expected one line msj1-... as printed by `meshsync invite`");
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_source_follows_the_arguments_and_stdin() {
        let choose = TokenSource::choose;
        assert_eq!(choose(Some("-".into()), None, true).unwrap(), TokenSource::Stdin);
        assert_eq!(choose(None, None, false).unwrap(), TokenSource::Stdin);
        assert_eq!(choose(None, Some("t".into()), false).unwrap(), TokenSource::File("t".into()));
        assert_eq!(choose(Some("msj1-x".into()), None, false).unwrap(), TokenSource::Argv("msj1-x".into()));
        let none = choose(None, None, true).unwrap_err().to_string();
        assert!(none.contains("--token-file") && none.contains("join -"), "{none}");
        assert!(choose(Some("msj1-x".into()), Some("t".into()), false).is_err());
        assert!(TokenSource::Argv("msj1-x".into()).warning().is_some_and(|w| w.contains("ps")));
        assert_eq!(TokenSource::Stdin.warning(), None);
    }

    #[test]
    fn a_token_is_the_first_line_trimmed_and_bounded() {
        let read = |b: &[u8]| first_line(b, "input");
        assert_eq!(read(b"  msj1-abc \n").unwrap(), "msj1-abc");
        assert_eq!(read(b"msj1-abc").unwrap(), "msj1-abc");
        assert_eq!(read(b"msj1-abc\nmore\n").unwrap(), "msj1-abc");
        assert!(read(b"").unwrap_err().to_string().contains("no join token on input"));
        assert!(read(b" \n").unwrap_err().to_string().contains("no join token on input"));
        assert!(read(b"\xff\n").unwrap_err().to_string().contains("non-UTF-8"));
        let long = vec![b'a'; MAX_TOKEN_TEXT + 1];
        assert!(read(&long).unwrap_err().to_string().contains("longer than 65536 bytes"));
        assert_eq!(read(&long[..MAX_TOKEN_TEXT]).unwrap().len(), MAX_TOKEN_TEXT);
    }
}
