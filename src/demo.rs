//! `meshsync demo`: three nodes on 127.0.0.1 in a temp dir, set up with the real
//! commands (this binary, as subprocesses), a file written on one and watched
//! arriving on the others.

use crate::home::Home;
use crate::ops::control;
use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Mesh {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM for a clean shutdown (index flushed), then reap.
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the meshsync binary")
}

fn cli(home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(exe()?).arg("--home").arg(home).args(args).output()?;
    if !out.status.success() {
        bail!("meshsync {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start(mesh: &mut Mesh, home: &Path) -> anyhow::Result<()> {
    let log = std::fs::File::create(home.join("daemon.log"))?;
    let child = Command::new(exe()?).arg("--home").arg(home).arg("run").stdout(Stdio::null()).stderr(log).spawn()?;
    mesh.children.push(child);
    Ok(())
}

fn file_hash(p: &Path) -> Option<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p).ok()?).ok()?;
    Some(h.finalize())
}

/// Runs the demo.
pub async fn run(keep: bool, size_mib: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("meshsync-demo-").tempdir()?;
    let mut mesh = Mesh { dir: tmp.path().to_path_buf(), children: Vec::new() };
    let names = ["alpha", "beta", "gamma"];
    let homes: Vec<PathBuf> = names.iter().map(|n| mesh.dir.join(n)).collect();
    let shares: Vec<PathBuf> = names.iter().map(|n| mesh.dir.join(format!("{n}-share"))).collect();
    println!("demo mesh in {}", mesh.dir.display());
    for (i, name) in names.iter().enumerate() {
        let listen = format!("127.0.0.1:{}", free_port()?);
        if i == 0 {
            cli(&homes[0], &["init", "--name", name, "--listen", &listen])?;
            println!("  $ meshsync init --name {name} --listen {listen}");
        } else {
            // Every member can invite: gamma is invited by beta, not by the first node.
            let token = cli(&homes[i - 1], &["invite", "--ttl", "10m"])?;
            cli(&homes[i], &["join", token.trim(), "--name", name, "--listen", &listen])?;
            println!(
                "  $ meshsync invite   (on {})  ->  meshsync join <token> --name {name} --listen {listen}",
                names[i - 1]
            );
        }
        cli(&homes[i], &["share", "add", "demo", &shares[i].to_string_lossy()])?;
        println!("  $ meshsync share add demo {}", shares[i].display());
        start(&mut mesh, &homes[i])?;
        println!("  $ meshsync run      ({name})");
    }
    // Wait until the mesh is fully connected (gamma learns alpha from beta).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut connected = 0;
        for h in &homes {
            if let Ok(st) = control::status(&Home::new(h)).await {
                connected += st.peers.iter().filter(|p| p.connected).count();
            }
        }
        if connected == 6 {
            break;
        }
        if Instant::now() > deadline {
            bail!("mesh did not connect within 15 s; logs are in {}/*/daemon.log", mesh.dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("mesh connected: every node talks to the other two (gamma found alpha by gossip)\n");

    // Write a file on alpha as an upload would: under a partial name, then renamed.
    let size = size_mib << 20;
    let part = shares[0].join("snapshot.bin.part");
    {
        let mut f = std::fs::File::create(&part)?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            rand::thread_rng().fill_bytes(&mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    let final_path = shares[0].join("snapshot.bin");
    std::fs::rename(&part, &final_path)?;
    let want = file_hash(&final_path).context("hashing the demo file")?;
    println!("wrote {size_mib} MiB to alpha:{}", final_path.display());

    let mp = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>6} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = names[1..]
        .iter()
        .map(|n| {
            let b = mp.add(ProgressBar::new(size));
            b.set_style(style.clone());
            b.set_prefix(n.to_string());
            b
        })
        .collect();
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = [false, false];
    while !done.iter().all(|d| *d) {
        for i in 0..2 {
            if done[i] {
                continue;
            }
            let target = shares[i + 1].join("snapshot.bin");
            if file_hash(&target) == Some(want) {
                done[i] = true;
                bars[i].set_position(size);
                bars[i].finish_with_message("verified");
                continue;
            }
            if let Ok(st) = control::status(&Home::new(&homes[i + 1])).await {
                if let Some(t) = st.transfers.iter().find(|t| t.path == "snapshot.bin") {
                    bars[i].set_position(t.done);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("file did not arrive within 60 s; logs are in {}/*/daemon.log", mesh.dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\nsnapshot.bin arrived on beta and gamma in {:.1} s, blake3 verified on both",
        t0.elapsed().as_secs_f64()
    );
    // Give the indexes a moment to settle so status shows the mesh in sync.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = control::status(&Home::new(&homes[0])).await?;
    println!("\n$ meshsync --home {} status\n{}", homes[0].display(), st.human());
    for (i, n) in names.iter().enumerate() {
        let st = control::status(&Home::new(&homes[i])).await?;
        println!(
            "{n}: sent {} of chunk data, received {}",
            crate::ops::status::human_bytes(st.counters.chunk_bytes_sent),
            crate::ops::status::human_bytes(st.counters.chunk_bytes_received)
        );
    }
    if keep {
        let pids: Vec<String> = mesh.children.iter().map(|c| c.id().to_string()).collect();
        println!("\nthe mesh keeps running. Look at it with:");
        for h in &homes {
            println!("  meshsync --home {} status", h.display());
        }
        println!("drop files into {}/*-share/ and watch them spread.", mesh.dir.display());
        println!("stop it with: kill {}   (then rm -r {})", pids.join(" "), mesh.dir.display());
        mesh.children.clear();
        let _ = tmp.keep();
    } else {
        drop(mesh);
        println!("\ndemo done in {:.1} s; cleaned up", started.elapsed().as_secs_f64());
    }
    Ok(())
}
