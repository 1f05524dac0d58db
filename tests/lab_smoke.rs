//! CI smoke run of the bandwidth lab (benches/lab): 3 shaped namespace hosts, an
//! 8 MiB file, every method. Skips (and passes) with the reason printed when not
//! root or the network tools are missing; rsync methods skip likewise without rsync/sshd.

#[allow(dead_code)] // the bench's own CLI uses parts of the module this test does not
#[path = "../benches/lab/lab.rs"]
mod lab;

use lab::{Method, Options, Outcome};
use std::time::Duration;

#[test]
fn three_hosts_get_a_verified_copy_by_every_method() {
    let out = tempfile::tempdir().expect("temp dir");
    let opts = Options {
        nodes: vec![3],
        rate_mbit: 100.0,
        delay_ms: 0,
        loss_pct: 0,
        size_mib: 8,
        methods: Method::ALL.to_vec(),
        out: out.path().to_path_buf(),
        bin: env!("CARGO_BIN_EXE_meshsync").into(),
        timeout: Some(Duration::from_secs(60)),
    };
    let rep = match lab::run(&opts) {
        Ok(Outcome::Skipped(why)) => {
            println!("lab smoke test skipped: {why}");
            return;
        }
        Ok(Outcome::Done(rep)) => rep,
        Err(e) => panic!("the lab failed: {e:#}"),
    };
    println!("{}", rep.markdown());
    assert!(rep.failures.is_empty(), "failed methods: {:#?}", rep.failures);
    let skipped: Vec<&str> = rep.skipped.iter().map(|s| s.what.as_str()).collect();
    let ran: Vec<Method> = Method::ALL.into_iter().filter(|m| !skipped.contains(&m.as_str())).collect();
    assert!(ran.contains(&Method::Meshsync), "meshsync always runs: {skipped:?}");
    assert_eq!(rep.runs.len(), 1);
    let run = &rep.runs[0];
    assert_eq!(run.n, 3);
    assert_eq!(run.methods.iter().map(|m| m.method).collect::<Vec<_>>(), ran);
    for m in &run.methods {
        assert!(m.verified, "{:?}", m.method);
        assert_eq!(m.arrivals_s.len(), 3, "{:?}: one arrival per receiver", m.method);
        assert!(m.time_s >= run.theoretical_min_s * 0.9, "{:?} beat physics: {} s", m.method, m.time_s);
        assert!(m.ratio.is_finite() && m.ratio > 0.0);
        // tc's statistics were read and parsed for every host, before and after.
        assert_eq!(m.queue_drops.len(), 4, "{:?}: link drops for hosts 0..=3", m.method);
    }
    let ms = &run.methods[0];
    assert_eq!(ms.peak_rss_bytes.len(), 4, "one RSS per daemon");
    assert!(ms.peak_rss_max_bytes.is_some_and(|b| b > 0));
    // Every daemon logged its connections' QUIC figures, and the lab read them back.
    let q = ms.quic.as_ref().expect("QUIC figures from the daemons' logs");
    assert!(q.connections >= 6 && q.sent_packets > 0 && q.lost_packets <= q.sent_packets, "{q:?}");
    assert!(run.methods[1..].iter().all(|m| m.quic.is_none()), "rsync has no QUIC figures");

    for f in ["lab.md", "lab.json", "lab.svg"] {
        let p = out.path().join(f);
        assert!(p.metadata().is_ok_and(|m| m.len() > 0), "{} missing or empty", p.display());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("lab.json")).expect("lab.json")).expect("JSON");
    assert_eq!(json["parameters"]["nodes"], serde_json::json!([3]));
    assert_eq!(json["parameters"]["methods"], serde_json::json!(["meshsync", "rsync-serial", "rsync-parallel"]));
    let names: Vec<&str> =
        json["runs"][0]["methods"].as_array().expect("methods").iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(names, ran.iter().map(|m| m.as_str()).collect::<Vec<_>>());
    assert!(json["runs"][0]["theoretical_min_s"].as_f64().is_some_and(|t| t > 0.0));
    let md = std::fs::read_to_string(out.path().join("lab.md")).expect("lab.md");
    assert!(md.contains("| 3 | meshsync |"), "{md}");
    assert!(std::fs::read_to_string(out.path().join("lab.svg")).expect("lab.svg").contains("<svg"));
    // The work dir with the big files is gone; only reports and logs remain.
    let left: Vec<String> = std::fs::read_dir(out.path())
        .expect("out dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.starts_with("work-"))
        .collect();
    assert!(left.is_empty(), "work dir left behind: {left:?}");
}
