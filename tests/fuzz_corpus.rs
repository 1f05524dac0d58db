//! Replays every committed fuzz input (`fuzz/corpus/<target>/`: seeds and every
//! crash ever found) through the functions the cargo-fuzz targets call, so CI checks
//! them on stable Rust without cargo-fuzz. A panic here is a regression.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_committed_fuzz_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in harness::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no input", dir.display());
        for f in files {
            // Captured, and shown only when the input below panics.
            println!("{target}: {}", f.display());
            run(&std::fs::read(&f).unwrap());
        }
    }
}
