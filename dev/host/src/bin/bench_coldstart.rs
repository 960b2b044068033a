//! `bench-coldstart`: exec → first successful `GET /` of the release `handler`, and its idle
//! RSS, next to a minimal Node.js custom handler (`http.createServer`), in the same run.
//!
//! Prints one markdown section on stdout; progress goes to stderr.
//!
//! ```text
//! bench-coldstart [--runs N] [--handler PATH] [--node PATH]
//! ```
//!
//! Each run picks a free port, execs the program, then polls every 1 ms with a raw TCP
//! connect and `GET / HTTP/1.1` until a `200` status line comes back. The programs
//! alternate run by run so that machine noise hits both alike. After the last run of each,
//! one more instance is started and its `VmRSS` read 1 s after it answered.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const NODE_HANDLER: &str = r#"// Minimal Azure Functions custom handler: answers GET / (readiness) and 200 {} otherwise.
const http = require('http');
const port = parseInt(process.env.FUNCTIONS_CUSTOMHANDLER_PORT || '8080', 10);
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, {'content-type': 'application/json'});
    res.end(req.method === 'GET' && req.url === '/' ? '{"status":"ok"}' : '{}');
  });
}).listen(port, '127.0.0.1');
"#;

struct Args {
    runs: usize,
    handler: PathBuf,
    node: String,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary's path as the committed report shows it: relative to the repository, so the
/// document names no folder of the machine that measured it.
fn shown_path(path: &std::path::Path) -> String {
    let root = std::fs::canonicalize(workspace()).unwrap_or_else(|_| workspace());
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match full.strip_prefix(&root) {
        Ok(inside) => inside.display().to_string(),
        Err(_) => path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        runs: 30,
        handler: dev_host::rig::target_dir().join("release").join("handler"),
        node: "node".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => a.runs = it.next().context("--runs N")?.parse()?,
            "--handler" => a.handler = it.next().context("--handler PATH")?.into(),
            "--node" => a.node = it.next().context("--node PATH")?,
            other => bail!("unknown argument {other}"),
        }
    }
    a.handler = std::fs::canonicalize(&a.handler).with_context(|| {
        format!(
            "{} does not exist: cargo build --release --bin handler",
            a.handler.display()
        )
    })?;
    Ok(a)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One raw `GET /`; true on a 200 status line.
fn probe(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_nodelay(true);
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200")
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rust,
    Node,
}

fn spawn(kind: Kind, args: &Args, script: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    let mut cmd = match kind {
        Kind::Rust => Command::new(&args.handler),
        Kind::Node => {
            let mut c = Command::new(&args.node);
            c.arg(script);
            c
        }
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AzureWebJobsStorage", "UseDevelopmentStorage=true")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd.spawn()?)
}

/// exec → first 200 to `GET /`, polling every 1 ms.
fn start_and_wait(
    kind: Kind,
    args: &Args,
    script: &std::path::Path,
) -> anyhow::Result<(Child, Duration)> {
    let port = free_port()?;
    let t0 = Instant::now();
    let mut child = spawn(kind, args, script, port)?;
    loop {
        if probe(port) {
            return Ok((child, t0.elapsed()));
        }
        if let Some(status) = child.try_wait()? {
            bail!("the program exited before answering: {status}");
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("no answer on port {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[path = "bench/common.rs"]
mod common;
use common::status_kib;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Nearest rank.
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn pf(ok: bool) -> &'static str {
    if ok { "**pass**" } else { "**FAIL**" }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = std::env::temp_dir().join(format!("bench-coldstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("node-handler.js");
    std::fs::write(&script, NODE_HANDLER)?;
    let node_version = Command::new(&args.node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into());

    // Warm the page cache for both programs once (not measured): a deploy's first start
    // reads from disk, later ones don't; the medians are about the process, not the disk.
    for kind in [Kind::Rust, Kind::Node] {
        let (c, _) = start_and_wait(kind, &args, &script)?;
        stop(c);
    }

    let mut rust = Vec::new();
    let mut node = Vec::new();
    for i in 0..args.runs {
        for kind in [Kind::Rust, Kind::Node] {
            let (c, d) = start_and_wait(kind, &args, &script)?;
            stop(c);
            let ms = d.as_secs_f64() * 1000.0;
            match kind {
                Kind::Rust => rust.push(ms),
                Kind::Node => node.push(ms),
            }
        }
        eprintln!(
            "bench-coldstart: run {}/{}: handler {:.1} ms, node {:.1} ms",
            i + 1,
            args.runs,
            rust.last().unwrap(),
            node.last().unwrap()
        );
    }

    // Idle RSS 1 s after readiness (median of 3).
    let idle = |kind: Kind| -> anyhow::Result<(f64, f64)> {
        let mut rss = Vec::new();
        let mut hwm = Vec::new();
        for _ in 0..3 {
            let (c, _) = start_and_wait(kind, &args, &script)?;
            std::thread::sleep(Duration::from_secs(1));
            rss.push(status_kib(c.id(), "VmRSS:").unwrap_or(0) as f64 / 1024.0);
            hwm.push(status_kib(c.id(), "VmHWM:").unwrap_or(0) as f64 / 1024.0);
            stop(c);
        }
        Ok((percentile(&rss, 50.0), percentile(&hwm, 50.0)))
    };
    let (rust_rss, rust_hwm) = idle(Kind::Rust)?;
    let (node_rss, node_hwm) = idle(Kind::Node)?;
    let _ = std::fs::remove_dir_all(&dir);

    let size = std::fs::metadata(&args.handler)
        .map(|m| m.len())
        .unwrap_or(0);
    let (rm, rp) = (percentile(&rust, 50.0), percentile(&rust, 90.0));
    let (nm, np) = (percentile(&node, 50.0), percentile(&node, 90.0));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);

    println!("## Cold start (`bench-coldstart`)\n");
    println!(
        "exec → first `200` to a raw `GET /` (polled every 1 ms), {} runs each, alternating; \
         environment: only `PATH`, `AzureWebJobsStorage=UseDevelopmentStorage=true` and \
         `FUNCTIONS_CUSTOMHANDLER_PORT`. Node.js {node_version} runs a 10-line `http.createServer` \
         handler. Idle RSS is `VmRSS` 1 s after the first answer (median of 3 starts). \
         `handler` binary: {:.1} MiB ({}).\n",
        args.runs,
        size as f64 / 1_048_576.0,
        shown_path(&args.handler)
    );
    println!("| Program | Median | p90 | Min | Max | Idle RSS | Peak RSS (VmHWM) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| `handler` (Rust, release) | {rm:.1} ms | {rp:.1} ms | {:.1} ms | {:.1} ms | {rust_rss:.1} MiB | {rust_hwm:.1} MiB |",
        min(&rust),
        max(&rust)
    );
    println!(
        "| Node.js `http.createServer` | {nm:.1} ms | {np:.1} ms | {:.1} ms | {:.1} ms | {node_rss:.1} MiB | {node_hwm:.1} MiB |",
        min(&node),
        max(&node)
    );
    println!();
    println!("| Target | Measured | Result |");
    println!("|---|---|---|");
    println!(
        "| median exec → ready < 30 ms | {rm:.1} ms (Node.js: {nm:.1} ms) | {} |",
        pf(rm < 30.0)
    );
    println!(
        "| idle RSS < 20 MiB | {rust_rss:.1} MiB (Node.js: {node_rss:.1} MiB) | {} |",
        pf(rust_rss < 20.0)
    );
    println!();
    Ok(())
}
