//! The layout of a node's home directory (`--home` / `MESHSYNC_HOME`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A node's home directory and the files in it.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// Wraps a directory (not created until something is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// This node's private key (PKCS#8 PEM, 0600).
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// This node's certificate (PEM).
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    /// The mesh CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The mesh CA private key (PEM, 0600); absent on `--no-invite` members.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// Pending invites: one file per token holding the hash of its secret.
    pub fn invites(&self) -> PathBuf {
        self.dir.join("invites")
    }
    /// The sled index.
    pub fn index(&self) -> PathBuf {
        self.dir.join("index")
    }
    /// The control socket of the running daemon (0600).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
}

/// Writes a file readable by its owner only, atomically (temp + rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Writes a file atomically with the given mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    // A unique name created fresh (create_new), so the mode always applies.
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
