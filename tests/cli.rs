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
