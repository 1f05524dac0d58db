//! The bandwidth lab: `cargo bench --bench lab -- --nodes 2,4,8,16 --rate-mbit 100 --size-mib 256`.
//! Builds N+1 shaped network namespaces, runs real meshsync daemons (and rsync over
//! ssh for comparison) and reports how long until every host has a verified copy.
//! See benches/LAB.md.

mod lab;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "lab", about = "meshsync bandwidth lab: time to get one file onto N shaped hosts")]
struct Args {
    /// Receiver counts to measure (one lab per entry), e.g. 2,4,8,16.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    nodes: Vec<usize>,
    /// Rate of every host link, per direction, in Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    rate_mbit: f64,
    /// One-way delay between hosts in ms (needs netem in the kernel; skipped with a note otherwise).
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Packet loss on every host's input, percent (nftables).
    #[arg(long, default_value_t = 0)]
    loss_pct: u32,
    /// Size of the file in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Methods to compare: meshsync, rsync-serial, rsync-parallel.
    #[arg(long, value_delimiter = ',', default_value = "meshsync,rsync-serial,rsync-parallel")]
    methods: Vec<lab::Method>,
    /// Output directory for lab.md, lab.json, lab.svg and logs/.
    #[arg(long, default_value = "target/lab")]
    out: PathBuf,
    /// The meshsync binary (default: the one Cargo built for this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_meshsync"))]
    bin: PathBuf,
    /// Give up on one method after this many seconds (default: from size, rate and N).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let opts = lab::Options {
        nodes: a.nodes,
        rate_mbit: a.rate_mbit,
        delay_ms: a.delay_ms,
        loss_pct: a.loss_pct,
        size_mib: a.size_mib,
        methods: a.methods,
        out: a.out,
        bin: a.bin,
        timeout: a.timeout_secs.map(Duration::from_secs),
    };
    match lab::run(&opts) {
        Ok(lab::Outcome::Skipped(why)) => {
            println!("bandwidth lab skipped: {why}");
            ExitCode::SUCCESS
        }
        Ok(lab::Outcome::Done(rep)) => {
            println!("\n{}", rep.markdown());
            if rep.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("bandwidth lab: {} method run(s) failed; see above and lab.json", rep.failures.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bandwidth lab failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
