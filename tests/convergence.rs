//! Randomized convergence (issue 22, item 10): real daemons on network-namespace
//! hosts, driven through the binary's CLI. Each seed picks 3–5 of a pool of 5 hosts,
//! gives them a new share, and runs seeded random operations on their folders
//! (create, modify, a small change of a file (patch: a big file's new entry then
//! goes as runs of the version peers hold), delete, rename, the same file edited on
//! two hosts at once, the same new path created on two) while daemons are killed
//! and restarted and the hosts are split into random partitions. After healing,
//! every copy must be identical, and every version ever written must be the
//! content of some path, a conflict copy, or kept in `.meshsync/versions/` (when
//! the daemon keeps one), unless a later operation knowingly replaced or deleted it
//! (see `blackbox::ledger`). Lost writes are counted; the goal is 0.
//!
//! `cargo test --test convergence` runs 30 seeds (root; skipped with the reason
//! printed otherwise). `MESHSYNC_SEED=N` runs seed N alone (what a failing seed
//! prints), `MESHSYNC_SEEDS=A..B` a range; the long run is
//! `cargo test --release --test convergence -- --ignored --nocapture` (1000 seeds,
//! more operations each: 17 s a seed, about 5 hours on the 2-core build machine;
//! `MESHSYNC_SEEDS=A..B` splits it). `MESHSYNC_STEPS=1` prints every seed's steps and the
//! daemons' logs, `MESHSYNC_TRACE=1` why it has not converged yet as it waits.
//! The operations follow from the seed; the daemons' timing does not, so a seed
//! that failed once may need a few runs to fail again.

mod blackbox;

use blackbox::ledger::Ledger;
use blackbox::tree::{self, Tree};
use blackbox::{skip_reason, Mesh};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Hosts in a pool; each seed uses 3 to 5 of them.
const POOL: usize = 5;
/// Seeds run on one pool before it is made anew (every seed adds a share to it).
const SEEDS_PER_POOL: u64 = 10;

/// How many operations a seed runs.
#[derive(Clone, Copy)]
enum Length {
    /// A few: CI runs 30 seeds in a few minutes.
    Short,
    /// More, with longer pauses: the long run.
    Long,
}

/// What one seed did and found.
struct Outcome {
    seed: u64,
    members: usize,
    steps: usize,
    written: usize,
    replaced: usize,
    conflicts: usize,
    lost: usize,
    secs: f64,
    /// Why the seed failed, if it did.
    failure: Option<String>,
    /// Every step, for the failure report.
    log: Vec<String>,
}

/// One seed's view of its hosts: which daemons are down and until which step.
struct Run<'a> {
    mesh: &'a mut Mesh,
    rng: StdRng,
    seed: u64,
    share: String,
    members: Vec<usize>,
    roots: Vec<PathBuf>,
    scratch: Vec<PathBuf>,
    ledger: Ledger,
    /// (member index, step at which it starts again).
    down: Vec<(usize, usize)>,
    partitioned: bool,
    next_name: usize,
    /// Steps run so far.
    steps: usize,
    log: Vec<String>,
}

impl Run<'_> {
    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    /// The files on member `m`'s copy now (empty if it cannot be read this instant).
    fn files_on(&self, m: usize) -> Vec<String> {
        tree::snapshot(&self.roots[m]).map(|t| tree::files(&t).map(|(p, _)| p.clone()).collect()).unwrap_or_default()
    }

    fn new_name(&mut self) -> String {
        self.next_name += 1;
        match self.rng.gen_range(0..4) {
            0 => format!("f{}.txt", self.next_name),
            d => format!("d{d}/f{}.txt", self.next_name),
        }
    }

    fn size(&mut self) -> usize {
        // Mostly small; sometimes several chunks; now and then enough chunks (3-4
        // MiB, about 50 of 64 KiB) that a small change goes to peers as runs.
        match self.rng.gen_range(0..100) {
            0..4 => self.rng.gen_range(3 << 20..4 << 20),
            4..14 => self.rng.gen_range(100_000..400_000),
            _ => self.rng.gen_range(10..3000),
        }
    }

    fn label(&self, step: usize, m: usize, what: &str) -> String {
        format!("seed {} op {step} {} {what}", self.seed, self.mesh.hosts[self.members[m]].name)
    }

    fn create(&mut self, step: usize, m: usize, rel: &str) {
        let (label, len) = (self.label(step, m, &format!("create {rel}")), self.size());
        let done = self.ledger.create(&self.roots[m], &self.scratch[m], rel, &label, len).expect("create");
        self.note(format!("{step}: {} create {rel} ({len} B){}", self.name(m), skipped(done)));
    }

    fn modify(&mut self, step: usize, m: usize, rel: &str) {
        let (label, len) = (self.label(step, m, &format!("modify {rel}")), self.size());
        let done = self.ledger.modify(&self.roots[m], &self.scratch[m], rel, &label, len).expect("modify");
        self.note(format!("{step}: {} modify {rel} ({len} B){}", self.name(m), skipped(done)));
    }

    fn patch(&mut self, step: usize, m: usize, rel: &str) {
        let label = self.label(step, m, &format!("patch {rel}"));
        let done = self.ledger.patch(&self.roots[m], &self.scratch[m], rel, &label).expect("patch");
        self.note(format!("{step}: {} patch {rel}{}", self.name(m), skipped(done)));
    }

    fn name(&self, m: usize) -> String {
        self.mesh.hosts[self.members[m]].name.clone()
    }

    fn pick_file(&mut self, m: usize) -> Option<String> {
        self.files_on(m).choose(&mut self.rng).cloned()
    }

    /// One random operation on one member's folder (its daemon may be down: a
    /// user's edits do not wait for it).
    fn file_op(&mut self, step: usize) {
        let m = self.rng.gen_range(0..self.members.len());
        let kind = self.rng.gen_range(0..100);
        let picked = self.pick_file(m);
        match (kind, picked) {
            (0..30, _) | (_, None) => {
                let rel = self.new_name();
                self.create(step, m, &rel);
            }
            (30..50, Some(rel)) => self.modify(step, m, &rel),
            (50..65, Some(rel)) => self.patch(step, m, &rel),
            (65..80, Some(rel)) => {
                let label = self.label(step, m, &format!("delete {rel}"));
                let done = self.ledger.delete(&self.roots[m], &self.scratch[m], &rel, &label).expect("delete");
                self.note(format!("{step}: {} delete {rel}{}", self.name(m), skipped(done)));
            }
            (_, Some(rel)) => {
                let to = self.new_name();
                let done = self.ledger.rename(&self.roots[m], &rel, &to).expect("rename");
                self.note(format!("{step}: {} rename {rel} -> {to}{}", self.name(m), skipped(done)));
            }
        }
    }

    /// The same file modified on two members, or the same new path created on two.
    fn concurrent_op(&mut self, step: usize) {
        let mut two: Vec<usize> = (0..self.members.len()).collect();
        two.shuffle(&mut self.rng);
        let (a, b) = (two[0], two[1]);
        let shared: Vec<String> = {
            let on_b = self.files_on(b);
            self.files_on(a).into_iter().filter(|p| on_b.contains(p)).collect()
        };
        match shared.choose(&mut self.rng).cloned() {
            Some(rel) if self.rng.gen_bool(0.35) => {
                self.modify(step, a, &rel);
                self.modify(step, b, &rel);
            }
            Some(rel) if self.rng.gen_bool(0.55) => {
                self.patch(step, a, &rel);
                self.patch(step, b, &rel);
            }
            _ => {
                let rel = self.new_name();
                self.create(step, a, &rel);
                self.create(step, b, &rel);
            }
        }
    }

    fn partition(&mut self, step: usize) {
        let mut group: Vec<usize> = (0..POOL).map(|_| self.rng.gen_range(0..2)).collect();
        if self.members.iter().all(|&h| group[h] == group[self.members[0]]) {
            let m = self.members[self.rng.gen_range(0..self.members.len())];
            group[m] = 1 - group[m];
        }
        self.mesh.partition(&group).expect("partition");
        self.partitioned = true;
        let sides: Vec<String> =
            self.members.iter().map(|&h| format!("{}:{}", self.mesh.hosts[h].name, group[h])).collect();
        self.note(format!("{step}: partition {}", sides.join(" ")));
    }

    fn heal(&mut self, step: usize) {
        self.mesh.heal().expect("heal");
        self.partitioned = false;
        self.note(format!("{step}: heal"));
    }

    fn stop(&mut self, step: usize) {
        let up: Vec<usize> = (0..self.members.len()).filter(|m| !self.down.iter().any(|(d, _)| d == m)).collect();
        let Some(&m) = up.choose(&mut self.rng) else { return };
        let h = self.members[m];
        let how = if self.rng.gen_bool(0.8) {
            self.mesh.hosts[h].kill9();
            "kill -9"
        } else {
            self.mesh.hosts[h].stop();
            "SIGTERM"
        };
        let until = step + self.rng.gen_range(0..3);
        self.down.push((m, until));
        self.note(format!("{step}: {how} {} (back at step {until})", self.name(m)));
        self.restart_due(step);
    }

    fn restart_due(&mut self, step: usize) {
        let due: Vec<usize> = self.down.iter().filter(|(_, at)| *at <= step).map(|(m, _)| *m).collect();
        self.down.retain(|(_, at)| *at > step);
        for m in due {
            self.mesh.hosts[self.members[m]].start().expect("daemon restarts");
            self.note(format!("{step}: start {}", self.name(m)));
        }
    }

    /// Each member's view of the share and its files, for a failure report.
    fn state(&self, trees: &[Tree]) -> String {
        let mut out = String::new();
        for (m, &h) in self.members.iter().enumerate() {
            let host = &self.mesh.hosts[h];
            let st = host.status().unwrap_or_default();
            let share = blackbox::Host::share_of(&st, &self.share).cloned().unwrap_or_default();
            let transfers: Vec<&serde_json::Value> = st["transfers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["share"] == self.share.as_str())
                .collect();
            out += &format!("  {} ({}): share {share}\n    transfers {transfers:?}\n", host.name, host.id);
            for (p, item) in trees.get(m).into_iter().flatten() {
                let what = match item {
                    tree::Item::File { len, .. } => {
                        // The first line of a file this test wrote is its label.
                        let head = std::fs::read(self.roots[m].join(p)).unwrap_or_default();
                        let label = head.split(|b| *b == b'\n').next().unwrap_or_default();
                        format!("{len} B {:?}", String::from_utf8_lossy(label))
                    }
                    other => format!("{other:?}"),
                };
                out += &format!("    {p}: {what}\n");
            }
        }
        out
    }

    fn converge(&self, limit: Duration) -> Result<Duration, String> {
        self.mesh.converge(&self.share, &self.members, &self.roots, limit)
    }
}

fn skipped(done: bool) -> &'static str {
    if done {
        ""
    } else {
        " (nothing there: skipped)"
    }
}

/// Runs one seed on `mesh`; its outcome (a failure is reported in it, not panicked).
fn run_seed(mesh: &mut Mesh, seed: u64, length: Length) -> Outcome {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.gen_range(3..=POOL);
    let mut members: Vec<usize> = (0..POOL).collect();
    members.shuffle(&mut rng);
    members.truncate(n);
    members.sort_unstable();
    let share = format!("c{seed}");
    let roots = mesh.share_on(&share, &members).expect("share add");
    let scratch: Vec<PathBuf> = members
        .iter()
        .map(|&h| {
            let d = mesh.hosts[h].dir.join(format!("scratch-{share}"));
            std::fs::create_dir_all(&d).expect("scratch dir");
            d
        })
        .collect();
    let names: Vec<String> = members.iter().map(|&h| mesh.hosts[h].name.clone()).collect();
    let mut run = Run {
        mesh,
        rng,
        seed,
        share,
        members,
        roots,
        scratch,
        ledger: Ledger::default(),
        down: Vec::new(),
        partitioned: false,
        next_name: 0,
        steps: 0,
        log: vec![format!("seed {seed}: members {}", names.join(" "))],
    };
    let failure = drive(&mut run, length).err();
    let trees: Vec<Tree> = run.roots.iter().map(|r| tree::snapshot(r).unwrap_or_default()).collect();
    let versions: Vec<Tree> =
        run.roots.iter().map(|r| tree::snapshot_if_any(&r.join(".meshsync/versions")).unwrap_or_default()).collect();
    let audit = run.ledger.audit(&trees, &versions);
    let conflicts = trees.first().map_or(0, |t| t.keys().filter(|p| tree::is_conflict_copy(p)).count());
    let mut failure = failure.map(|why| format!("{why}\n{}", run.state(&trees)));
    if failure.is_none() && (!audit.lost.is_empty() || !audit.unknown.is_empty()) {
        let lost: Vec<String> = audit.lost.iter().map(|w| format!("{:?} (written at {})", w.label, w.path)).collect();
        failure = Some(format!("lost writes: {lost:#?}\nfiles no write made: {:#?}", audit.unknown));
    }
    Outcome {
        seed,
        members: run.members.len(),
        steps: run.steps,
        written: audit.written,
        replaced: audit.replaced,
        conflicts,
        lost: audit.lost.len(),
        secs: start.elapsed().as_secs_f64(),
        failure,
        log: run.log,
    }
}

/// The seed's operations, then healing and convergence.
fn drive(run: &mut Run, length: Length) -> Result<(), String> {
    // A few files everywhere first, so later operations have something to edit.
    let took = run.converge(Duration::from_secs(30)).map_err(|e| format!("the new share: {e}"))?;
    run.note(format!("share ready after {took:.1?}"));
    for _ in 0..run.rng.gen_range(2..=5) {
        let m = run.rng.gen_range(0..run.members.len());
        let rel = run.new_name();
        run.create(0, m, &rel);
    }
    let took = run.converge(Duration::from_secs(60)).map_err(|e| format!("the first files: {e}"))?;
    run.note(format!("first files everywhere after {took:.1?}"));

    let (steps, pause_ms) = match length {
        Length::Short => (run.rng.gen_range(6..=10), 300),
        Length::Long => (run.rng.gen_range(10..=30), 1000),
    };
    for step in 1..=steps {
        run.steps = step;
        let roll = run.rng.gen_range(0..100);
        match roll {
            0..12 if !run.partitioned => run.partition(step),
            0..20 if run.partitioned => run.heal(step),
            20..28 => run.stop(step),
            28..40 => run.concurrent_op(step),
            _ => run.file_op(step),
        }
        let pause = run.rng.gen_range(0..pause_ms);
        std::thread::sleep(Duration::from_millis(pause));
        run.restart_due(step);
    }
    if run.partitioned {
        run.heal(steps + 1);
    }
    run.restart_due(usize::MAX);
    let took = run.converge(Duration::from_secs(120))?;
    run.note(format!("converged {took:.1?} after healing"));
    Ok(())
}

/// Seeds from the environment: `MESHSYNC_SEED=N` or `MESHSYNC_SEEDS=A..B`.
fn seeds_from_env() -> Option<Range<u64>> {
    if let Ok(s) = std::env::var("MESHSYNC_SEED") {
        let n: u64 = s.trim().parse().expect("MESHSYNC_SEED is a number");
        return Some(n..n + 1);
    }
    let s = std::env::var("MESHSYNC_SEEDS").ok()?;
    let (a, b) = s.split_once("..").expect("MESHSYNC_SEEDS is A..B");
    Some(a.trim().parse().expect("MESHSYNC_SEEDS start")..b.trim().parse().expect("MESHSYNC_SEEDS end"))
}

/// Runs `seeds`; `again` is the cargo command line that runs them again.
fn run_seeds(seeds: Range<u64>, length: Length, again: &str) {
    if let Some(why) = skip_reason(true) {
        println!("skipped: {why}");
        return;
    }
    let mut pool: Option<Mesh> = None;
    let mut used = 0;
    let (mut failed, mut lost, mut written, mut conflicts, mut ran) = (Vec::new(), 0, 0, 0, 0);
    for seed in seeds.clone() {
        if used == SEEDS_PER_POOL {
            pool = None;
        }
        if pool.is_none() {
            used = 0;
        }
        let mesh = pool.get_or_insert_with(|| Mesh::new(POOL, &blackbox::fast_links(), &[]).expect("a pool of hosts"));
        used += 1;
        let o = run_seed(mesh, seed, length);
        ran += 1;
        lost += o.lost;
        written += o.written;
        conflicts += o.conflicts;
        println!(
            "seed {seed}: {} hosts, {} steps, {} versions written ({} replaced on purpose), {} conflict copies, \
             lost writes {}, {:.1} s{}",
            o.members,
            o.steps,
            o.written,
            o.replaced,
            o.conflicts,
            o.lost,
            o.secs,
            if o.failure.is_some() { " FAILED" } else { "" }
        );
        if std::env::var_os("MESHSYNC_STEPS").is_some() {
            println!("  steps:\n    {}", o.log.join("\n    "));
            println!("{}", mesh.logs());
        }
        if let Some(why) = &o.failure {
            println!("  steps:\n    {}", o.log.join("\n    "));
            println!("  why: {why}");
            println!("{}", mesh.logs());
            println!("  reproduce: MESHSYNC_SEED={} {again}", o.seed);
            failed.push(o.seed);
            // The pool may be in any state now: the next seed gets a new one.
            pool = None;
        }
    }
    println!(
        "{ran} seeds ({seeds:?}): {written} versions written, {conflicts} conflict copies, lost writes: {lost}, \
         failed seeds: {failed:?}"
    );
    assert!(failed.is_empty() && lost == 0, "failed seeds {failed:?}, lost writes {lost} (reproduce as printed above)");
}

/// The CI run: 30 seeds in two halves that run side by side (two pools), since
/// the daemons mostly wait and one pool leaves the machine idle. `MESHSYNC_SEED(S)`
/// runs in the first half only.
const CI_AGAIN: &str = "cargo test --test convergence ci_seeds -- --nocapture";

#[test]
fn ci_seeds_0_to_14_converge_without_losing_a_write() {
    run_seeds(seeds_from_env().unwrap_or(0..15), Length::Short, CI_AGAIN);
}

#[test]
fn ci_seeds_15_to_29_converge_without_losing_a_write() {
    if seeds_from_env().is_some() {
        println!("skipped: MESHSYNC_SEED(S) runs in ci_seeds_0_to_14 only");
        return;
    }
    run_seeds(15..30, Length::Short, CI_AGAIN);
}

#[test]
#[ignore = "long run: cargo test --release --test convergence -- --ignored --nocapture"]
fn a_thousand_seeds_converge_without_losing_a_write() {
    let again = "cargo test --release --test convergence a_thousand_seeds -- --ignored --nocapture";
    run_seeds(seeds_from_env().unwrap_or(0..1000), Length::Long, again);
}
