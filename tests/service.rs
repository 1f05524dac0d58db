//! The real binary under a service manager: the notify protocol (READY, STATUS,
//! STOPPING) on a socket the test binds, SIGHUP and SIGTERM, the log format, the
//! systemd units (`systemd-analyze verify`, the system calls their filter allows) and
//! the README's service setup commands run as written (root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshsync");
/// How long to wait for something the daemon does within seconds; only a hang hits it.
const PATIENCE: Duration = Duration::from_secs(120);

fn meshsync(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--home").arg(home);
    c
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The service manager's end of the notify protocol.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every assignment received, in order ("READY=1", "STATUS=...").
    seen: Vec<String>,
}

impl Manager {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        Self { sock, path, seen: Vec::new() }
    }

    /// Waits until an assignment satisfying `want` has arrived; returns the first.
    fn wait(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.wait_count(what, &want, 1);
        self.seen.iter().find(|s| want(s)).cloned().unwrap_or_default()
    }

    /// Waits until `n` assignments satisfying `want` have arrived.
    fn wait_count(&mut self, what: &str, want: impl Fn(&str) -> bool, n: usize) {
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        while self.seen.iter().filter(|s| want(s)).count() < n {
            assert!(start.elapsed() < PATIENCE, "no {what} from the daemon; it sent {:?}", self.seen);
            let Ok(len) = self.sock.recv(&mut buf) else { continue };
            let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
            self.seen.extend(msg.lines().filter(|l| !l.is_empty()).map(String::from));
        }
    }
}

/// A `meshsync run` started by the test; killed if the test fails before it stops it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(mut cmd: Command, notify: &Path, log: PathBuf) -> Self {
        let err = std::fs::File::create(&log).unwrap();
        let child = cmd.env("NOTIFY_SOCKET", notify).stdout(Stdio::null()).stderr(err).spawn().unwrap();
        Self { child, log }
    }

    fn signal(&self, pid: u32, sig: i32) {
        // SAFETY: kill has no memory preconditions; the pid is a child of this test.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit; the status and the log.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, self.log());
            }
            assert!(start.elapsed() < PATIENCE, "the daemon did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shares the running daemon reports.
fn share_names(home: &Path) -> Vec<String> {
    let out = meshsync(home).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    v["shares"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new node with one share, in `dir`.
fn node(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    ok(meshsync(&home).args(["init", "--name", "n1", "--listen", "127.0.0.1:0"]).output().unwrap());
    ok(meshsync(&home).args(["share", "add", "first"]).arg(dir.join("first")).output().unwrap());
    home
}

/// A new node in `dir` run with `args` before `run` and `env`, once it said READY=1.
fn ready_node(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (PathBuf, Manager, Daemon, u32) {
    let home = node(dir);
    let mut mgr = Manager::bind(dir);
    let mut cmd = meshsync(&home);
    cmd.args(args).arg("run").envs(env.iter().copied());
    let d = Daemon::spawn(cmd, &mgr.path, dir.join("log"));
    let pid = d.child.id();
    mgr.wait("READY=1", |s| s == "READY=1");
    (home, mgr, d, pid)
}

#[test]
fn run_tells_the_service_manager_and_obeys_sighup_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // As systemd sets it for WatchdogSec=2 (and no WATCHDOG_PID: any pid).
    let (home, mut mgr, d, pid) = ready_node(dir.path(), &[], &[("WATCHDOG_USEC", "2000000")]);
    let line = mgr.wait("a STATUS= summary", |s| s.starts_with("STATUS=") && s.contains("share"));
    assert!(line.contains("1 share,"), "{line}");
    assert_eq!(share_names(&home), ["first"]);

    // A share appended with the file's mtime put back: the once-a-second poll cannot
    // see it, only SIGHUP makes the daemon read the file.
    let cfg = home.join("config.toml");
    let mtime = std::fs::metadata(&cfg).unwrap().modified().unwrap();
    let late = dir.path().join("late");
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!("\n[[share]]\nname = \"late\"\npath = \"{}\"\n", late.display());
    let tmp = dir.path().join("config.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    assert_eq!(std::fs::metadata(&cfg).unwrap().modified().unwrap(), mtime);
    d.signal(pid, libc::SIGHUP);
    wait_until("the share added to the config (SIGHUP)", || share_names(&home).len() == 2);
    assert_eq!(share_names(&home), ["first", "late"]);
    // A folder that is not there is a missing disk until the user says otherwise.
    assert!(!late.exists(), "the daemon never makes a share's folder");
    mgr.wait("a STATUS= with both shares", |s| s.starts_with("STATUS=") && s.contains("2 shares"));
    d.signal(pid, libc::SIGHUP);
    wait_until("the second reload", || d.log().matches("config reloaded").count() == 2);

    mgr.wait_count("WATCHDOG=1 again and again", |s| s == "WATCHDOG=1", 3);

    d.signal(pid, libc::SIGTERM);
    mgr.wait("STOPPING=1", |s| s == "STOPPING=1");
    let (status, log) = d.wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(log.matches("SIGHUP: reloading config").count(), 2, "{log}");
    assert!(log.contains("share added") && log.contains("stopped"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log that is not a terminal:\n{log}");
}

#[test]
fn log_format_json_on_the_command_line_makes_every_log_line_json() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _mgr, d, pid) = ready_node(dir.path(), &["--log-format", "json"], &[]);
    d.signal(pid, libc::SIGTERM);
    let (status, log) = d.wait();
    assert!(status.success(), "{log}");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|v| v["fields"]["message"] == "started"), "{log}");

    let bad = meshsync(&home).args(["--log-format", "xml", "status"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected human or json"));
}

/// `systemd-analyze`, installed if missing and allowed; None (with the reason
/// printed) when it cannot be had.
fn systemd_analyze() -> Option<&'static str> {
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("systemd-analyze");
    }
    if !is_root() {
        eprintln!("skipped: systemd-analyze is missing and only root may install it (apt-get install systemd)");
        return None;
    }
    let got = Command::new("apt-get").args(["install", "-y", "systemd"]).output();
    if got.is_ok_and(|o| o.status.success()) {
        return Some("systemd-analyze");
    }
    eprintln!("skipped: systemd-analyze is missing and `apt-get install -y systemd` failed");
    None
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A unit file with its ExecStart pointed at the built binary (verify insists that
/// the program exists), in `dir`.
fn unit_copy(dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo(&format!("systemd/{name}"))).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/meshsync "), "{name} runs /usr/local/bin/meshsync");
    let path = dir.join(name);
    std::fs::write(&path, text.replace("ExecStart=/usr/local/bin/meshsync ", &format!("ExecStart={BIN} "))).unwrap();
    path
}

#[test]
fn systemd_analyze_verify_passes_the_units_without_a_word() {
    let Some(analyze) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    for name in ["meshsync.service", "meshsync@.service"] {
        let unit = unit_copy(dir.path(), name);
        let out = Command::new(analyze).arg("verify").arg(&unit).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("systemd-analyze verify {name}: exit {:?}, output {said:?}", out.status.code());
        assert!(out.status.success() && said.trim().is_empty(), "{name}:\n{said}");
    }
}

/// The system calls a `SystemCallFilter=` group stands for, groups expanded.
fn syscall_group(analyze: &str, group: &str) -> std::collections::BTreeSet<String> {
    let out = ok(Command::new(analyze).args(["syscall-filter", group]).output().unwrap());
    let mut calls = std::collections::BTreeSet::new();
    for word in out.lines().skip(1).map(str::trim).filter(|w| !w.is_empty() && !w.starts_with('#')) {
        if word.starts_with('@') {
            calls.extend(syscall_group(analyze, word));
        } else {
            calls.insert(word.to_string());
        }
    }
    calls
}

/// System call names in a `strace -c -o FILE` summary.
fn strace_summary(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('%') && !l.starts_with('-') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| *name != "total")
        .map(String::from)
        .collect()
}

/// The unit's filter runs the daemon: every system call it makes while it syncs (the
/// demo: three nodes, a file spread among them) and while it serves systemd (run:
/// notify, SIGHUP, SIGTERM) is in the allow list and in none of the deny lists. The
/// unit's `SystemCallErrorNumber=EPERM` would otherwise turn it into failed writes.
#[test]
fn every_system_call_the_daemon_makes_passes_the_units_filter() {
    let Some(analyze) = systemd_analyze() else { return };
    if Command::new("strace").arg("-V").output().is_err() {
        let installed = is_root()
            && Command::new("apt-get").args(["install", "-y", "strace"]).output().is_ok_and(|o| o.status.success());
        if !installed {
            eprintln!("skipped: strace is missing and cannot be installed here");
            return;
        }
    }
    let unit = std::fs::read_to_string(repo("systemd/meshsync.service")).unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for value in unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (deny, list) = value.strip_prefix('~').map_or((false, value), |v| (true, v));
        for item in list.split_whitespace() {
            let calls = if item.starts_with('@') { syscall_group(analyze, item) } else { [item.into()].into() };
            if deny { &mut denied } else { &mut allowed }.extend(calls);
        }
    }
    assert!(!allowed.is_empty(), "the unit has an allow list");

    let dir = tempfile::tempdir().unwrap();
    let demo_trace = dir.path().join("demo.strace");
    let demo = Command::new("strace")
        .args(["-f", "-qq", "-c", "-o"])
        .arg(&demo_trace)
        .args([BIN, "demo", "--size-mib", "4"])
        .output()
        .unwrap();
    ok(demo);

    let home = node(dir.path());
    let mut mgr = Manager::bind(dir.path());
    let run_trace = dir.path().join("run.strace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-c", "-o"]).arg(&run_trace).arg(BIN).arg("--home").arg(&home).arg("run");
    let d = Daemon::spawn(cmd, &mgr.path, dir.path().join("log"));
    mgr.wait("READY=1", |s| s == "READY=1");
    mgr.wait("a STATUS= summary", |s| s.starts_with("STATUS=") && s.contains("share"));
    // The daemon is strace's child: signals go to it, not to strace.
    let strace_pid = d.child.id();
    let children = std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let pid: u32 = children.split_whitespace().next().expect("strace runs the daemon").parse().unwrap();
    d.signal(pid, libc::SIGHUP);
    wait_until("the reload", || d.log().contains("config reloaded"));
    d.signal(pid, libc::SIGTERM);
    let (status, log) = d.wait();
    assert!(status.success(), "{log}");

    let mut used = strace_summary(&demo_trace);
    used.extend(strace_summary(&run_trace));
    used.sort();
    used.dedup();
    println!("{} distinct system calls: {}", used.len(), used.join(" "));
    assert!(used.len() > 20 && used.iter().any(|c| c == "sendmsg" || c == "sendmmsg"), "{used:?}");
    let refused: Vec<&String> = used.iter().filter(|c| !allowed.contains(*c) || denied.contains(*c)).collect();
    assert!(refused.is_empty(), "the unit's SystemCallFilter refuses {refused:?}");
}

/// The shell commands between `<!-- service-setup:begin -->` and `end` in README.md.
fn readme_service_setup() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let block = readme
        .split("<!-- service-setup:begin -->")
        .nth(1)
        .and_then(|r| r.split("<!-- service-setup:end -->").next())
        .expect("README.md marks its service setup commands");
    block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("```")).map(String::from).collect()
}

/// Removes the user the README's commands created, whatever way the test ends.
struct UserGuard(&'static str);

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(self.0).output();
        let _ = Command::new("groupdel").arg(self.0).output();
    }
}

fn uid_of(user: &str) -> u32 {
    let out = ok(Command::new("id").args(["-u", user]).output().unwrap());
    out.trim().parse().unwrap()
}

/// README's "Run as a service" commands, as written, with the home and the share
/// under a temp dir instead of /var/lib/meshsync and /srv/www (the only change), and
/// `meshsync` on PATH pointing at the built binary; then the daemon is started as the
/// unit starts it (its user, UMask=0077, its ExecStart line, a notify socket) in a
/// network namespace of its own, as its `listen` is 0.0.0.0:7700.
#[test]
fn the_readme_service_setup_commands_work_as_written() {
    if !is_root() {
        eprintln!("skipped: creates a system user, so it needs root (CI runs it)");
        return;
    }
    for tool in ["useradd", "userdel", "runuser", "setpriv", "unshare", "install"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            eprintln!("skipped: {tool} is missing");
            return;
        }
    }
    if Command::new("id").arg("meshsync").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: a user meshsync exists on this host; this test creates (and removes) its own");
        return;
    }
    if !Command::new("unshare").args(["--net", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a network namespace here (unshare --net)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The service user must reach the home, the share and the binary.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("meshsync")).unwrap();
    let home = dir.path().join("var/lib/meshsync");
    let share = dir.path().join("srv/www");
    let place = |s: &str| {
        s.replace("/var/lib/meshsync", &home.display().to_string()).replace("/srv/www", &share.display().to_string())
    };
    let script = readme_service_setup().iter().map(|l| place(l)).collect::<Vec<_>>().join("\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let _user = UserGuard("meshsync");
    let out = Command::new("sh").args(["-e", "-x", "-c", &script]).env("PATH", &path).output().unwrap();
    println!("{}", String::from_utf8_lossy(&out.stderr));
    ok(out);
    let meshsync_uid = uid_of("meshsync");
    for f in ["node.key", "ca.key", "config.toml"] {
        let m = std::fs::metadata(home.join(f)).unwrap();
        assert_eq!(m.uid(), meshsync_uid, "{f} belongs to the service's user");
    }

    // The mistake the README avoids is refused, with the command that works.
    let wrong = meshsync(&home).args(["share", "add", "more"]).arg(dir.path().join("more")).output().unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("belongs to user meshsync"), "{err}");
    assert!(err.contains(&format!("runuser -u meshsync -- {BIN} --home {} share add more", home.display())), "{err}");
    let as_meshsync = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new("runuser");
        c.args(["-u", "meshsync", "--", "meshsync", "--home"]).arg(&home).args(args).env("PATH", &path);
        c.output().unwrap()
    };
    // A share folder the service's user cannot write.
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let denied = as_meshsync(&["share".as_ref(), "add".as_ref(), "closed".as_ref(), closed.as_os_str()]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success() && err.contains("is not writable by user meshsync"), "{err}");
    // The state the issue found (a key written by root into the user's home) is named,
    // with the fix, instead of "Permission denied" from deep inside the start.
    std::os::unix::fs::chown(home.join("node.key"), Some(0), Some(0)).unwrap();
    let mixed = as_meshsync(&["run".as_ref()]);
    let err = String::from_utf8_lossy(&mixed.stderr);
    assert!(err.contains("node.key belongs to user root"), "{err}");
    assert!(err.contains(&format!("chown -R meshsync: {}", home.display())), "{err}");
    std::os::unix::fs::chown(home.join("node.key"), Some(meshsync_uid), Some(meshsync_uid)).unwrap();

    let unit = std::fs::read_to_string(repo("systemd/meshsync.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let exec = place(&exec.replace("/usr/local/bin/meshsync", BIN));
    assert!(unit.contains("User=meshsync") && unit.contains("UMask=0077"));
    let notify_dir = dir.path().join("notify");
    std::fs::create_dir(&notify_dir).unwrap();
    let mut mgr = Manager::bind(&notify_dir);
    std::fs::set_permissions(&mgr.path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--", "setpriv", "--reuid=meshsync", "--regid=meshsync", "--init-groups", "--"]);
    cmd.args(exec.split_whitespace()).env_clear().env("PATH", &path);
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let d = Daemon::spawn(cmd, &mgr.path, dir.path().join("log"));
    mgr.wait("READY=1", |s| s == "READY=1");
    let st = ok(meshsync(&home).args(["status", "--json"]).output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["node"]["name"], "web1", "{st}");
    assert_eq!(v["shares"][0]["name"], "www", "{st}");
    assert_eq!(v["shares"][0]["path"], share.display().to_string(), "{st}");
    let sock = std::fs::metadata(home.join("control.sock")).unwrap();
    assert_eq!((sock.uid(), sock.mode() & 0o777), (meshsync_uid, 0o600), "the control socket is the user's alone");
    d.signal(d.child.id(), libc::SIGTERM);
    let (status, log) = d.wait();
    assert!(status.success(), "{log}");
}
