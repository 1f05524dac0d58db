//! The house rules the compiler does not check: the pure cores stay pure, and the
//! floors import only downwards. A `use` that breaks one fails here, naming it.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Lines of code in `dir` (comments left out) that contain any of `words`.
fn offences(dir: &str, words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for w in words {
                if code.contains(w) {
                    found.push(format!("{}:{}: {w}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn the_sync_cores_do_no_io_take_no_locks_and_read_no_clock() {
    let bad = offences(
        "sync",
        &[
            "tokio",
            "std::fs",
            "Mutex",
            "RwLock",
            "::now()",
            "Instant",
            "crate::net",
            "crate::transfer",
            "crate::gossip",
            "crate::daemon",
            "crate::ops",
            "crate::watch",
        ],
    );
    assert!(bad.is_empty(), "sync/ must stay pure:\n{}", bad.join("\n"));
}

#[test]
fn the_floors_import_only_downwards() {
    // (module, what it must not import): the bottom imports nothing of the crate;
    // storage and wire do not know each other; nothing below the daemon reaches up.
    let rules: &[(&str, &[&str])] = &[
        ("ids.rs", &["crate::"]),
        ("relpath.rs", &["crate::"]),
        ("codec.rs", &["crate::"]),
        ("index", &["crate::proto", "crate::identity", "crate::net", "crate::daemon", "crate::ops"]),
        ("proto", &["crate::index", "crate::identity", "crate::net", "crate::daemon", "crate::ops"]),
        ("identity", &["crate::net", "crate::index", "crate::daemon", "crate::ops"]),
        ("net", &["crate::index", "crate::daemon", "crate::ops", "crate::transfer", "crate::gossip"]),
        ("scan", &["crate::daemon", "crate::ops", "crate::transfer", "crate::gossip", "crate::watch"]),
        ("watch", &["crate::daemon", "crate::ops", "crate::transfer", "crate::gossip"]),
        ("transfer", &["crate::daemon", "crate::ops"]),
        ("gossip", &["crate::daemon", "crate::ops", "crate::transfer"]),
        ("daemon", &["crate::ops"]),
        ("config", &["crate::scan", "crate::watch", "crate::daemon", "crate::ops", "crate::sync", "crate::transfer"]),
    ];
    let mut bad = Vec::new();
    for (module, forbidden) in rules {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
        let found = if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, l)| forbidden.iter().any(|w| l.split("//").next().unwrap_or("").contains(w)))
                .map(|(n, l)| format!("{}:{}: {}", path.display(), n + 1, l.trim()))
                .collect()
        } else {
            offences(module, forbidden)
        };
        bad.extend(found);
    }
    assert!(bad.is_empty(), "imports that point up or sideways:\n{}", bad.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources("")
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > 600).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "a file over ~600 lines is two concerns:\n{}", long.join("\n"));
}
