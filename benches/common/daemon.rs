//! Real `meshsync run` daemons on loopback for the benches (flood, bigtree): set
//! up with the CLI (`init` or `invite` + `join`, `share add`), asked over the
//! control socket, measured from /proc, killed on drop.

// Each bench includes this file and uses a part of it.
#![allow(dead_code)]

use anyhow::{bail, Context};
use meshsync::home::Home;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon a bench started; killed on drop.
pub struct Daemon {
    /// Its MESHSYNC_HOME.
    pub home: PathBuf,
    /// Its share's folder.
    pub share: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
    /// The `meshsync run` process.
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `meshsync ARGS` for `home` (with `stdin` fed in); its stdout, or an error with its stderr.
pub fn cli(bin: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin);
    cmd.env("MESHSYNC_HOME", home).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        w.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("meshsync {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a node lives and what it shares.
pub struct NodeSpec<'a> {
    /// The folder its home and log go in.
    pub dir: &'a Path,
    /// Its name.
    pub name: &'a str,
    /// The share's name.
    pub share_name: &'a str,
    /// The share's folder (made if missing).
    pub share: PathBuf,
    /// Settings added to the `[node]` table of its config.toml (`key = value`).
    pub node_lines: &'a [String],
}

impl Daemon {
    /// Sets up a node (`init`, or `join` through `inviter`), adds the share and
    /// starts `meshsync run`; returns once it answers `status`.
    pub async fn start(bin: &Path, spec: NodeSpec<'_>, inviter: Option<&Daemon>) -> anyhow::Result<Daemon> {
        let NodeSpec { dir, name, share_name, share, node_lines } = spec;
        let home = dir.join(name);
        std::fs::create_dir_all(&share)?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        match inviter {
            None => drop(cli(bin, &home, &["init", "--name", name, "--listen", &listen], None)?),
            Some(i) => {
                let token = cli(bin, &i.home, &["invite", "--ttl", "10m"], None)?;
                cli(bin, &home, &["join", "--name", name, "--listen", &listen], Some(token.trim()))?;
            }
        }
        cli(bin, &home, &["share", "add", share_name, &share.to_string_lossy()], None)?;
        if !node_lines.is_empty() {
            let path = home.join("config.toml");
            let text = std::fs::read_to_string(&path)?;
            let lines: String = node_lines.iter().map(|l| format!("{l}\n")).collect();
            let Some(text) = text.split_once("[node]\n").map(|(a, b)| format!("{a}[node]\n{lines}{b}")) else {
                bail!("{}: no [node] table", path.display());
            };
            std::fs::write(&path, text)?;
        }
        let log = dir.join(format!("{name}.log"));
        let child = spawn_run(bin, &home, &log)?;
        let d = Daemon { home, share, log, child };
        d.answering().await?;
        Ok(d)
    }

    /// Stops the daemon (SIGTERM, as systemd does) and starts it again; returns
    /// once it answers `status`.
    pub async fn restart(&mut self, bin: &Path) -> anyhow::Result<()> {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        self.child = spawn_run(bin, &self.home, &self.log)?;
        self.answering().await
    }

    /// Waits until the daemon answers `status`.
    async fn answering(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        while meshsync::ops::control::status(&self.home()).await.is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("the daemon of {} does not answer status", self.home.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Its home, as the control client takes it.
    pub fn home(&self) -> Home {
        Home::new(&self.home)
    }

    /// Its resident set now, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        proc_kib(self.child.id(), "VmRSS:").map(|k| k / 1024.0)
    }
}

/// `meshsync run` for `home`, its log appended to `log`.
fn spawn_run(bin: &Path, home: &Path, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(bin)
        .arg("run")
        .env("MESHSYNC_HOME", home)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// A `kB` line of /proc/<pid>/status (e.g. `VmRSS:`, `VmHWM:`).
pub fn proc_kib(pid: u32, key: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} line"))
}

/// Runs a bench's body on a Tokio runtime; its error, if any, goes to stderr.
pub fn block_on_main(
    name: &str,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
