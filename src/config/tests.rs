//! The config parser's rules, one test each.

use super::*;

fn err(text: &str) -> String {
    Config::parse(text, Path::new("/h/config.toml")).unwrap_err().to_string()
}

const NODE: &str = "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"b\"\npath = \"/srv/b\"\n";

#[test]
fn schedules_parse_and_bad_ones_name_their_line() {
    let c = Config::parse(&format!("{NODE}schedule = \"30 2 * * *\"\n"), Path::new("c")).unwrap();
    assert_eq!(c.shares[0].schedule.as_ref().map(|s| s.describe()), Some("30 2 * * * for 60 min".into()));
    let e = err(&format!("{NODE}schedule = \"nightly\"\n"));
    assert!(e.starts_with("/h/config.toml:7: bad schedule \"nightly\""), "{e}");
    let e = err(&format!("{NODE}schedule = \"0 1 * * *\"\nschedule_window_mins = 0\n"));
    assert!(e.starts_with("/h/config.toml:8: schedule_window_mins must be at least 1"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmetrics_listen = \"localhost\"\n");
    assert!(e.starts_with("/h/config.toml:4: metrics_listen \"localhost\" must be ip:port"), "{e}");
    let e = err(&format!("{NODE}schedule_window_mins = 30\n"));
    assert!(e.starts_with("/h/config.toml:7: schedule_window_mins needs a schedule"), "{e}");
    assert!(Config::parse(NODE, Path::new("c")).unwrap().shares[0].schedule.is_none());
}

#[test]
fn defaults_and_shares() {
    let c = Config::parse(
        "[node]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\n[[share]]\nname = \"web\"\npath = \"/srv/www\"\nmode = \"receive-only\"\n",
        Path::new("c"),
    )
    .unwrap();
    assert_eq!(c.node.rescan_interval, Duration::from_secs(3600));
    assert_eq!((c.node.max_join_connections, c.node.max_join_per_address), (16, 4));
    assert_eq!(c.node.index_cache_mib, crate::index::DEFAULT_CACHE_MIB);
    assert_eq!(c.node.join_deadline, Duration::from_secs(10));
    assert_eq!(c.node.bench_max_bytes, 4 << 30);
    assert_eq!(c.node.tombstone_days, 30);
    assert!(c.node.advertise.is_empty(), "automatic");
    assert_eq!(c.shares[0].mode, ShareMode::ReceiveOnly);
    assert_eq!(c.shares[0].max_delete, DeleteBrake::Half);
    assert_eq!(c.shares[0].versioning, Versioning::Trash { keep_days: 7 });
    let e = err(&format!("{NODE}versioning = \"simple\"\n"));
    assert!(e.starts_with("/h/config.toml:7: versioning \"simple\": expected"), "{e}");
    let e = err(&format!("{NODE}versioning = \"off\"\nkeep_days = 3\n"));
    assert!(e.starts_with("/h/config.toml:8: keep_days needs"), "{e}");
    assert_eq!(c.shares[0].min_interval, DEFAULT_MIN_INTERVAL);
    for (v, want) in [("2", 2000), ("0.25", 250), ("\"2s\"", 2000), ("\"500ms\"", 500), ("0", 0)] {
        let c = Config::parse(&format!("{NODE}min_interval = {v}\n"), Path::new("c")).unwrap();
        assert_eq!(c.shares[0].min_interval, Duration::from_millis(want), "{v}");
    }
    let e = err(&format!("{NODE}min_interval = \"soon\"\n"));
    assert!(e.starts_with("/h/config.toml:7: min_interval: bad duration \"soon\": expected e.g. 500ms"), "{e}");
    let e = err(&format!("{NODE}mode = \"send-only\"\nmin_interval = -1\n"));
    assert!(e.starts_with("/h/config.toml:8: min_interval: -1 s is out of range"), "{e}");
}

#[test]
fn compression_is_auto_on_or_off() {
    assert_eq!(Config::parse(NODE, Path::new("c")).unwrap().shares[0].compression, Compression::Auto);
    for (v, want) in [("auto", Compression::Auto), ("on", Compression::On), ("off", Compression::Off)] {
        let c = Config::parse(&format!("{NODE}compression = \"{v}\"\n"), Path::new("c")).unwrap();
        assert_eq!(c.shares[0].compression, want, "{v}");
    }
    let e = err(&format!("{NODE}compression = \"zstd\"\n"));
    assert!(e.starts_with("/h/config.toml:7: compression \"zstd\": expected \"auto\", \"on\" or \"off\""), "{e}");
    let e = err(&format!("{NODE}compression = true\n"));
    assert!(e.starts_with("/h/config.toml:7: "), "{e}");
}

#[test]
fn the_delete_brake_stops_more_than_half_and_at_least_a_hundred() {
    let half = DeleteBrake::Half;
    assert!(half.allows(99, 100), "fewer than 100: always");
    assert!(half.allows(100, 200), "exactly half");
    assert!(!half.allows(101, 200));
    assert!(!half.allows(100, 100), "all of them");
    assert!(!half.may_stop(99) && half.may_stop(100));
    assert!(DeleteBrake::Off.allows(1_000_000, 1));
    assert!(!DeleteBrake::AtMost(10).allows(11, 1_000_000));
    assert!(DeleteBrake::AtMost(10).allows(10, 10));
}

#[test]
fn errors_name_file_line_and_expectation() {
    let e = err("[node]\nname = \"a\"\nlisten = \"nope\"\n");
    assert!(e.starts_with("/h/config.toml:3: "), "{e}");
    assert!(e.contains("socket address"), "{e}");
    let e = err(
        "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"/x\"\nmode = \"both\"\n",
    );
    assert!(e.starts_with("/h/config.toml:7: "), "{e}");
    assert!(e.contains("send-receive"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nrescan_interval_secs = 0\n");
    assert!(e.starts_with("/h/config.toml:4: "), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"rel\"\n");
    assert!(e.starts_with("/h/config.toml:6: ") && e.contains("absolute"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"/a\"\n[[share]]\nname = \"w\"\npath = \"/b\"\n");
    assert!(e.starts_with("/h/config.toml:8: ") && e.contains("twice"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"0.0.0.0:1\"\nadvertise = [\"0.0.0.0:1\"]\n");
    assert!(e.starts_with("/h/config.toml:4: advertise 0.0.0.0:1 is not an address peers can dial"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmin_free_mib = 17592186044416\n");
    assert!(e.starts_with("/h/config.toml:4: min_free_mib"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nindex_cache_mib = 0\n");
    assert!(e.starts_with("/h/config.toml:4: index_cache_mib must be a whole number from 1"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_join_connections = 0\n");
    assert!(e.starts_with("/h/config.toml:4: max_join_connections must be a whole number from 1"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbench_max_mib = 0\n");
    assert!(e.starts_with("/h/config.toml:4: bench_max_mib 0 must be 1 to 65536"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbench_max_mib = 65537\n");
    assert!(e.starts_with("/h/config.toml:4: bench_max_mib 65537"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n\ntombstone_days = 0\n");
    assert!(e.starts_with("/h/config.toml:5: tombstone_days 0 must be a whole number of days"), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ntombstone_days = 1.5\n");
    assert!(e.starts_with("/h/config.toml:4: "), "{e}");
    let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
    assert!(e.starts_with("/h/config.toml:4: ") && e.contains("unknown field"), "{e}");
}

#[test]
fn append_share_keeps_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, Config::initial_text("n \"q\"", "127.0.0.1:9".parse().unwrap(), &[])).unwrap();
    let share = ShareConfig {
        name: "docs".into(),
        path: "/tmp/some dir/ü".into(),
        mode: ShareMode::SendOnly,
        ignore: vec!["*.log".into()],
        schedule: Some(crate::config::schedule::Schedule::parse("0 1 * * 1-5", Duration::from_secs(7200)).unwrap()),
        max_delete: DeleteBrake::AtMost(500),
        versioning: Versioning::Trash { keep_days: 30 },
        min_interval: Duration::from_millis(2500),
        compression: Compression::Off,
    };
    let c = Config::append_share(&p, &share).unwrap();
    assert_eq!(c.node.name, "n \"q\"");
    assert_eq!(c.shares[0].path, PathBuf::from("/tmp/some dir/ü"));
    assert_eq!(c.shares[0].schedule.as_ref().map(|s| s.describe()), Some("0 1 * * 1-5 for 120 min".into()));
    assert_eq!(c.shares[0].max_delete, DeleteBrake::AtMost(500));
    assert_eq!(c.shares[0].versioning, Versioning::Trash { keep_days: 30 });
    assert_eq!(c.shares[0].min_interval, Duration::from_millis(2500));
    assert_eq!(c.shares[0].compression, Compression::Off);
    assert!(std::fs::read_to_string(&p).unwrap().starts_with("# meshsync node config"));
    assert!(Config::append_share(&p, &share).unwrap_err().to_string().contains("twice"));
}
