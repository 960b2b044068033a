//! Shared by the benchmark programs: a counting proxy in front of Azurite's table port
//! (requests and batch operations counted, not derived) and the handler's memory from /proc.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// Counting proxy in front of Azurite's table port.

#[derive(Default)]
pub struct Counts {
    /// "METHOD kind" → requests.
    pub requests: Mutex<BTreeMap<String, u64>>,
    pub batch_ops: AtomicU64,
    pub unparsed: AtomicU64,
}

impl Counts {
    pub fn snapshot(&self) -> (BTreeMap<String, u64>, u64) {
        (
            self.requests.lock().unwrap().clone(),
            self.batch_ops.load(Ordering::SeqCst),
        )
    }
}

#[derive(Debug, Default, Clone)]
pub struct Traffic {
    pub requests: BTreeMap<String, u64>,
    pub batch_ops: u64,
}

impl Traffic {
    pub fn between(a: &(BTreeMap<String, u64>, u64), b: &(BTreeMap<String, u64>, u64)) -> Self {
        let mut requests = BTreeMap::new();
        for (k, v) in &b.0 {
            let d = v - a.0.get(k).copied().unwrap_or(0);
            if d > 0 {
                requests.insert(k.clone(), d);
            }
        }
        Self {
            requests,
            batch_ops: b.1 - a.1,
        }
    }
    pub fn get(&self, k: &str) -> u64 {
        self.requests.get(k).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
    /// Requests that write: batches and single-entity writes.
    pub fn write_requests(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| {
                k.starts_with("POST batch")
                    || (k.ends_with(" entity") && !k.starts_with("GET"))
                    || k.starts_with("POST insert")
            })
            .map(|(_, v)| v)
            .sum()
    }
    /// Entity operations of every kind: single-entity requests plus the operations inside
    /// batches.
    pub fn ops(&self) -> u64 {
        self.total() - self.get("POST batch") + self.batch_ops
    }
    /// Entity writes: operations inside batches plus single-entity writes.
    pub fn write_ops(&self) -> u64 {
        self.write_requests() - self.get("POST batch") + self.batch_ops
    }
    pub fn describe(&self) -> String {
        self.requests
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn classify(method: &str, path: &str) -> String {
    let p = path.split('?').next().unwrap_or(path);
    let kind = if p.ends_with("$batch") {
        "batch"
    } else if p.ends_with("/Tables") || p.contains("/Tables(") {
        "tables"
    } else if p.contains("PartitionKey=") {
        "entity"
    } else if method == "POST" {
        "insert"
    } else {
        "query"
    };
    format!("{method} {kind}")
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn count(hay: &[u8], needle: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = find(&hay[i..], needle) {
        n += 1;
        i += p + needle.len();
    }
    n
}

pub async fn start_proxy(upstream: u16, counts: Arc<Counts>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    proxy_conn(client, server, counts).await;
                }
            });
        }
    });
    Ok(port)
}

pub async fn proxy_conn(client: TcpStream, server: TcpStream, counts: Arc<Counts>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = Parser::default();
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        parser.feed(&buf[..n], &counts);
    }
    let _ = sw.shutdown().await;
    let _ = down.await;
}

/// HTTP/1.1 request framing (Content-Length bodies), enough to count requests and the
/// operations inside `$batch` bodies.
#[derive(Default)]
pub struct Parser {
    pub pending: Vec<u8>,
    pub body_left: usize,
    pub capture: Option<Vec<u8>>,
    pub broken: bool,
}

impl Parser {
    pub fn feed(&mut self, chunk: &[u8], counts: &Counts) {
        if self.broken {
            return;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            if self.body_left > 0 {
                let take = self.body_left.min(self.pending.len());
                if let Some(c) = self.capture.as_mut() {
                    c.extend_from_slice(&self.pending[..take]);
                }
                self.pending.drain(..take);
                self.body_left -= take;
                if self.body_left > 0 {
                    return;
                }
                if let Some(c) = self.capture.take() {
                    counts
                        .batch_ops
                        .fetch_add(count(&c, b" HTTP/1.1\r\n"), Ordering::SeqCst);
                }
                continue;
            }
            let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                return;
            };
            let text = String::from_utf8_lossy(&self.pending[..end]).to_string();
            self.pending.drain(..end + 4);
            let mut lines = text.split("\r\n");
            let mut first = lines.next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default();
            let path = first.next().unwrap_or_default();
            let mut len = 0usize;
            for l in lines {
                let lower = l.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                    self.broken = true;
                }
            }
            *counts
                .requests
                .lock()
                .unwrap()
                .entry(classify(method, path))
                .or_insert(0) += 1;
            if self.broken {
                counts.unparsed.fetch_add(1, Ordering::SeqCst);
                self.pending.clear();
                return;
            }
            self.body_left = len;
            if len > 0 && path.split('?').next().unwrap_or("").ends_with("$batch") {
                self.capture = Some(Vec::with_capacity(len));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc helpers.

/// The pid of the handler: a child of this process (dev-host spawns it from here) running
/// `exe`.
pub fn handler_pid(exe: &Path) -> Option<u32> {
    let me = std::process::id();
    let exe = std::fs::canonicalize(exe).ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid: u32 = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == me && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(exe.clone()) {
            return Some(pid);
        }
    }
    None
}

pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets VmHWM (peak RSS) to the current RSS.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The handler's log filter: `BENCH_HANDLER_RUST_LOG`, else the product's default (as in Azure).
pub fn log_filter() -> String {
    std::env::var("BENCH_HANDLER_RUST_LOG")
        .unwrap_or_else(|_| dev_host::rig::PRODUCT_LOG_FILTER.to_owned())
}

/// The product through dev/host, its table traffic counted by the proxy.
pub struct Rig {
    pub _azurite: dev_host::Azurite,
    pub host: dev_host::RunningHost,
    pub counts: std::sync::Arc<Counts>,
    /// Through the proxy (counted).
    pub proxied: String,
    /// Direct (the bench's own reads).
    pub direct: defender_ops::clients::tables::TableService,
    pub handler: std::path::PathBuf,
    pub http: reqwest::Client,
}

/// A private Azurite, the counting proxy in front of its table port, and dev/host running
/// `handler` on the simulator's settings plus `extra` (tables prefixed `prefix`); `edit` sets
/// the rest of the host's configuration.
pub async fn start_rig(
    sim: &dev_sim::Sim,
    handler: &std::path::Path,
    prefix: &str,
    extra: Vec<(String, String)>,
    edit: impl FnOnce(&mut dev_host::HostConfig),
) -> anyhow::Result<Rig> {
    use defender_ops::clients::tables::{TableOptions, TableService};
    use defender_ops::config::StorageSettings;
    let azurite = dev_host::Azurite::start().await?;
    let counts = std::sync::Arc::new(Counts::default());
    let proxy_port = start_proxy(azurite.table_port(), counts.clone()).await?;
    let proxied = dev_host::storage::azurite_connection_string(proxy_port, azurite.queue_port());
    let mut env = dev_host::rig::handler_env(sim, prefix, &log_filter());
    env.extend(extra);
    let host = dev_host::rig::start_host(handler, &proxied, env, edit).await?;
    let direct = TableService::from_settings(
        &StorageSettings::ConnectionString(azurite.connection_string().into()),
        TableOptions::with_prefix(prefix.to_owned()),
    )?;
    Ok(Rig {
        _azurite: azurite,
        host,
        counts,
        proxied,
        direct,
        handler: handler.to_path_buf(),
        http: reqwest::Client::new(),
    })
}
