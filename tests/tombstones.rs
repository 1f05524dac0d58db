//! Deletes forgotten after `tombstone_days` (issue 22 item 8), with real daemons on
//! namespace hosts whose wall clocks are moved ahead (libfaketime): a member back
//! after longer than that must not bring a file the mesh deleted back, not even
//! through a member that joins the share later and reads its whole index.
//! Root; skipped with the reason printed otherwise.

mod blackbox;

use blackbox::{faketime_missing, place, skip_reason, Host, Mesh};
use std::path::PathBuf;
use std::time::Duration;

const SHARE: &str = "s";

fn converge(mesh: &Mesh, set: &[usize], roots: &[PathBuf]) -> Duration {
    match mesh.converge(SHARE, set, roots, Duration::from_secs(60)) {
        Ok(d) => d,
        Err(why) => panic!("{why}\n{}", mesh.logs()),
    }
}

/// Installs libfaketime if it is missing; the reason it cannot be had otherwise.
fn faketime() -> Option<String> {
    if faketime_missing().is_some() {
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "libfaketime"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    faketime_missing()
}

#[test]
fn a_member_back_after_the_deletes_were_forgotten_does_not_bring_them_back() {
    if let Some(why) = skip_reason(false).or_else(faketime) {
        println!("skipped: {why}");
        return;
    }
    // n0 and n1 stay, n2 goes away for 31 days, n3 takes the share up at the end.
    let mut mesh = Mesh::new(4, &blackbox::fast_links(), &[]).expect("a mesh of namespace hosts");
    let mut roots = mesh.share_on(SHARE, &[0, 1, 2]).unwrap();
    let scratch = mesh.dir.join("scratch");
    place(&scratch, &roots[0], "gone.txt", b"deleted while n2 was away").unwrap();
    place(&scratch, &roots[0], "kept.txt", b"still here").unwrap();
    converge(&mesh, &[0, 1, 2], &roots);
    mesh.hosts[2].stop();
    std::fs::remove_file(roots[0].join("gone.txt")).unwrap();
    converge(&mesh, &[0, 1], &roots[..2]);
    assert!(!roots[1].join("gone.txt").exists());

    // 31 days later (tombstone_days = 30): n0 and n1 forget the delete at start, as
    // n2 has not been heard from for longer than that.
    for h in [0, 1, 3] {
        mesh.hosts[h].stop();
        mesh.hosts[h].clock_ahead(31);
        mesh.hosts[h].start().unwrap();
    }
    let logged = |m: &Mesh, h: usize, what: &str| {
        std::fs::read_to_string(m.hosts[h].log_path()).unwrap_or_default().contains(what)
    };
    // They have not heard from each other for 31 days either: each reads the
    // other's whole index again first, then a full scan purges.
    mesh.wait("n0 and n1 re-check their files", Duration::from_secs(30), |m| {
        [0, 1].iter().all(|&h| logged(m, h, "re-check after a long absence done"))
    });
    for h in [0, 1] {
        mesh.hosts[h].run_cli(&["rescan", SHARE]).unwrap();
    }
    mesh.wait("n0 and n1 forget the delete", Duration::from_secs(30), |m| {
        [0, 1].iter().all(|&h| logged(m, h, "deletes every member has seen forgotten"))
    });
    // n2 comes back with its copy of the deleted file.
    mesh.hosts[2].clock_ahead(31);
    mesh.hosts[2].start().unwrap();
    let n2 = mesh.hosts[2].name.clone();
    mesh.wait(&format!("{n2} keeps gone.txt as a local change"), Duration::from_secs(30), |m| {
        m.hosts[2].status().is_some_and(|st| {
            Host::share_of(&st, SHARE)
                .is_some_and(|s| s["local_change_paths"].as_array().is_some_and(|p| p.iter().any(|p| p == "gone.txt")))
        })
    });
    assert!(roots[2].join("gone.txt").exists(), "nothing is deleted on the member that comes back");
    assert!(logged(&mesh, 2, "unknown to the mesh"), "the member says what it kept and why");

    // A member that takes the share up now reads every index whole, n2's too.
    roots.extend(mesh.share_on(SHARE, &[3]).unwrap());
    let roots3 = [roots[0].clone(), roots[1].clone(), roots[3].clone()];
    converge(&mesh, &[0, 1, 3], &roots3);
    assert_eq!(std::fs::read(roots[3].join("kept.txt")).ok().as_deref(), Some(&b"still here"[..]));
    // Another full pass for any late offer of the forgotten file.
    std::thread::sleep(Duration::from_secs(2));
    converge(&mesh, &[0, 1, 3], &roots3);
    for h in [0, 1, 3] {
        let r = if h == 3 { &roots[3] } else { &roots[h] };
        assert!(!r.join("gone.txt").exists(), "{}: the deleted file came back\n{}", mesh.hosts[h].name, mesh.logs());
    }
    println!(
        "{n2}, back after 31 days, kept gone.txt to itself; n3 took the share up and has kept.txt only; \
         n0 and n1 still lack gone.txt"
    );
}
