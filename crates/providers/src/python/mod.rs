//! `python/execute`, `python/script`, `python/function`: Python code run by a pool
//! of warm `python3` worker processes.
//!
//! A worker is `python3 -u -c <worker.py> LIMIT_BYTES`, started lazily and kept.
//! Jobs and replies travel as one JSON object per line over private duplicates of
//! the worker's stdin/stdout; the worker points fd 0 at /dev/null and fd 1 at its
//! stderr, so output written below Python's `print` cannot corrupt the protocol.
//! The worker's stderr is drained continuously into a short tail that crash
//! reports quote.
//!
//! A job takes an idle worker under a semaphore with one permit per worker slot.
//! A worker that times out, is cancelled, or whose call future is dropped is
//! killed together with its process group and replaced in the background; one
//! that dies on its own fails its job with `PythonWorkerCrashed` and is replaced.

use crate::{CallContext, MethodInfo, Provider};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_functions::{FileGuard, OpenError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// Namespaces and uid maps are set up with raw system calls in the forked child.
#[allow(unsafe_code)]
pub mod isolation;
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;

pub use isolation::{Isolation, Network};

/// The worker program, passed to the interpreter with `-c`.
const WORKER_SOURCE: &str = include_str!("worker.py");
/// How long a fresh worker may take to report that it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a killed worker to be reaped before leaving it to tokio.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the rest of a dead worker's stderr.
const STDERR_SETTLE: Duration = Duration::from_millis(500);
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_MAX: usize = 2000;
/// Reply buffers that grew past this are released after the job.
const LINE_BUFFER_KEEP: usize = 4 * 1024 * 1024;
const NOT_FOUND_HINT: &str = "Install Python 3, or set `python.interpreter` in config (or GLEITZEIT_PYTHON) to the interpreter's path.";

/// Settings of the python provider (`python:` in config).
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// The interpreter to start workers with; looked up on `PATH` unless it is a path.
    pub interpreter: PathBuf,
    /// How many workers run jobs at the same time.
    pub workers: usize,
    /// Address-space limit of every worker in MiB; 0 means unlimited.
    pub memory_limit_mb: u64,
    /// Working directory of the workers; relative script and module paths resolve here.
    pub working_dir: Option<PathBuf>,
    /// Processes a worker and its children may start beyond those the user
    /// already runs (`RLIMIT_NPROC`, counted per user); 0 means unlimited. Not
    /// enforced for root, whose fork bombs only the task timeout contains.
    pub max_processes: u64,
    /// Largest file a task may write, in MiB (`RLIMIT_FSIZE`); 0 means unlimited.
    pub max_file_size_mb: u64,
    /// Whether workers run in their own namespaces with `hidden` out of reach.
    pub isolation: Isolation,
    /// Files tasks must not read: the store's database, the config file,
    /// saved credentials.
    pub hidden: Vec<PathBuf>,
    /// `none`: workers get a network namespace with only loopback.
    pub network: Network,
}

/// The only environment variables a worker inherits: everything else (API
/// keys, tokens, `GLEITZEIT_*` settings such as the store path) is scrubbed.
pub const WORKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    // pyenv's `python3` shim needs these to find the interpreter.
    "PYENV_ROOT",
    "PYENV_VERSION",
    "SYSTEMROOT",
];

impl Default for PythonConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        PythonConfig {
            interpreter: PathBuf::from("python3"),
            workers: cores.max(2),
            memory_limit_mb: 1024,
            working_dir: None,
            max_processes: 256,
            max_file_size_mb: 1024,
            isolation: Isolation::Auto,
            hidden: Vec::new(),
            network: Network::Host,
        }
    }
}

/// The `python` protocol: runs code in a pool of warm worker processes.
pub struct PythonProvider {
    pool: Arc<Pool>,
}

impl PythonProvider {
    /// Creates the provider; workers start on first use, not here.
    pub fn new(config: PythonConfig) -> Self {
        let workers = config.workers.max(1);
        let veil = match config.isolation {
            Isolation::None => Ok(None),
            _ if config.hidden.is_empty() => Ok(None),
            mode => match isolation::Veil::create() {
                Ok(veil) => Ok(Some(veil)),
                // `namespaces` keeps the failure: no worker starts without them.
                Err(e) if mode == Isolation::Namespaces => {
                    Err(format!("cannot create the veil file: {e}"))
                }
                Err(e) => {
                    tracing::warn!("cannot prepare the python workers' isolation: {e}");
                    Ok(None)
                }
            },
        };
        PythonProvider {
            pool: Arc::new(Pool {
                slots: Arc::new(Semaphore::new(workers)),
                idle: Mutex::new(Vec::with_capacity(workers)),
                live: Arc::new(Mutex::new(HashSet::new())),
                closed: AtomicBool::new(false),
                warmed: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                version: OnceLock::new(),
                isolating: AtomicBool::new(
                    !matches!(veil, Ok(None)) || config.network == Network::None,
                ),
                veil,
                #[cfg(test)]
                plan_override: Mutex::new(None),
                config: PythonConfig { workers, ..config },
            }),
        }
    }

    /// Starts a worker if none ran yet and returns the interpreter's version
    /// (e.g. `3.11.7`); fails with `PythonNotFound` when it cannot start.
    pub async fn check(&self) -> Result<String, GzError> {
        if let Some(version) = self.pool.version.get() {
            return Ok(version.clone());
        }
        let lease = self.pool.acquire(&CancellationToken::new()).await?;
        let version = lease
            .worker
            .as_ref()
            .map(|w| w.version.clone())
            .unwrap_or_default();
        lease.release();
        Ok(version)
    }

    async fn run(&self, job: Job, ctx: &CallContext) -> Result<Value, GzError> {
        if ctx.cancel.is_cancelled() {
            return Err(cancelled());
        }
        let timeout = match (ctx.timeout, job.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let id = self.pool.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = job.request;
        request.insert("id".into(), id.into());
        let mut line = serde_json::to_vec(&request).map_err(|e| {
            GzError::new(
                ErrorCode::InvalidParameters,
                format!("python job cannot be encoded: {e}"),
            )
        })?;
        line.push(b'\n');

        let mut lease = self.pool.acquire(&ctx.cancel).await?;
        let started = Instant::now();
        let outcome = {
            let worker = lease.worker();
            let deadline = async {
                match timeout {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => Outcome::Cancelled,
                reply = worker.exchange(&line) => Outcome::Reply(reply),
                _ = deadline => Outcome::TimedOut,
            }
        };
        let elapsed = started.elapsed();
        match outcome {
            Outcome::Reply(Ok(reply)) if reply.id == Some(id) => {
                lease.release();
                reply_to_result(
                    reply,
                    elapsed,
                    &job.filename,
                    self.pool.limit_mb(job.memory_limit_mb),
                )
            }
            Outcome::Reply(Ok(reply)) => {
                let problem = format!("answered job {:?} while job {id} was expected", reply.id);
                Err(self.pool.crashed(lease, &problem).await)
            }
            Outcome::Reply(Err(broken)) => Err(self.pool.crashed(lease, &broken.to_string()).await),
            Outcome::TimedOut => {
                // Dropping the lease kills the worker's process group and replaces it.
                drop(lease);
                let limit = timeout.unwrap_or_default();
                Err(GzError::new(
                    ErrorCode::TaskTimeout,
                    format!(
                        "python task timed out after {}; its worker was killed",
                        seconds(limit)
                    ),
                )
                .with_details(json!({ "timeout_s": limit.as_secs_f64() })))
            }
            Outcome::Cancelled => {
                drop(lease);
                Err(cancelled())
            }
        }
    }
}

#[async_trait]
impl Provider for PythonProvider {
    async fn prepare(&self) -> Result<(), GzError> {
        self.check().await.map(|_| ())
    }

    async fn health(&self) -> crate::ProviderHealth {
        match self.check().await {
            Ok(version) => crate::ProviderHealth::healthy(serde_json::json!({"version": version})),
            Err(error) => crate::ProviderHealth {
                status: crate::HealthStatus::Unhealthy,
                reason: Some(format!("{}: {}", error.code, error.message)),
                detail: serde_json::Value::Null,
            },
        }
    }

    fn protocol(&self) -> &'static str {
        "python"
    }

    fn methods(&self) -> Vec<MethodInfo> {
        let method = |method: &str, description: &str| MethodInfo {
            method: method.into(),
            description: description.into(),
        };
        vec![
            method(
                "python/execute",
                "Run Python `code` with `inputs`; the result is the `result` variable, else the printed output",
            ),
            method("python/script", "Run a Python script `file` with `args` and `inputs`"),
            method("python/function", "Call `function` of a `module` (import name or .py path) with `args` and `kwargs`"),
        ]
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        let files = match self.pool.config.working_dir.as_deref() {
            Some(dir) => ctx.files.clone().relative_to(dir),
            None => ctx.files.clone(),
        };
        let job = Job::parse(method, params, &files)?;
        self.run(job, ctx).await
    }

    async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Jobs: parameters turned into a request for the worker.

struct Job {
    /// The request object without its `id`.
    request: Map<String, Value>,
    timeout: Option<Duration>,
    memory_limit_mb: Option<u64>,
    /// The file name tracebacks show for the job's code.
    filename: String,
}

impl Job {
    /// `files` resolves and checks the script and module paths.
    fn parse(method: &str, params: Value, files: &FileGuard) -> Result<Job, GzError> {
        let mut params = match params {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(invalid(format!("{method} parameters must be a mapping"))),
        };
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => None,
            Some(value) => match number(value) {
                Some(s) if (0.0..1e12).contains(&s) => Some(Duration::from_secs_f64(s)),
                _ => {
                    return Err(invalid(format!(
                        "`timeout` must be a number of seconds, not {value}"
                    )))
                }
            },
        };
        let memory_limit_mb = match params.get("memory_limit_mb") {
            None | Some(Value::Null) => None,
            Some(value) => match number(value) {
                Some(mb) if mb.is_finite() && mb >= 0.0 => Some(mb as u64).filter(|mb| *mb > 0),
                _ => {
                    return Err(invalid(format!(
                        "`memory_limit_mb` must be a number of MiB, not {value}"
                    )))
                }
            },
        };
        let mut request = Map::new();
        if let Some(mb) = memory_limit_mb {
            request.insert("memory_limit".into(), mb.saturating_mul(1024 * 1024).into());
        }
        let filename =
            match method {
                "python/execute" => {
                    let code = match params.remove("code") {
                        Some(Value::String(code)) => code,
                        _ => {
                            return Err(invalid(
                                "python/execute needs `code`: a string of Python source",
                            )
                            .with_hint("e.g. `params: {code: \"result = 1 + 1\"}`"))
                        }
                    };
                    request.insert("kind".into(), "execute".into());
                    request.insert("code".into(), code.into());
                    request.insert("inputs".into(), inputs(&mut params)?);
                    "<task>".to_string()
                }
                "python/script" => {
                    // An empty path is the guard's to refuse (GZ6011), like any
                    // other path that names no file.
                    let given = match params.remove("file").or_else(|| params.remove("path")) {
                        Some(Value::String(path)) => path,
                        _ => {
                            return Err(invalid(
                                "python/script needs `file`: the path of a Python script",
                            ))
                        }
                    };
                    let (path, code) = read_script(files, &given)?;
                    let argv = match params.remove("args") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(items)) => items
                            .into_iter()
                            .map(|item| match item {
                                Value::String(s) => Ok(s),
                                Value::Number(_) | Value::Bool(_) => Ok(item.to_string()),
                                other => Err(invalid(format!(
                                    "`args` must be a list of strings, found {other}"
                                ))),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        Some(other) => {
                            return Err(invalid(format!(
                                "`args` must be a list of strings, not {other}"
                            )))
                        }
                    };
                    let filename = path.display().to_string();
                    request.insert("kind".into(), "script".into());
                    request.insert("code".into(), code.into());
                    request.insert("filename".into(), filename.clone().into());
                    request.insert("argv".into(), argv.into());
                    request.insert("inputs".into(), inputs(&mut params)?);
                    filename
                }
                "python/function" => {
                    let module =
                        match params.remove("module") {
                            Some(Value::String(module)) => module,
                            _ => return Err(invalid(
                                "python/function needs `module`: an import name or a .py file path",
                            )),
                        };
                    let function = match params.remove("function") {
                        Some(Value::String(function)) if !function.is_empty() => function,
                        _ => return Err(invalid(
                            "python/function needs `function`: the name of the function to call",
                        )),
                    };
                    // Only a plain dotted import name is handed to Python as is;
                    // anything else is a path and goes through the guard.
                    let import_name = !module.is_empty()
                        && !module.ends_with(".py")
                        && module
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
                    let module = if !import_name {
                        let shown = gleitzeit_core::access::shown(&module);
                        let path = files.check_file("module", &module).map_err(|e| match e {
                            OpenError::Refused(e) => e.at(shown.clone()),
                            OpenError::Io(_) => GzError::new(
                                ErrorCode::FileNotFound,
                                format!("python module file `{shown}` does not exist"),
                            )
                            .at(shown.clone()),
                        })?;
                        path.display().to_string()
                    } else {
                        module
                    };
                    let args = match params.remove("args") {
                        None | Some(Value::Null) => Value::Array(Vec::new()),
                        Some(args @ Value::Array(_)) => args,
                        Some(other) => {
                            return Err(invalid(format!("`args` must be a list, not {other}")))
                        }
                    };
                    let kwargs = match params.remove("kwargs") {
                        None | Some(Value::Null) => Value::Object(Map::new()),
                        Some(kwargs @ Value::Object(_)) => kwargs,
                        Some(other) => {
                            return Err(invalid(format!("`kwargs` must be a mapping, not {other}")))
                        }
                    };
                    request.insert("kind".into(), "function".into());
                    request.insert("module".into(), module.clone().into());
                    request.insert("function".into(), function.into());
                    request.insert("args".into(), args);
                    request.insert("kwargs".into(), kwargs);
                    module
                }
                other => {
                    return Err(GzError::new(
                        ErrorCode::ProviderUnavailable,
                        format!("the python provider has no method `{other}`"),
                    )
                    .with_hint("Use python/execute, python/script or python/function."))
                }
            };
        Ok(Job {
            request,
            timeout,
            memory_limit_mb,
            filename,
        })
    }
}

fn invalid(message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::InvalidParameters, message)
}

/// A number, or a string holding one (references resolve to strings).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn inputs(params: &mut Map<String, Value>) -> Result<Value, GzError> {
    match params.remove("inputs") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(inputs @ Value::Object(_)) => Ok(inputs),
        Some(other) => Err(invalid(format!("`inputs` must be a mapping, not {other}"))),
    }
}

/// The checked path of a script and its text.
fn read_script(files: &FileGuard, given: &str) -> Result<(PathBuf, String), GzError> {
    let shown = gleitzeit_core::access::shown(given);
    let mut opened = files.open("file", given).map_err(|e| match e {
        OpenError::Refused(e) => e.at(shown.clone()),
        OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => GzError::new(
            ErrorCode::FileNotFound,
            format!("python script `{shown}` does not exist"),
        )
        .at(shown.clone()),
        OpenError::Io(e) => GzError::new(
            ErrorCode::FileUnreadable,
            format!("cannot read python script `{shown}`: {e}"),
        )
        .at(shown.clone()),
    })?;
    let mut bytes = Vec::new();
    if !opened.metadata.is_file() {
        return Err(GzError::new(
            ErrorCode::FileUnreadable,
            format!("cannot read python script `{shown}`: it is not a regular file"),
        )
        .at(shown));
    }
    std::io::Read::read_to_end(&mut opened.file, &mut bytes).map_err(|e| {
        GzError::new(
            ErrorCode::FileUnreadable,
            format!("cannot read python script `{shown}`: {e}"),
        )
        .at(shown.clone())
    })?;
    let code = String::from_utf8(bytes).map_err(|_| {
        GzError::new(
            ErrorCode::FileUnreadable,
            format!("python script `{shown}` is not UTF-8 text"),
        )
        .at(shown.clone())
    })?;
    Ok((opened.path, code))
}

fn cancelled() -> GzError {
    GzError::new(
        ErrorCode::TaskCancelled,
        "python task was cancelled; its worker was killed",
    )
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------
// Replies: what the worker sends back, turned into results and errors.

#[derive(Debug, Deserialize)]
struct Reply {
    id: Option<u64>,
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    error: Option<PyError>,
}

#[derive(Debug, Default, Deserialize)]
struct PyError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    traceback: String,
    lineno: Option<u64>,
}

#[allow(clippy::large_enum_variant)] // lives on the stack for one job
enum Outcome {
    Reply(Result<Reply, Broken>),
    TimedOut,
    Cancelled,
}

/// Why a worker can no longer be trusted.
#[derive(Debug)]
enum Broken {
    Write(std::io::Error),
    Read(std::io::Error),
    Eof,
    Garbled(String),
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Write(e) => write!(f, "could not send the job: {e}"),
            Broken::Read(e) => write!(f, "could not read the reply: {e}"),
            Broken::Eof => f.write_str("died while running the task"),
            Broken::Garbled(e) => write!(f, "sent an unreadable reply: {e}"),
        }
    }
}

fn reply_to_result(
    reply: Reply,
    elapsed: Duration,
    filename: &str,
    limit_mb: Option<u64>,
) -> Result<Value, GzError> {
    let duration_ms = elapsed.as_millis() as u64;
    if reply.ok {
        return Ok(json!({
            "result": reply.result,
            "stdout": reply.stdout,
            "stderr": reply.stderr,
            "duration_ms": duration_ms,
        }));
    }
    let error = reply.error.unwrap_or_default();
    let details = json!({
        "type": error.kind,
        "message": error.message,
        "traceback": error.traceback,
        "stdout": reply.stdout,
        "stderr": reply.stderr,
        "duration_ms": duration_ms,
    });
    let summary = match error.message.lines().next() {
        Some(first) if !first.trim().is_empty() => format!("{}: {}", error.kind, first.trim_end()),
        _ => error.kind.clone(),
    };
    let traceback = error.traceback.trim_end();
    let gz = match error.kind.as_str() {
        "MemoryError" => {
            let limit = match limit_mb {
                Some(mb) => format!("its memory limit of {mb} MB"),
                None => "the available memory".to_string(),
            };
            let mut message = format!("python task exceeded {limit}");
            if !traceback.is_empty() {
                message = format!("{message}\n{traceback}");
            }
            GzError::new(ErrorCode::PythonMemoryLimit, message)
        }
        "JobError" => GzError::new(ErrorCode::InvalidParameters, error.message.clone()),
        // RLIMIT_FSIZE: the write failed with EFBIG.
        "OSError" if error.message.contains("[Errno 27]") => GzError::new(
            ErrorCode::PythonException,
            format!("{summary}\n{traceback}"),
        )
        .with_hint("The task wrote a file larger than `python.max_file_size_mb` allows."),
        // RLIMIT_NPROC: fork/spawn failed with EAGAIN.
        "BlockingIOError" | "OSError" if error.message.contains("[Errno 11]") => GzError::new(
            ErrorCode::PythonException,
            format!("{summary}\n{traceback}"),
        )
        .with_hint("The task started more processes than `python.max_processes` allows."),
        "ProtocolError" | "WorkerError" => GzError::new(
            ErrorCode::InternalError,
            format!("python worker failed: {}", error.message),
        ),
        _ if traceback.is_empty() => GzError::new(ErrorCode::PythonException, summary),
        _ => GzError::new(
            ErrorCode::PythonException,
            format!("{summary}\n{traceback}"),
        ),
    };
    let gz = match error.lineno {
        Some(line) => gz.at(format!("{filename}:{line}")),
        None => gz,
    };
    Err(gz.with_details(details))
}

// ---------------------------------------------------------------------------
// The pool.

struct Pool {
    config: PythonConfig,
    /// One permit per worker slot; holding one entitles to one worker.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Worker>>,
    /// Pids (= process group ids) of workers not yet reaped, for shutdown.
    live: Arc<Mutex<HashSet<u32>>>,
    closed: AtomicBool,
    warmed: AtomicBool,
    next_id: AtomicU64,
    version: OnceLock<String>,
    /// Whether workers start in their own namespaces: off when isolation is
    /// off, nothing is to be hidden, or it turned out unavailable under `auto`.
    isolating: AtomicBool,
    /// The file mounted over hidden ones (it lives as long as the pool), or
    /// why it could not be made under `isolation: namespaces`.
    veil: Result<Option<isolation::Veil>, String>,
    /// Tests put a plan that cannot work here.
    #[cfg(test)]
    plan_override: Mutex<Option<Arc<isolation::Plan>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shut_down() -> GzError {
    GzError::new(
        ErrorCode::ProviderUnavailable,
        "the python provider has been shut down",
    )
}

impl Pool {
    /// The effective memory limit of a job in MiB, `None` when unlimited.
    fn limit_mb(&self, job_mb: Option<u64>) -> Option<u64> {
        match (self.config.memory_limit_mb, job_mb) {
            (0, job) => job,
            (pool, Some(job)) => Some(pool.min(job)),
            (pool, None) => Some(pool),
        }
    }

    /// Takes a worker slot and a live worker for it, starting one if none is idle.
    async fn acquire(self: &Arc<Self>, cancel: &CancellationToken) -> Result<Lease, GzError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(shut_down());
        }
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(cancelled()),
            permit = self.slots.clone().acquire_owned() => permit.map_err(|_| shut_down())?,
        };
        loop {
            let candidate = locked(&self.idle).pop();
            let Some(mut worker) = candidate else { break };
            if worker.is_alive() {
                return Ok(Lease {
                    pool: self.clone(),
                    worker: Some(worker),
                    permit: Some(permit),
                });
            }
            tracing::debug!(
                pid = worker.pid,
                "python worker died while idle; discarding it"
            );
        }
        let worker = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(cancelled()),
            worker = self.spawn_worker() => worker?,
        };
        self.warm_up();
        Ok(Lease {
            pool: self.clone(),
            worker: Some(worker),
            permit: Some(permit),
        })
    }

    /// What a new worker's namespace hides, decided at each start: a journal
    /// file that appeared since the last one is hidden too.
    fn plan(&self) -> Result<Option<Arc<isolation::Plan>>, GzError> {
        if !self.isolating.load(Ordering::Acquire) {
            return Ok(None);
        }
        #[cfg(test)]
        if let Some(plan) = locked(&self.plan_override).clone() {
            return Ok(Some(plan));
        }
        match &self.veil {
            Ok(veil) => Ok(isolation::Plan::new(
                &self.config.hidden,
                veil.as_ref().map(|v| v.path()),
                self.config.network,
            )
            .map(Arc::new)),
            Err(reason) => Err(isolation::unavailable(reason)),
        }
    }

    async fn spawn_worker(&self) -> Result<Worker, GzError> {
        let plan = self.plan()?;
        let worker = match Worker::spawn(&self.config, self.live.clone(), plan.clone()).await {
            Err(isolated)
                if plan.is_some()
                    && self.config.isolation == Isolation::Auto
                    // Asked-for network isolation is never dropped silently.
                    && self.config.network == Network::Host
                    && isolated.details["isolation"] == true =>
            {
                // Namespaces are not allowed here: say so once, then run without them.
                let worker = Worker::spawn(&self.config, self.live.clone(), None).await?;
                tracing::warn!(
                    "python workers run without namespaces ({}): tasks can read every file this user can, the store's database included",
                    isolated.message
                );
                self.isolating.store(false, Ordering::Release);
                worker
            }
            other => other?,
        };
        let _ = self.version.set(worker.version.clone());
        Ok(worker)
    }

    /// After the first worker started, starts the other slots' workers in the background.
    fn warm_up(self: &Arc<Self>) {
        if self.warmed.swap(true, Ordering::AcqRel) {
            return;
        }
        for _ in 1..self.config.workers {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let pool = self.clone();
            tokio::spawn(async move { pool.replenish(permit).await });
        }
    }

    /// Starts a worker for the slot `permit` holds and parks it as idle.
    async fn replenish(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        if !self.closed.load(Ordering::Acquire) && locked(&self.idle).len() < self.config.workers {
            match self.spawn_worker().await {
                Ok(worker) => self.put_idle(worker),
                Err(error) => tracing::debug!(%error, "could not start a python worker"),
            }
        }
        drop(permit);
    }

    fn put_idle(&self, worker: Worker) {
        let mut idle = locked(&self.idle);
        if self.closed.load(Ordering::Acquire) {
            drop(idle);
            drop(worker);
        } else {
            idle.push(worker);
        }
    }

    /// Kills a worker that must not run another job; reaps and replaces it in the background.
    fn retire(self: &Arc<Self>, mut worker: Worker, permit: Option<OwnedSemaphorePermit>) {
        worker.kill();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: tokio's orphan queue reaps the killed child
        };
        let pool = self.clone();
        runtime.spawn(async move {
            worker.reap().await;
            drop(worker);
            if let Some(permit) = permit {
                pool.replenish(permit).await;
            }
        });
    }

    /// Handles a worker that broke during a job: reaps it, collects its exit status
    /// and last stderr lines, replaces it, and describes what happened.
    async fn crashed(self: &Arc<Self>, mut lease: Lease, problem: &str) -> GzError {
        let mut worker = lease.worker.take().expect("lease holds a worker");
        let permit = lease.permit.take();
        drop(lease);
        let pid = worker.pid;
        let status = worker.reap().await;
        let tail = worker.stderr_tail().await;
        drop(worker);
        if let Some(permit) = permit {
            tokio::spawn(self.clone().replenish(permit));
        }
        if self.closed.load(Ordering::Acquire) {
            return GzError::new(
                ErrorCode::TaskCancelled,
                "the python provider shut down while the task ran",
            );
        }
        let status_text =
            status.map_or_else(|| "exit status unknown".to_string(), |s| s.to_string());
        let mut message =
            format!("python worker (pid {pid}) {problem} ({status_text}); it was replaced");
        if !tail.is_empty() {
            message.push_str("\nlast stderr lines:\n");
            message.push_str(&tail.join("\n"));
        }
        #[cfg(unix)]
        let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        #[cfg(not(unix))]
        let signal: Option<i32> = None;
        GzError::new(ErrorCode::PythonWorkerCrashed, message).with_details(json!({
            "pid": pid,
            "exit_code": status.and_then(|s| s.code()),
            "signal": signal,
            "stderr_tail": tail,
        }))
    }

    async fn shutdown(&self) {
        let idle = {
            let mut idle = locked(&self.idle);
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *idle)
        };
        self.slots.close();
        // Busy workers: their jobs see the pipe close and report the shutdown.
        for pid in locked(&self.live).iter() {
            kill_group(*pid);
        }
        for mut worker in idle {
            worker.reap().await;
        }
    }
}

/// A worker slot in use; dropping it with the worker still inside kills the
/// worker, so a call future dropped mid-job never returns a busy worker.
struct Lease {
    pool: Arc<Pool>,
    worker: Option<Worker>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("lease holds a worker")
    }

    /// Returns the worker to the idle list, then frees the slot.
    fn release(mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.shrink();
            self.pool.put_idle(worker);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.retire(worker, self.permit.take());
        }
    }
}

// ---------------------------------------------------------------------------
// One worker process.

struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    version: String,
    stderr: Arc<Mutex<StderrTail>>,
    stderr_task: Option<JoinHandle<()>>,
    live: Arc<Mutex<HashSet<u32>>>,
    reaped: bool,
    status: Option<ExitStatus>,
}

/// The scrubbed environment of a worker: [`WORKER_ENV`] and the locale's `LC_*`.
fn worker_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| {
            key.to_str().is_some_and(|k| {
                WORKER_ENV.contains(&k) || (k.starts_with("LC_") && !k.contains("KEY"))
            })
        })
        .collect()
}

#[allow(unsafe_code)]
fn kill_group(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: plain syscall; the group id is a worker's pid that has not been
            // reaped yet, so it cannot name an unrelated, reused process group.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

impl Worker {
    async fn spawn(
        config: &PythonConfig,
        live: Arc<Mutex<HashSet<u32>>>,
        isolation: Option<Arc<isolation::Plan>>,
    ) -> Result<Worker, GzError> {
        let limit_bytes = config.memory_limit_mb.saturating_mul(1024 * 1024);
        let mut command = Command::new(&config.interpreter);
        command
            .arg("-u")
            .arg("-c")
            .arg(WORKER_SOURCE)
            .arg(limit_bytes.to_string())
            .arg(config.max_processes.to_string())
            .arg(
                config
                    .max_file_size_mb
                    .saturating_mul(1024 * 1024)
                    .to_string(),
            )
            .env_clear()
            .envs(worker_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        if let Some(dir) = &config.working_dir {
            command.current_dir(dir);
        }
        if let Some(plan) = isolation.clone() {
            #[cfg(target_os = "linux")]
            #[allow(unsafe_code)]
            // SAFETY: `enter` makes only async-signal-safe system calls on
            // data prepared before the fork.
            unsafe {
                command.pre_exec(move || plan.enter());
            }
            #[cfg(not(target_os = "linux"))]
            return Err(isolation::unavailable("namespaces are a Linux feature"));
        }
        let shown = config.interpreter.display().to_string();
        let mut child = command.spawn().map_err(|e| {
            if isolation.is_some() && e.kind() != std::io::ErrorKind::NotFound {
                return isolation::unavailable(&e.to_string());
            }
            if let Some(dir) = config.working_dir.as_ref().filter(|dir| !dir.is_dir()) {
                return GzError::new(
                    ErrorCode::ConfigInvalid,
                    format!("python.working_dir `{}` is not a directory", dir.display()),
                );
            }
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("python interpreter `{shown}` was not found")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("python interpreter `{shown}` is not executable")
                }
                _ => format!("cannot start python interpreter `{shown}`: {e}"),
            };
            GzError::new(ErrorCode::PythonNotFound, message).with_hint(NOT_FOUND_HINT)
        })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(GzError::new(
                ErrorCode::InternalError,
                "python worker pipes are missing",
            ));
        };
        locked(&live).insert(pid);
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let stderr_task = tokio::spawn(drain_stderr(stderr, tail.clone(), pid));
        let mut worker = Worker {
            child,
            pid,
            stdin,
            stdout: BufReader::new(stdout),
            line: Vec::new(),
            version: String::new(),
            stderr: tail,
            stderr_task: Some(stderr_task),
            live,
            reaped: false,
            status: None,
        };
        let ready = tokio::time::timeout(STARTUP_TIMEOUT, worker.read_line()).await;
        let problem = match ready {
            Ok(Ok(true)) => match serde_json::from_slice::<Value>(&worker.line) {
                Ok(hello) if hello["ready"] == true => {
                    worker.version = hello["version"].as_str().unwrap_or_default().to_string();
                    tracing::debug!(pid, version = %worker.version, "python worker started");
                    return Ok(worker);
                }
                _ => format!(
                    "sent `{}` instead of its greeting",
                    String::from_utf8_lossy(&worker.line).trim()
                ),
            },
            Ok(Ok(false)) => "exited during startup".to_string(),
            Ok(Err(e)) => format!("could not be read from: {e}"),
            Err(_) => format!("did not start within {}", seconds(STARTUP_TIMEOUT)),
        };
        let status = worker.reap().await;
        let tail = worker.stderr_tail().await;
        let mut message = format!("`{shown}` could not start a python worker: it {problem}");
        if let Some(status) = status {
            message.push_str(&format!(" ({status})"));
        }
        if !tail.is_empty() {
            message.push_str("\nlast stderr lines:\n");
            message.push_str(&tail.join("\n"));
        }
        Err(GzError::new(ErrorCode::PythonNotFound, message).with_hint(
            "Check that `python.interpreter` (or GLEITZEIT_PYTHON) names a Python 3 interpreter and that \
             `python.memory_limit_mb` leaves it enough memory to start.",
        ))
    }

    /// Reads one line into `self.line`; false at end of file.
    async fn read_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        let n = self.stdout.read_until(b'\n', &mut self.line).await?;
        Ok(n > 0 && self.line.ends_with(b"\n"))
    }

    /// Sends one job and reads its reply.
    async fn exchange(&mut self, request: &[u8]) -> Result<Reply, Broken> {
        self.stdin.write_all(request).await.map_err(Broken::Write)?;
        self.stdin.flush().await.map_err(Broken::Write)?;
        if !self.read_line().await.map_err(Broken::Read)? {
            return Err(Broken::Eof);
        }
        serde_json::from_slice(&self.line).map_err(|e| Broken::Garbled(e.to_string()))
    }

    fn shrink(&mut self) {
        if self.line.capacity() > LINE_BUFFER_KEEP {
            self.line = Vec::new();
        }
    }

    fn is_alive(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                locked(&self.live).remove(&self.pid);
                self.reaped = true;
                self.status = Some(status);
                false
            }
            Err(_) => false,
        }
    }

    /// Kills the worker's whole process group (the worker and what it started).
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        locked(&self.live).remove(&self.pid);
        kill_group(self.pid);
        let _ = self.child.start_kill();
    }

    /// Kills the worker and waits (bounded) for its exit status.
    async fn reap(&mut self) -> Option<ExitStatus> {
        if !self.reaped {
            self.kill();
            if let Ok(Ok(status)) = tokio::time::timeout(REAP_TIMEOUT, self.child.wait()).await {
                self.reaped = true;
                self.status = Some(status);
            }
        }
        self.status
    }

    /// The last lines the worker wrote to stderr, after giving it a moment to finish.
    async fn stderr_tail(&mut self) -> Vec<String> {
        if let Some(task) = self.stderr_task.as_mut() {
            let _ = tokio::time::timeout(STDERR_SETTLE, task).await;
        }
        locked(&self.stderr).snapshot()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        if let Some(task) = self.stderr_task.take() {
            task.abort();
        }
    }
}

/// The last lines of a worker's stderr.
#[derive(Default)]
struct StderrTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl StderrTail {
    fn push(&mut self, bytes: &[u8], pid: u32) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, complete) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = STDERR_LINE_MAX.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&text[..text.len().min(room)]);
            if complete {
                self.commit(pid);
            }
        }
    }

    fn commit(&mut self, pid: u32) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        tracing::debug!(pid, "python worker stderr: {line}");
        if self.lines.len() == STDERR_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn snapshot(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        lines
    }
}

async fn drain_stderr(mut stderr: ChildStderr, tail: Arc<Mutex<StderrTail>>, pid: u32) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => locked(&tail).push(&buffer[..n], pid),
        }
    }
}
