//! The local host: loads the app, supervises the handler, serves `/{routePrefix}/...` with
//! keys, fires timers, polls trigger queues (retries, `maxDequeueCount`, `-poison`) and
//! writes queue output bindings, invoking the handler in payload mode as the host does.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::{self, AuthLevel, FunctionDef, HostSettings, Output, Trigger};
use crate::outputs::{self, HandlerAnswer, HttpAnswer};
use crate::payload::{
    self, Caller, HOST_VERSION, HttpRequestData, QueueTriggerData, ScheduleStatus,
};
use crate::queue::{QueueClient, QueueMessage};
use crate::routes::split_path;
use crate::worker::{HandlerLog, LogSource, Worker, WorkerSpec, WorkerState};

/// How a host is started.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Folder holding host.json and `functions/*/function.json` (or `*/function.json`).
    pub app_root: PathBuf,
    /// The handler executable.
    pub handler: PathBuf,
    /// Environment for the handler, on top of the inherited one (app settings).
    pub env: Vec<(String, String)>,
    /// Connection string of the storage account (`AzureWebJobsStorage`, queues).
    pub storage: String,
    /// Where the front end listens (port 0 = a free port).
    pub listen: SocketAddr,
    /// The function key (key name `default`).
    pub function_key: String,
    /// The admin (master) key.
    pub admin_key: String,
    /// Fire timers on their schedules (tests fire them on demand instead).
    pub run_timers: bool,
    /// Pause between polls of an empty trigger queue.
    pub queue_poll_interval: Duration,
    /// How long a dequeued message stays invisible while its invocation runs (the real
    /// host's listener uses 10 minutes). If the invocation fails and storage is down, the
    /// message can't be released early and reappears only after this; tests of storage
    /// outages shorten it.
    pub listener_visibility: Duration,
    /// Prefix of every physical queue name, so tests sharing one Azurite stay apart (the
    /// handler never sees queue names: they are bindings). Empty in real use.
    pub queue_prefix: String,
    /// JSON merge patch applied to host.json (e.g. a shorter `visibilityTimeout` in tests).
    pub host_json_patch: Option<Value>,
    /// Echo handler stdout/stderr to this process's stderr.
    pub echo_handler_output: bool,
}

impl HostConfig {
    /// A configuration with free port, random keys, timers off, 100 ms queue polling.
    pub fn new(app_root: impl Into<PathBuf>, handler: impl Into<PathBuf>, storage: &str) -> Self {
        Self {
            app_root: app_root.into(),
            handler: handler.into(),
            env: Vec::new(),
            storage: storage.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            function_key: random_key(),
            admin_key: random_key(),
            run_timers: false,
            queue_poll_interval: Duration::from_millis(100),
            listener_visibility: Duration::from_secs(600),
            queue_prefix: String::new(),
            host_json_patch: None,
            echo_handler_output: true,
        }
    }
}

fn random_key() -> String {
    use rand::Rng;
    let bytes: [u8; 30] = rand::rng().random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Per-function counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Invocations sent to the handler (or failed before it, e.g. undecodable message).
    pub invocations: u64,
    /// Succeeded invocations.
    pub succeeded: u64,
    /// Failed invocations.
    pub failed: u64,
    /// Messages moved to the poison queue.
    pub poisoned: u64,
}

/// The result of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `X-Azure-Functions-InvocationId`.
    pub id: Uuid,
    /// Function name.
    pub function: String,
    /// The answer, or why the host considers the invocation failed.
    pub result: Result<HandlerAnswer, String>,
    /// The caller's response for HTTP-triggered functions.
    pub http: Option<HttpAnswer>,
    /// Wall time.
    pub duration: Duration,
}

impl Invocation {
    /// Whether the host considers it succeeded.
    pub fn succeeded(&self) -> bool {
        self.result.is_ok()
    }
}

/// Entry point.
pub struct Host;

impl Host {
    /// Loads the app, starts the handler, the front end, the queue listeners and (if asked)
    /// the timers. Returns once the handler answers `GET /`.
    ///
    /// # Errors
    /// On an invalid host.json or function.json, an unresolved or unparsable schedule, an
    /// invalid connection string, a busy listen address, or a handler that does not start.
    pub async fn start(cfg: HostConfig) -> anyhow::Result<RunningHost> {
        let env_map: HashMap<String, String> = cfg.env.iter().cloned().collect();
        let resolve = |key: &str| -> Option<String> {
            env_map
                .get(key)
                .cloned()
                .or_else(|| std::env::var(key).ok())
        };
        let host_json_path = cfg.app_root.join("host.json");
        let text = std::fs::read_to_string(&host_json_path)
            .with_context(|| format!("reading {}", host_json_path.display()))?;
        let mut host_json: Value =
            serde_json::from_str(&text).context("host.json is not valid JSON")?;
        if let Some(patch) = &cfg.host_json_patch {
            config::merge_patch(&mut host_json, patch);
        }
        let settings = HostSettings::from_json(&host_json, &resolve)?;
        let functions = config::load_functions(&cfg.app_root, &resolve)?;
        if functions.is_empty() {
            bail!("no function.json under {}", cfg.app_root.display());
        }
        let queues = QueueClient::from_connection_string(&cfg.storage)
            .context("the storage connection string")?;
        for f in &functions {
            for q in trigger_and_output_queues(f) {
                crate::queue::validate_queue_name(&format!("{}{q}-poison", cfg.queue_prefix))?;
            }
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let port = crate::azurite::free_port()?;
        let worker_id = Uuid::new_v4().to_string();
        let mut env = vec![("AzureWebJobsStorage".to_string(), cfg.storage.clone())];
        env.extend(cfg.env.iter().cloned());
        env.extend([
            ("FUNCTIONS_CUSTOMHANDLER_PORT".to_string(), port.to_string()),
            ("FUNCTIONS_HTTPWORKER_PORT".to_string(), port.to_string()),
            (
                "FUNCTIONS_CUSTOMHANDLER_WORKER_ID".to_string(),
                worker_id.clone(),
            ),
            ("FUNCTIONS_HTTPWORKER_ID".to_string(), worker_id),
            (
                "FUNCTIONS_APP_ROOT_PATH".to_string(),
                cfg.app_root.display().to_string(),
            ),
        ]);
        let cwd = if settings.working_directory.is_empty() {
            cfg.app_root.clone()
        } else {
            cfg.app_root.join(&settings.working_directory)
        };
        let worker = Worker::start(
            WorkerSpec {
                program: cfg.handler.clone(),
                args: settings.arguments.clone(),
                cwd,
                env,
                port,
                init_timeout: settings.initialization_timeout,
                echo: cfg.echo_handler_output,
            },
            shutdown_rx.clone(),
        );

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let local = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the invocation client")?;
        let inner = Arc::new(Inner {
            settings,
            functions,
            worker,
            http,
            queues,
            queue_prefix: cfg.queue_prefix.clone(),
            function_key: cfg.function_key.clone(),
            admin_key: cfg.admin_key.clone(),
            stats: Mutex::new(HashMap::new()),
            busy: AtomicUsize::new(0),
            timer_status: Mutex::new(HashMap::new()),
            created_queues: Mutex::new(HashSet::new()),
            base_url: format!("http://{local}"),
            echo: cfg.echo_handler_output,
        });

        let mut tasks = Vec::new();
        let router = axum::Router::new()
            .fallback(front_door)
            .with_state(inner.clone());
        let mut server_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = server_shutdown.changed().await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the front end stopped");
            }
        }));

        if let Err(e) = inner
            .worker
            .ready(inner.settings.initialization_timeout + Duration::from_secs(5))
            .await
        {
            let _ = shutdown_tx.send(true);
            let logs: Vec<String> = inner.worker.logs().into_iter().map(|l| l.line).collect();
            bail!(
                "the handler did not become ready: {e}\nits output:\n{}",
                logs.join("\n")
            );
        }

        for f in &inner.functions {
            match &f.trigger {
                Trigger::Queue { .. } => {
                    tasks.push(tokio::spawn(queue_listener(
                        inner.clone(),
                        f.clone(),
                        cfg.queue_poll_interval,
                        cfg.listener_visibility,
                        shutdown_rx.clone(),
                    )));
                }
                Trigger::Timer { .. } if cfg.run_timers => {
                    tasks.push(tokio::spawn(timer_loop(
                        inner.clone(),
                        f.clone(),
                        shutdown_rx.clone(),
                    )));
                }
                _ => {}
            }
        }
        Ok(RunningHost {
            inner,
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

fn trigger_and_output_queues(f: &FunctionDef) -> Vec<String> {
    let mut names = Vec::new();
    if let Trigger::Queue { queue, .. } = &f.trigger {
        names.push(queue.clone());
    }
    for o in &f.outputs {
        if let Output::Queue { queue, .. } = o {
            names.push(queue.clone());
        }
    }
    names
}

struct Inner {
    settings: HostSettings,
    functions: Vec<FunctionDef>,
    worker: Worker,
    http: reqwest::Client,
    queues: QueueClient,
    queue_prefix: String,
    function_key: String,
    admin_key: String,
    stats: Mutex<HashMap<String, FunctionStats>>,
    /// Invocations and queue messages being processed.
    busy: AtomicUsize,
    /// Per timer: (last run, last updated).
    timer_status: Mutex<HashMap<String, DateTime<Utc>>>,
    created_queues: Mutex<HashSet<String>>,
    base_url: String,
    echo: bool,
}

struct BusyGuard<'a>(&'a AtomicUsize);

impl<'a> BusyGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn physical(&self, queue: &str) -> String {
        format!("{}{queue}", self.queue_prefix)
    }

    fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    fn count(&self, function: &str, update: impl FnOnce(&mut FunctionStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            update(stats.entry(function.to_string()).or_default());
        }
    }

    async fn ensure_queue(&self, physical: &str) -> anyhow::Result<()> {
        let known = self
            .created_queues
            .lock()
            .map(|q| q.contains(physical))
            .unwrap_or(false);
        if !known {
            self.queues.create_queue(physical).await?;
            if let Ok(mut q) = self.created_queues.lock() {
                q.insert(physical.to_string());
            }
        }
        Ok(())
    }

    /// Forgets that a queue exists (Azurite may have been restarted with empty storage).
    fn forget_queue(&self, physical: &str) {
        if let Ok(mut q) = self.created_queues.lock() {
            q.remove(physical);
        }
    }

    /// Puts one message, re-creating the queue once if it vanished.
    async fn put_output(&self, physical: &str, message: &[u8]) -> anyhow::Result<()> {
        self.ensure_queue(physical).await?;
        if self.queues.put_bytes(physical, message).await.is_ok() {
            return Ok(());
        }
        self.forget_queue(physical);
        self.ensure_queue(physical).await?;
        self.queues.put_bytes(physical, message).await?;
        Ok(())
    }

    /// Sends one payload-mode invocation and applies its outputs.
    async fn invoke(&self, f: &FunctionDef, payload: Value) -> Invocation {
        let _busy = BusyGuard::new(&self.busy);
        let id = Uuid::new_v4();
        let started = Instant::now();
        self.count(&f.name, |s| s.invocations += 1);
        let mut result = self.call_handler(f, id, payload).await;
        let mut http = None;
        if let Ok(answer) = &mut result {
            if let Value::Object(extra) = &answer.return_value
                && !f.outputs.iter().any(|o| o.name() == "$return")
            {
                for (k, v) in extra {
                    answer.outputs.insert(k.clone(), v.clone());
                }
            }
            for line in &answer.logs {
                self.worker
                    .record(LogSource::Function(f.name.clone()), line.clone());
            }
            match self.bind_outputs(f, answer).await {
                Ok(h) => http = h,
                Err(e) => result = Err(e),
            }
        }
        match &result {
            Ok(_) => self.count(&f.name, |s| s.succeeded += 1),
            Err(e) => {
                tracing::warn!(function = %f.name, invocation.id = %id, error = %e, "invocation failed");
                if self.echo {
                    eprintln!("[dev-host] {} invocation {id} failed: {e}", f.name);
                }
                self.count(&f.name, |s| s.failed += 1);
            }
        }
        if f.outputs.iter().any(|o| matches!(o, Output::Http { .. })) && http.is_none() {
            http = Some(HttpAnswer::failed());
        }
        Invocation {
            id,
            function: f.name.clone(),
            result,
            http,
            duration: started.elapsed(),
        }
    }

    async fn call_handler(
        &self,
        f: &FunctionDef,
        id: Uuid,
        payload: Value,
    ) -> Result<HandlerAnswer, String> {
        self.worker
            .ready(self.settings.initialization_timeout * 4)
            .await?;
        let body = bytes::Bytes::from(payload.to_string());
        // A stream body has no known length: sent chunked, like the host's ObjectContent.
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let request = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/{}",
                self.worker.port(),
                f.name
            ))
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("X-Azure-Functions-InvocationId", id.to_string())
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(stream));
        let call = async {
            let response = request
                .send()
                .await
                .map_err(|e| format!("calling the handler failed: {e}"))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = response
                .bytes()
                .await
                .map_err(|e| format!("reading the handler's answer failed: {e}"))?;
            outputs::parse_answer(status, content_type.as_deref(), &bytes)
        };
        match self.settings.function_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!(function = %f.name, "Timeout value of {limit:?} exceeded; restarting the handler");
                    self.worker.kill();
                    Err(format!(
                        "Timeout value of {limit:?} was exceeded by function {}",
                        f.name
                    ))
                }
            },
            None => call.await,
        }
    }

    /// Writes queue outputs; returns the caller's response for an `http` output.
    async fn bind_outputs(
        &self,
        f: &FunctionDef,
        answer: &HandlerAnswer,
    ) -> Result<Option<HttpAnswer>, String> {
        for key in answer.outputs.keys() {
            if !f.outputs.iter().any(|o| o.name() == key) {
                tracing::warn!(function = %f.name, output = %key, "Outputs has a key that is no output binding of the function: ignored (keys are case-sensitive)");
            }
        }
        let mut http = None;
        for output in &f.outputs {
            match output {
                Output::Http { name } if name == "$return" => {
                    http = Some(outputs::http_return_answer(&answer.return_value)?);
                }
                Output::Http { name } => {
                    http = Some(outputs::http_answer(answer.outputs.get(name))?);
                }
                Output::Queue {
                    name,
                    queue,
                    binary,
                } => {
                    let value = if name == "$return" {
                        Some(&answer.return_value)
                    } else {
                        answer.outputs.get(name)
                    };
                    let Some(value) = value else { continue };
                    let messages = outputs::queue_messages(value, *binary);
                    if messages.is_empty() {
                        continue;
                    }
                    let physical = self.physical(queue);
                    for m in messages {
                        self.put_output(&physical, &m)
                            .await
                            .map_err(|e| format!("output binding {name}: {e:#}"))?;
                    }
                }
                Output::Other { name, kind } => {
                    if answer.outputs.contains_key(name) {
                        tracing::warn!(function = %f.name, output = %name, kind = %kind, "output binding type not emulated: value dropped");
                    }
                }
            }
        }
        Ok(http)
    }

    async fn fire_timer(&self, f: &FunctionDef, occurrence: Option<DateTime<Utc>>) -> Invocation {
        let now = Utc::now();
        let Trigger::Timer {
            binding,
            schedule,
            use_monitor,
            ..
        } = &f.trigger
        else {
            return Invocation {
                id: Uuid::nil(),
                function: f.name.clone(),
                result: Err("not a timer function".into()),
                http: None,
                duration: Duration::ZERO,
            };
        };
        let last = self
            .timer_status
            .lock()
            .ok()
            .and_then(|m| m.get(&f.name).copied());
        let next = occurrence
            .or_else(|| schedule.next_after(now))
            .unwrap_or(now);
        let status = use_monitor.then_some(ScheduleStatus {
            last,
            next,
            last_updated: last,
        });
        let body = payload::timer_payload(
            &f.name,
            binding,
            schedule.adjust_for_dst(),
            status,
            false,
            now,
        );
        let invocation = self.invoke(f, body).await;
        if let Ok(mut m) = self.timer_status.lock() {
            m.insert(f.name.clone(), now);
        }
        invocation
    }

    async fn process_message(&self, f: &FunctionDef, message: QueueMessage) {
        let _busy = BusyGuard::new(&self.busy);
        let Trigger::Queue {
            binding,
            queue,
            binary,
        } = &f.trigger
        else {
            return;
        };
        let physical = self.physical(queue);
        let max = self.settings.max_dequeue_count;
        if message.dequeue_count > max {
            self.poison(f, &physical, &message).await;
            return;
        }
        let succeeded = match message.bytes() {
            Some(bytes) => {
                let data = QueueTriggerData {
                    id: Some(message.id.clone()),
                    pop_receipt: Some(message.pop_receipt.clone()),
                    dequeue_count: message.dequeue_count,
                    insertion_time: message.insertion_time,
                    expiration_time: message.expiration_time,
                    next_visible_time: message.next_visible_time,
                    bytes,
                };
                let body = payload::queue_payload(&f.name, binding, *binary, &data, Utc::now());
                self.invoke(f, body).await.succeeded()
            }
            None => {
                tracing::warn!(function = %f.name, message.id = %message.id, "message is not base64 (messageEncoding base64): failed");
                self.count(&f.name, |s| {
                    s.invocations += 1;
                    s.failed += 1;
                });
                false
            }
        };
        if succeeded {
            if let Err(e) = self
                .queues
                .delete_message(&physical, &message.id, &message.pop_receipt)
                .await
            {
                tracing::warn!(error = %format!("{e:#}"), "deleting a processed message failed");
            }
        } else if message.dequeue_count >= max {
            self.poison(f, &physical, &message).await;
        } else if let Err(e) = self
            .queues
            .update_visibility(
                &physical,
                &message.id,
                &message.pop_receipt,
                self.settings.visibility_timeout,
            )
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "releasing a failed message failed");
        }
    }

    async fn poison(&self, f: &FunctionDef, physical: &str, message: &QueueMessage) {
        let poison = format!("{physical}-poison");
        tracing::warn!(function = %f.name, message.id = %message.id, queue = %poison, "moving the message to the poison queue");
        let moved = async {
            self.forget_queue(&poison);
            self.ensure_queue(&poison).await?;
            self.queues.put_raw(&poison, &message.raw_text).await?;
            self.queues
                .delete_message(physical, &message.id, &message.pop_receipt)
                .await
        }
        .await;
        match moved {
            Ok(()) => self.count(&f.name, |s| s.poisoned += 1),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "moving to the poison queue failed")
            }
        }
    }
}

/// Sleeps `duration`; true when the host is stopping.
async fn pause(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.changed() => true,
    }
}

async fn queue_listener(
    inner: Arc<Inner>,
    f: FunctionDef,
    poll: Duration,
    window: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Trigger::Queue { queue, .. } = &f.trigger else {
        return;
    };
    let physical = inner.physical(queue);
    // `window` is the listener's visibility window; failures shorten it to visibilityTimeout.
    let permits = Arc::new(Semaphore::new(inner.settings.batch_size as usize));
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = inner.ensure_queue(&physical).await {
            tracing::warn!(queue = %physical, error = %format!("{e:#}"), "cannot create the trigger queue");
            if pause(poll.max(Duration::from_secs(1)), &mut shutdown).await {
                return;
            }
            continue;
        }
        let available = permits.available_permits();
        if available == 0 {
            if pause(poll, &mut shutdown).await {
                return;
            }
            continue;
        }
        let batch = u32::try_from(available.min(32)).unwrap_or(32);
        match inner.queues.get_messages(&physical, batch, window).await {
            Ok(messages) if !messages.is_empty() => {
                for message in messages {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let inner = inner.clone();
                    let f = f.clone();
                    tokio::spawn(async move {
                        inner.process_message(&f, message).await;
                        drop(permit);
                    });
                }
            }
            Ok(_) => {
                if pause(poll, &mut shutdown).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(queue = %physical, error = %format!("{e:#}"), "polling the queue failed");
                inner.forget_queue(&physical);
                if pause(poll.max(Duration::from_secs(1)), &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

async fn timer_loop(inner: Arc<Inner>, f: FunctionDef, mut shutdown: watch::Receiver<bool>) {
    let Trigger::Timer {
        schedule,
        run_on_startup,
        ..
    } = &f.trigger
    else {
        return;
    };
    if *run_on_startup {
        inner.fire_timer(&f, None).await;
    }
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let inv = inner.fire_timer(&f, Some(next)).await;
        tracing::info!(function = %f.name, succeeded = inv.succeeded(), "timer fired");
    }
}

fn plain(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn presented_key(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.to_string());
    }
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
    })
}

fn caller_of(inner: &Inner, key: Option<&str>) -> Caller {
    match key {
        Some(k) if !inner.admin_key.is_empty() && k == inner.admin_key => Caller::AdminKey,
        Some(k) if !inner.function_key.is_empty() && k == inner.function_key => {
            Caller::FunctionKey("default".to_string())
        }
        _ => Caller::Anonymous,
    }
}

/// Whether `caller` may call a function of `level`.
pub fn authorized(level: AuthLevel, caller: &Caller) -> bool {
    match level {
        AuthLevel::Anonymous => true,
        AuthLevel::Function => !matches!(caller, Caller::Anonymous),
        AuthLevel::Admin => matches!(caller, Caller::AdminKey),
    }
}

/// A matching HTTP function, its route parameters and its route's precedence.
type Candidate<'a> = (&'a FunctionDef, Map<String, Value>, (usize, usize));

async fn front_door(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/" {
        return plain(200, "Your Functions 4.0 app is up and running (dev-host)");
    }
    let segments = split_path(&path);
    if segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("admin"))
    {
        return admin(inner, req, &segments[1..]).await;
    }
    let prefix = split_path(&inner.settings.route_prefix);
    if segments.len() < prefix.len()
        || !segments
            .iter()
            .zip(&prefix)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
    {
        return plain(404, "");
    }
    let rest = &segments[prefix.len()..];
    let method = req.method().as_str().to_ascii_uppercase();
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for f in &inner.functions {
        if let Trigger::Http { route, methods, .. } = &f.trigger
            && (methods.is_empty() || methods.contains(&method))
            && let Some(params) = route.matches(rest)
        {
            candidates.push((f, params, route.precedence()));
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.2));
    let Some((f, params, _)) = candidates.into_iter().next() else {
        return plain(404, "");
    };
    let Trigger::Http { binding, auth, .. } = &f.trigger else {
        return plain(404, "");
    };
    let key = presented_key(&req);
    let caller = caller_of(&inner, key.as_deref());
    if !authorized(*auth, &caller) {
        return plain(401, "");
    }
    let f = f.clone();
    let binding = binding.clone();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 100 * 1024 * 1024).await else {
        return plain(413, "");
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || inner.base_url.trim_start_matches("http://").to_string(),
            str::to_string,
        );
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                payload::header_display_name(k.as_str()),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let data = HttpRequestData {
        method: parts.method.as_str().to_string(),
        url: format!("http://{host}{path_and_query}"),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
    };
    let body = payload::http_payload(&f.name, &binding, &data, &params, &caller, Utc::now());
    let invocation = inner.invoke(&f, body).await;
    let answer = match (invocation.result.is_ok(), invocation.http) {
        (true, Some(a)) => a,
        (true, None) => HttpAnswer {
            status: 204,
            headers: vec![],
            body: vec![],
        },
        (false, _) => HttpAnswer::failed(),
    };
    let mut response = Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        response = response.header(k.as_str(), v.as_str());
    }
    response
        .body(Body::from(answer.body))
        .unwrap_or_else(|_| plain(500, ""))
}

async fn admin(inner: Arc<Inner>, req: Request, rest: &[String]) -> Response {
    let key = presented_key(&req);
    if caller_of(&inner, key.as_deref()) != Caller::AdminKey {
        return plain(401, "");
    }
    match (req.method().as_str(), rest) {
        ("GET", [host, status]) if host == "host" && status == "status" => Response::builder()
            .status(200)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(Body::from(
                serde_json::json!({"state": "Running", "version": HOST_VERSION}).to_string(),
            ))
            .unwrap_or_default(),
        ("POST", [functions, name]) if functions == "functions" => {
            let Some(f) = inner.function(name).cloned() else {
                return plain(404, "");
            };
            let body = axum::body::to_bytes(req.into_body(), 1024 * 1024)
                .await
                .unwrap_or_default();
            let input = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            match &f.trigger {
                Trigger::Timer { .. } => {
                    tokio::spawn(async move {
                        inner.fire_timer(&f, None).await;
                    });
                }
                Trigger::Queue {
                    binding, binary, ..
                } => {
                    let data = QueueTriggerData {
                        id: None,
                        pop_receipt: None,
                        dequeue_count: 0,
                        insertion_time: None,
                        expiration_time: None,
                        next_visible_time: None,
                        bytes: input.into_bytes(),
                    };
                    let body = payload::queue_payload(&f.name, binding, *binary, &data, Utc::now());
                    tokio::spawn(async move {
                        inner.invoke(&f, body).await;
                    });
                }
                Trigger::Http { .. } => {
                    return plain(400, "HTTP functions are called on their route");
                }
            }
            plain(202, "")
        }
        _ => plain(404, ""),
    }
}

/// A started host. Dropping it stops everything (the handler is killed).
pub struct RunningHost {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHost {
    /// `http://127.0.0.1:<port>` of the front end.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The function key (name `default`).
    pub fn function_key(&self) -> &str {
        &self.inner.function_key
    }

    /// The admin (master) key.
    pub fn admin_key(&self) -> &str {
        &self.inner.admin_key
    }

    /// The port the handler listens on.
    pub fn handler_port(&self) -> u16 {
        self.inner.worker.port()
    }

    /// The settings read from host.json (after the patch).
    pub fn settings(&self) -> &HostSettings {
        &self.inner.settings
    }

    /// The functions found in the app.
    pub fn functions(&self) -> &[FunctionDef] {
        &self.inner.functions
    }

    /// Fires a timer function now and waits for the invocation.
    ///
    /// # Errors
    /// When no timer function has that name.
    pub async fn fire_timer(&self, name: &str) -> anyhow::Result<Invocation> {
        let f = self
            .inner
            .function(name)
            .filter(|f| matches!(f.trigger, Trigger::Timer { .. }))
            .with_context(|| format!("no timer function named {name}"))?
            .clone();
        Ok(self.inner.fire_timer(&f, None).await)
    }

    /// Kills the handler (SIGKILL); it is restarted on the same port, as the host does.
    pub fn kill_handler(&self) {
        self.inner.worker.kill();
    }

    /// How many handler processes were started (1 + restarts).
    pub fn handler_starts(&self) -> u64 {
        self.inner.worker.starts()
    }

    /// The handler's state.
    pub fn handler_state(&self) -> WorkerState {
        self.inner.worker.state()
    }

    /// Waits until the handler answers `GET /`.
    ///
    /// # Errors
    /// When it stopped for good or `timeout` passed.
    pub async fn wait_handler_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.inner
            .worker
            .ready(timeout)
            .await
            .map(|_| ())
            .map_err(anyhow::Error::msg)
    }

    /// Counters of one function.
    pub fn stats(&self, function: &str) -> FunctionStats {
        self.inner
            .stats
            .lock()
            .ok()
            .and_then(|s| s.get(function).copied())
            .unwrap_or_default()
    }

    /// Every captured handler line (stdout, stderr) and invocation `Logs` entry.
    pub fn handler_logs(&self) -> Vec<HandlerLog> {
        self.inner.worker.logs()
    }

    /// All captured lines joined by newlines (for secret scans).
    pub fn handler_log_text(&self) -> String {
        self.handler_logs()
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The queue client (physical queue names carry [`HostConfig::queue_prefix`]).
    pub fn queue_client(&self) -> &QueueClient {
        &self.inner.queues
    }

    /// The physical name of a queue named in function.json.
    pub fn queue_name(&self, queue: &str) -> String {
        self.inner.physical(queue)
    }

    /// Puts a message (base64-encoded, as producers must) on a queue named in function.json.
    ///
    /// # Errors
    /// On storage errors.
    pub async fn enqueue(&self, queue: &str, text: &str) -> anyhow::Result<()> {
        let physical = self.inner.physical(queue);
        self.inner.put_output(&physical, text.as_bytes()).await
    }

    /// The visible messages (decoded text) of a queue named in function.json.
    ///
    /// # Errors
    /// On storage errors.
    pub async fn queue_messages(&self, queue: &str) -> anyhow::Result<Vec<String>> {
        let messages = self
            .inner
            .queues
            .peek_messages(&self.inner.physical(queue))
            .await?;
        Ok(messages
            .into_iter()
            .map(|m| m.text().unwrap_or(m.raw_text))
            .collect())
    }

    /// The messages of `<queue>-poison`.
    ///
    /// # Errors
    /// On storage errors.
    pub async fn poison_messages(&self, queue: &str) -> anyhow::Result<Vec<String>> {
        self.queue_messages(&format!("{queue}-poison")).await
    }

    /// Waits until no invocation is in flight and every trigger queue is empty (messages
    /// waiting out a visibility timeout count as not empty).
    ///
    /// # Errors
    /// When `timeout` passes first; the error says what is still pending.
    pub async fn wait_for_idle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let queues: Vec<String> = self
            .inner
            .functions
            .iter()
            .filter_map(|f| match &f.trigger {
                Trigger::Queue { queue, .. } => Some(self.inner.physical(queue)),
                _ => None,
            })
            .collect();
        let mut quiet_rounds = 0;
        loop {
            let busy = self.inner.busy.load(Ordering::SeqCst);
            let mut pending = Vec::new();
            for q in &queues {
                let n = self.inner.queues.message_count(q).await.unwrap_or(1);
                if n > 0 {
                    pending.push(format!("{q}: {n}"));
                }
            }
            if busy == 0 && pending.is_empty() {
                quiet_rounds += 1;
                if quiet_rounds >= 2 {
                    return Ok(());
                }
            } else {
                quiet_rounds = 0;
            }
            if Instant::now() > deadline {
                bail!(
                    "not idle after {timeout:?}: {busy} in flight, queues {}",
                    pending.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the front end, the listeners and the handler.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(self.inner.worker.state(), WorkerState::Stopped(_)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
