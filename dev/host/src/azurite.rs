//! Azurite (table + queue emulators) for tests: one shared instance per process, or a
//! private one that fault tests can stop and restart on the same ports. Killed on drop and,
//! through a small watchdog, when the test process exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

use crate::storage::azurite_connection_string;

/// Environment variable holding the connection string of an Azurite started for the whole
/// test run (by `scripts/test` through `dev/azurite/azurite.sh`).
pub const TEST_STORAGE_ENV: &str = "DEFENDER_OPS_TEST_STORAGE";

static SHARED: OnceCell<Result<Azurite, String>> = OnceCell::const_new();

/// A running Azurite: table and queue services on loopback ports.
#[derive(Debug)]
pub struct Azurite {
    table_port: u16,
    queue_port: u16,
    children: Vec<Child>,
}

impl Azurite {
    /// The connection string tests should use: `DEFENDER_OPS_TEST_STORAGE` when set,
    /// otherwise that of an Azurite started once for this process.
    ///
    /// # Errors
    /// When Azurite cannot be installed or started.
    pub async fn shared() -> anyhow::Result<String> {
        if let Ok(conn) = std::env::var(TEST_STORAGE_ENV)
            && !conn.trim().is_empty()
        {
            return Ok(conn);
        }
        let shared = SHARED
            .get_or_init(|| async { Self::start().await.map_err(|e| format!("{e:#}")) })
            .await;
        match shared {
            Ok(azurite) => Ok(azurite.connection_string()),
            Err(e) => bail!("starting the shared Azurite failed: {e}"),
        }
    }

    /// Starts a private Azurite on free loopback ports.
    ///
    /// # Errors
    /// When `npm ci` fails or Azurite does not answer within 30 s.
    pub async fn start() -> anyhow::Result<Self> {
        ensure_installed().await?;
        let mut azurite = Self {
            table_port: free_port()?,
            queue_port: free_port()?,
            children: Vec::new(),
        };
        azurite.spawn().await?;
        Ok(azurite)
    }

    /// The connection string of this instance.
    pub fn connection_string(&self) -> String {
        azurite_connection_string(self.table_port, self.queue_port)
    }

    /// The table service port.
    pub fn table_port(&self) -> u16 {
        self.table_port
    }

    /// The queue service port.
    pub fn queue_port(&self) -> u16 {
        self.queue_port
    }

    /// Kills both services (the in-memory data is lost).
    pub async fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops (if running) and starts again on the same ports, with empty storage.
    ///
    /// # Errors
    /// As [`Azurite::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = azurite_dir().join("node_modules").join(".bin");
        let services = [
            (
                "azurite-table",
                "--tableHost",
                "--tablePort",
                self.table_port,
                "Tables",
            ),
            (
                "azurite-queue",
                "--queueHost",
                "--queuePort",
                self.queue_port,
                "?comp=list",
            ),
        ];
        for (exe, host_flag, port_flag, port, _) in services {
            let child = Command::new(bin.join(exe))
                .args(["--inMemoryPersistence", "--silent"])
                .args([host_flag, "127.0.0.1", port_flag, &port.to_string()])
                .current_dir(azurite_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {exe}"))?;
            if let Some(pid) = child.id() {
                spawn_watchdog(pid);
            }
            self.children.push(child);
        }
        for (exe, _, _, port, path) in services {
            wait_until_up(port, path)
                .await
                .with_context(|| format!("{exe} on port {port}"))?;
        }
        Ok(())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// The `dev/azurite` folder of this workspace.
pub fn azurite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("azurite")
}

/// Runs `npm ci` in `dev/azurite` unless Azurite is installed; serialised across processes
/// with `flock`.
async fn ensure_installed() -> anyhow::Result<()> {
    let dir = azurite_dir();
    if dir.join("node_modules/.bin/azurite-table").exists() {
        return Ok(());
    }
    let status = Command::new("flock")
        .arg(dir.join(".npm-install.lock"))
        .args([
            "sh",
            "-c",
            "[ -x node_modules/.bin/azurite-table ] || npm ci --no-audit --no-fund --loglevel=error",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .status()
        .await
        .context("running npm ci in dev/azurite (are node and npm installed?)")?;
    if !status.success() {
        bail!("npm ci in {} failed with {status}", dir.display());
    }
    Ok(())
}

/// A free loopback port (bound then released; Azurite binds it right after).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Kills `pid` once this process is gone, so a test binary that exits (statics are never
/// dropped) leaves no Azurite behind: SIGTERM, then SIGKILL after 2 s (azurite-queue may
/// linger after SIGTERM). Ends by itself when `pid` exits first.
pub(crate) fn spawn_watchdog(pid: u32) {
    let parent = std::process::id();
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         kill {pid} 2>/dev/null; sleep 2; kill -9 {pid} 2>/dev/null; exit 0"
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Waits until the service answers any HTTP status (a 403 without auth means up).
async fn wait_until_up(port: u16, path: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/devstoreaccount1/{path}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(&url).send().await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Azurite did not answer {url} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
