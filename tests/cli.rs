//! The real binary: error messages and the demo.

use std::process::Command;

fn meshsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshsync"))
}

#[test]
fn a_bad_config_line_names_file_line_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    let ok =
        meshsync().arg("--home").arg(&home).args(["init", "--name", "n", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cfg = home.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("min_free_mib = 256", "min_free_mib = \"lots\"");
    std::fs::write(&cfg, text).unwrap();
    let out = meshsync().arg("--home").arg(&home).arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", cfg.display())) && err.contains("expected"), "{err}");
    let line = err.split(&format!("{}:", cfg.display())).nth(1).and_then(|r| r.split(':').next()).unwrap();
    let n: usize = line.parse().unwrap();
    assert_eq!(std::fs::read_to_string(&cfg).unwrap().lines().nth(n - 1).unwrap(), "min_free_mib = \"lots\"");
}

#[test]
fn status_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = meshsync().arg("--home").arg(dir.path()).arg("status").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("meshsync run"));
}

#[test]
fn demo_runs_and_cleans_up() {
    let out = meshsync().args(["demo", "--size-mib", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("blake3 verified on both"), "{stdout}");
    assert!(stdout.contains("demo (send-receive)") && stdout.contains("— in sync"), "{stdout}");
    let dir = stdout.lines().next().unwrap().trim_start_matches("demo mesh in ").to_string();
    assert!(!std::path::Path::new(&dir).exists(), "demo removed {dir}");
}

/// Runs the binary with `args` after `--home home`.
fn run_in(home: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = meshsync().arg("--home").arg(home).args(args).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn check_config_names_the_bad_line_with_status_3_or_sums_a_good_file_up() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    assert!(run_in(&home, &["init", "--name", "n", "--listen", "127.0.0.1:0"]).0.success());
    let (st, out, err) = run_in(&home, &["check-config"]);
    assert!(st.success(), "{err}");
    assert!(out.contains(": ok\nnode n listens on 127.0.0.1:0") && out.contains("0 share(s)"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nname = \"n\"\nlisten = \"127.0.0.1:0\"\n[[share]]\nname = \"a b\"\npath = \"/x\"\n")
        .unwrap();
    let (st, _, err) = run_in(&home, &["check-config", bad.to_str().unwrap()]);
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(err.contains(&format!("{}:5: share name \"a b\" may only use", bad.display())), "{err}");
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = meshsync().args(["completions", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("check-config") && text.contains("leave"), "{shell}: {text}");
    }
    let out = meshsync().arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH meshsync 1"), "{page}");
    for cmd in ["MESHSYNC SHARE REMOVE", "MESHSYNC PEERS FORGET", "MESHSYNC LEAVE", "MESHSYNC CHECK\\-CONFIG"] {
        assert!(page.contains(&format!(".SH \"{cmd}\"")), "the man page has a section for {cmd}: {page}");
    }
    assert!(page.contains("\\fB\\-\\-offline\\fR"), "and each command's options: {page}");
    let bad = meshsync().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn without_a_daemon_shares_are_listed_and_removed_from_the_config_and_leave_needs_offline() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    let root = dir.path().join("www");
    assert!(run_in(&home, &["init", "--name", "n", "--listen", "127.0.0.1:0"]).0.success());
    assert!(run_in(&home, &["share", "add", "www", root.to_str().unwrap()]).0.success());
    let cfg = home.join("config.toml");
    let with_comment = std::fs::read_to_string(&cfg).unwrap().replace("[[share]]", "# the web root\n[[share]]");
    std::fs::write(&cfg, format!("{with_comment}# kept\n")).unwrap();
    let (st, out, err) = run_in(&home, &["share", "list"]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&format!("www   {}  send-receive  daemon not running", root.display())), "{out}");
    let (st, out, err) = run_in(&home, &["share", "remove", "www"]);
    assert!(st.success(), "{err}");
    assert!(out.contains("no daemon runs; its index is dropped"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(!text.contains("www") && !text.contains("the web root"), "{text}");
    assert!(text.starts_with("# meshsync node config") && text.ends_with("# kept\n"), "{text}");
    assert!(root.join(".meshsync/share.toml").exists(), "the marker stays");
    let (st, _, err) = run_in(&home, &["share", "remove", "www"]);
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(err.contains("no share named \"www\""), "{err}");
    // Added back: the folder keeps its marker and is the share again.
    assert!(run_in(&home, &["share", "add", "www", root.to_str().unwrap()]).0.success());

    let (st, _, err) = run_in(&home, &["leave", "--yes"]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("no daemon runs") && err.contains("--offline"), "{err}");
    assert!(home.join("node.key").exists(), "nothing removed");
    let (st, out, err) = run_in(&home, &["leave", "--yes", "--offline"]);
    assert!(st.success(), "{err}");
    assert!(out.contains("without telling the peers") && out.contains("config.toml.left"), "{out}");
    assert!(!home.join("node.key").exists() && !home.join("index").exists() && root.exists());
    assert!(run_in(&home, &["init", "--name", "n2", "--listen", "127.0.0.1:0"]).0.success(), "the home is free again");
}

#[test]
fn a_wildcard_advertise_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    let (status, _, err) =
        run_in(&home, &["init", "--name", "n", "--listen", "0.0.0.0:7700", "--advertise", "0.0.0.0:7700"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("0.0.0.0:7700 is not an address peers can dial"), "{err}");
    assert!(!home.exists(), "nothing written");
    // join refuses it too, before its token is looked at (let alone spent).
    let (status, _, err) = run_in(
        &home,
        &["join", "--token-file", "/nonexistent", "--name", "n", "--listen", "[::]:7700", "--advertise", "[::]:0"],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is not an address peers can dial"), "{err}");
}
