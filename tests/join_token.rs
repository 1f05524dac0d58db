//! `meshsync join` takes its token from stdin or --token-file, and warns when it
//! is given on the command line (the real binary).

use meshsync::identity::token::JoinToken;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

fn meshsync(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshsync"));
    c.arg("--home").arg(home).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn join_args() -> [&'static str; 5] {
    ["join", "--name", "b", "--listen", "127.0.0.1:0"]
}

/// Starts `cmd` with `input` on its stdin.
fn spawn_with_stdin(mut cmd: Command, input: &str) -> Child {
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_token_is_read_from_stdin_or_a_file_and_argv_warns() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and silent: the joiner's packets reach no inviter, so each join fails
    // about the inviter after its 10 s, whatever the token's source was.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let token =
        JoinToken { ca_fingerprint: [7; 32], addrs: vec![addr], token_id: [1; 16], secret: [2; 32], expires: u64::MAX }
            .encode();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();

    let mut dash = meshsync(&dir.path().join("dash"));
    dash.args(join_args()).arg("-");
    let mut piped = meshsync(&dir.path().join("piped"));
    piped.args(join_args());
    let mut from_file = meshsync(&dir.path().join("file"));
    from_file.args(join_args()).arg("--token-file").arg(&file).stdin(Stdio::null());
    let mut argv = meshsync(&dir.path().join("argv"));
    argv.args(join_args()).arg(&token).stdin(Stdio::null());
    // In parallel: each waits out the same 10 s.
    let children = [
        ("dash", spawn_with_stdin(dash, &format!("{token}\n"))),
        ("piped", spawn_with_stdin(piped, &token)),
        ("file", from_file.spawn().unwrap()),
        ("argv", argv.spawn().unwrap()),
    ];
    for (what, child) in children {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: {err}");
        assert!(
            err.contains("error: no answer from the inviter at") && err.contains(&addr.to_string()),
            "{what}: {err}"
        );
        assert_eq!(out.status.code(), Some(4), "{what}: unreachable has its own exit status");
        assert_eq!(err.contains("warning:"), what == "argv", "{what}: {err}");
        if what == "argv" {
            assert!(err.contains("`ps`") && err.contains("--token-file"), "the warning says why and what to do: {err}");
        }
        assert!(!dir.path().join(what).join("config.toml").exists(), "{what}: a failed join writes nothing");
    }
}

#[test]
fn a_missing_empty_or_foreign_token_source_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    let mut cmd = meshsync(&home);
    cmd.args(join_args()).arg("-");
    let err = stderr(&spawn_with_stdin(cmd, "").wait_with_output().unwrap());
    assert!(err.contains("no join token on standard input"), "{err}");

    let missing = dir.path().join("nope");
    let out = meshsync(&home).args(join_args()).arg("--token-file").arg(&missing).output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("reading the token file") && err.contains(&missing.display().to_string()), "{err}");

    let file = dir.path().join("token");
    std::fs::write(&file, "hello\n").unwrap();
    let out = meshsync(&home).args(join_args()).arg("--token-file").arg(&file).output().unwrap();
    assert!(stderr(&out).contains("not a meshsync join token"), "{}", stderr(&out));

    let out = meshsync(&home).args(join_args()).arg("msj1-x").arg("--token-file").arg(&file).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
    assert!(!home.exists(), "refused joins write nothing");
}
