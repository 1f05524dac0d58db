//! The rsync baselines: an sshd in each receiving host's namespace (own keys and
//! config in a temp dir) and `rsync -a --whole-file -e ssh` run from host 0.

use super::netns::Host;
use super::util::{self, run};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the rsync methods need, found on this machine.
#[derive(Clone)]
pub struct Tools {
    rsync: PathBuf,
    ssh: PathBuf,
    ssh_keygen: PathBuf,
    sshd: PathBuf,
}

/// Package hint printed when something is missing.
pub const INSTALL_HINT: &str = "apt-get install rsync openssh-server openssh-client";

impl Tools {
    /// Finds rsync, ssh, ssh-keygen and sshd, or names the first one missing.
    pub fn find() -> Result<Self, String> {
        let get = |name: &str| util::which(name).ok_or_else(|| format!("`{name}` is not installed ({INSTALL_HINT})"));
        Ok(Tools { rsync: get("rsync")?, ssh: get("ssh")?, ssh_keygen: get("ssh-keygen")?, sshd: get("sshd")? })
    }
}

/// sshd daemons on the receivers; stopped on drop.
pub struct Sshd {
    tools: Tools,
    key: PathBuf,
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Sshd {
    /// Generates a host key and a client key in `dir` and starts an sshd in the
    /// namespace of every host after the first, listening on that host's address.
    pub fn start(tools: Tools, hosts: &[Host], dir: &Path, logs: &Path, tag: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let host_key = dir.join("host_ed25519");
        let key = dir.join("client_ed25519");
        for k in [&host_key, &key] {
            if !k.exists() {
                run(Command::new(&tools.ssh_keygen).args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(k))?;
            }
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &auth).context("writing authorized_keys")?;
        // sshd refuses to start without its privilege-separation directory, which
        // the package normally has systemd create at boot.
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let mut me = Sshd { tools, key, children: Vec::new(), logs: Vec::new() };
        for (i, h) in hosts.iter().enumerate().skip(1) {
            let cfg = dir.join(format!("sshd_config_h{i}"));
            let text = format!(
                "ListenAddress {addr}:22\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPidFile {pid}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nUseDNS no\nX11Forwarding no\nPrintMotd no\n",
                addr = h.addr,
                hk = host_key.display(),
                auth = auth.display(),
                pid = dir.join(format!("sshd_h{i}.pid")).display(),
            );
            std::fs::write(&cfg, text).with_context(|| format!("writing {}", cfg.display()))?;
            let log = logs.join(format!("{tag}-sshd-h{i}.log"));
            let logf = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            // -D: stay in the foreground so the lab owns (and stops) the process.
            let child = util::in_ns(&h.ns, &me.tools.sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(logf)
                .spawn()
                .with_context(|| format!("starting sshd on host {i}"))?;
            me.children.push(child);
            me.logs.push(log);
        }
        for (i, h) in hosts.iter().enumerate().skip(1) {
            me.wait_ready(&hosts[0], h, i)?;
        }
        Ok(me)
    }

    /// Waits until an ssh from host 0 to host `i` logs in and runs `true`.
    fn wait_ready(&self, from: &Host, to: &Host, i: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let r = run(util::in_ns(&from.ns, &self.tools.ssh)
                .args(self.ssh_opts())
                .arg(format!("root@{}", to.addr))
                .arg("true"));
            match r {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(20) => {
                    bail!(
                        "sshd on host {i} never accepted a login: {e:#}\nsshd log:\n{}",
                        util::tail(&self.logs[i - 1], 20)
                    )
                }
                Err(_) => util::sleep(Duration::from_millis(200))?,
            }
        }
    }

    fn ssh_opts(&self) -> Vec<String> {
        [
            "-i",
            &self.key.to_string_lossy(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `rsync -a --whole-file -e ssh SRC root@host:DEST_DIR/`, run in host 0's
    /// namespace, stdout/stderr to `log`.
    pub fn rsync(&self, from: &Host, src: &Path, to: &Host, dest_dir: &Path, log: &Path) -> anyhow::Result<Child> {
        self.rsync_with(&["-a", "--whole-file"], from, src, to, dest_dir, log)
    }

    /// `rsync OPTIONS -e ssh SRC root@host:DEST_DIR/` (a `SRC` ending in `/` copies
    /// what is in it), run in `from`'s namespace, stdout/stderr to `log`.
    pub fn rsync_with(
        &self,
        options: &[&str],
        from: &Host,
        src: &Path,
        to: &Host,
        dest_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Child> {
        // rsync splits -e on spaces and honours single quotes.
        let quoted: Vec<String> = std::iter::once(self.tools.ssh.to_string_lossy().to_string())
            .chain(self.ssh_opts())
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect();
        if quoted.iter().any(|a| a.matches('\'').count() > 2) {
            bail!("paths with a single quote cannot be passed to rsync -e: {}", quoted.join(" "));
        }
        let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        util::in_ns(&from.ns, &self.tools.rsync)
            .args(options)
            .arg("-e")
            .arg(quoted.join(" "))
            .arg(src)
            .arg(format!("root@{}:{}/", to.addr, dest_dir.display()))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().context("duplicating a log handle")?)
            .stderr(logf)
            .spawn()
            .context("starting rsync")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        util::stop_children(&mut self.children, Duration::from_secs(5));
    }
}
