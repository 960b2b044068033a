//! The handler process, supervised like the host does: fixed port for its lifetime,
//! readiness by `GET /` every 25 ms, stdout/stderr captured line by line, restarted after a
//! crash or a kill (same port), not restarted after exit code 0.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// Where a captured log line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// The handler's stdout.
    Stdout,
    /// The handler's stderr (the host logs these as errors).
    Stderr,
    /// An entry of an invocation answer's `Logs` array, for this function.
    Function(String),
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerLog {
    /// Its origin.
    pub source: LogSource,
    /// The line, without the newline.
    pub line: String,
}

/// The handler's state as seen by invocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, not answering `GET /` yet.
    Starting,
    /// Answering; `generation` counts process starts.
    Ready {
        /// 1 for the first process, +1 per restart.
        generation: u64,
    },
    /// Not running and not coming back (exit 0, spawn failure, host stopped).
    Stopped(String),
}

/// How to start the handler.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Executable.
    pub program: PathBuf,
    /// Arguments from host.json.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Extra environment (inherited environment + these).
    pub env: Vec<(String, String)>,
    /// Port the handler must listen on.
    pub port: u16,
    /// `initializationTimeout`.
    pub init_timeout: Duration,
    /// Echo captured lines to stderr with a `[handler]` prefix.
    pub echo: bool,
}

/// A supervised handler process.
#[derive(Debug, Clone)]
pub struct Worker {
    state: watch::Receiver<WorkerState>,
    kill: mpsc::UnboundedSender<()>,
    logs: Arc<Mutex<Vec<HandlerLog>>>,
    starts: Arc<AtomicU64>,
    port: u16,
}

impl Worker {
    /// Starts supervising; the first process starts immediately.
    pub fn start(spec: WorkerSpec, shutdown: watch::Receiver<bool>) -> Self {
        let (state_tx, state) = watch::channel(WorkerState::Starting);
        let (kill, kill_rx) = mpsc::unbounded_channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let starts = Arc::new(AtomicU64::new(0));
        let port = spec.port;
        tokio::spawn(supervise(
            spec,
            state_tx,
            kill_rx,
            shutdown,
            logs.clone(),
            starts.clone(),
        ));
        Self {
            state,
            kill,
            logs,
            starts,
            port,
        }
    }

    /// The port the handler listens on (same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many times a handler process was started.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    /// The current state.
    pub fn state(&self) -> WorkerState {
        self.state.borrow().clone()
    }

    /// Waits until the handler answers; returns its generation.
    ///
    /// # Errors
    /// When it stopped for good or `timeout` passed.
    pub async fn ready(&self, timeout: Duration) -> Result<u64, String> {
        let mut rx = self.state.clone();
        let wait = rx.wait_for(|s| !matches!(s, WorkerState::Starting));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(state)) => match &*state {
                WorkerState::Ready { generation } => Ok(*generation),
                WorkerState::Stopped(why) => Err(format!("the handler is not running: {why}")),
                WorkerState::Starting => Err("the handler is still starting".to_string()),
            },
            Ok(Err(_)) => Err("the host stopped".to_string()),
            Err(_) => Err(format!(
                "Initialization timed out: the handler did not answer within {timeout:?}"
            )),
        }
    }

    /// Kills the running process (SIGKILL); the supervisor restarts it on the same port.
    pub fn kill(&self) {
        let _ = self.kill.send(());
    }

    /// Every captured line so far.
    pub fn logs(&self) -> Vec<HandlerLog> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records invocation `Logs` lines.
    pub fn record(&self, source: LogSource, line: String) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(HandlerLog { source, line });
        }
    }
}

fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
    source: LogSource,
    logs: Arc<Mutex<Vec<HandlerLog>>>,
    echo: bool,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                let tag = if source == LogSource::Stderr {
                    "handler!"
                } else {
                    "handler"
                };
                eprintln!("[{tag}] {line}");
            }
            if let Ok(mut logs) = logs.lock() {
                logs.push(HandlerLog {
                    source: source.clone(),
                    line,
                });
            }
        }
    });
}

/// Polls `GET /` every 25 ms until any HTTP answer.
async fn wait_ready(port: u16, timeout: Duration) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client.get(&url).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn spawn_child(spec: &WorkerSpec) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn()
}

async fn kill_and_reap(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

async fn supervise(
    spec: WorkerSpec,
    state: watch::Sender<WorkerState>,
    mut kill: mpsc::UnboundedReceiver<()>,
    mut shutdown: watch::Receiver<bool>,
    logs: Arc<Mutex<Vec<HandlerLog>>>,
    starts: Arc<AtomicU64>,
) {
    let mut generation = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        generation += 1;
        state.send_replace(WorkerState::Starting);
        let mut child = match spawn_child(&spec) {
            Ok(c) => c,
            Err(e) => {
                state.send_replace(WorkerState::Stopped(format!(
                    "cannot start {}: {e}",
                    spec.program.display()
                )));
                break;
            }
        };
        starts.fetch_add(1, Ordering::SeqCst);
        if let Some(pid) = child.id() {
            crate::azurite::spawn_watchdog(pid);
        }
        if let Some(out) = child.stdout.take() {
            capture(out, LogSource::Stdout, logs.clone(), spec.echo);
        }
        if let Some(err) = child.stderr.take() {
            capture(err, LogSource::Stderr, logs.clone(), spec.echo);
        }
        // Drain kill requests aimed at the previous process.
        while kill.try_recv().is_ok() {}

        let exit = tokio::select! {
            ready = wait_ready(spec.port, spec.init_timeout) => {
                if ready {
                    state.send_replace(WorkerState::Ready { generation });
                    tokio::select! {
                        status = child.wait() => status.ok(),
                        _ = kill.recv() => { kill_and_reap(&mut child).await; None }
                        _ = shutdown.changed() => { kill_and_reap(&mut child).await; break; }
                    }
                } else {
                    tracing::error!("Initializing HttpWorker timed out; restarting the handler");
                    kill_and_reap(&mut child).await;
                    None
                }
            }
            status = child.wait() => status.ok(),
            _ = kill.recv() => { kill_and_reap(&mut child).await; None }
            _ = shutdown.changed() => { kill_and_reap(&mut child).await; break; }
        };
        match exit.and_then(|s| s.code()) {
            Some(0) => {
                tracing::warn!("the handler exited with code 0: not restarted (as the real host)");
                state.send_replace(WorkerState::Stopped(
                    "the handler exited with code 0 (the host does not restart it)".to_string(),
                ));
                break;
            }
            code => {
                tracing::warn!(?code, "the handler exited; restarting it on the same port");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if !matches!(*state.borrow(), WorkerState::Stopped(_)) {
        state.send_replace(WorkerState::Stopped("the host stopped".to_string()));
    }
}
