//! Builds what commands need from config and flags: the store, the provider
//! registry and the runtime.

use crate::config::Config;
use crate::GlobalOpts;
use gleitzeit_core::access::{FileAccess, FilePolicy};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::jsonrpc::{JsonRpcProvider, ProviderSpec};
use gleitzeit_providers::llm::limits::SharedLimits;
use gleitzeit_providers::llm::LlmProvider;
use gleitzeit_providers::python::{PythonConfig, PythonProvider};
use gleitzeit_providers::replay::Recorder;
use gleitzeit_providers::Registry;
use gleitzeit_runtime::{Runtime, RuntimeConfig};
use gleitzeit_store::{
    MemoryStore, RedisOptions, RedisStore, SqliteOptions, SqliteStore, Store, StoreError,
};
use std::sync::Arc;

/// Cloned for what outlives one command's borrow (the monitor's feeds): a
/// clone shares what the original opened so far.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub global: GlobalOpts,
    /// Custom JSON-RPC providers: `providers/*.yaml` next to the config file,
    /// then `--provider FILE`.
    pub custom_providers: Vec<(ProviderSpec, std::path::PathBuf)>,
    /// The Redis store, once opened: the cluster reuses its settings.
    redis: tokio::sync::OnceCell<Arc<RedisStore>>,
    /// `run --record DIR` / `--replay DIR`: LLM and HTTP calls go through it.
    recorder: std::sync::OnceLock<Arc<Recorder>>,
    /// Worker nodes count LLM rate limits in Redis, across all nodes.
    shared_limits: std::sync::OnceLock<Arc<dyn SharedLimits>>,
}

fn load_custom_providers(
    global: &GlobalOpts,
) -> Result<Vec<(ProviderSpec, std::path::PathBuf)>, GzError> {
    let mut files = Vec::new();
    let config_file = crate::config::config_path(global.config.as_deref());
    if let Some(dir) = config_file.parent().map(|d| d.join("providers")) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files.extend(global.provider.iter().cloned());
    let mut specs: Vec<(ProviderSpec, std::path::PathBuf)> = Vec::new();
    for file in files {
        let (spec, dir) = gleitzeit_providers::jsonrpc::load(&file)?;
        if specs.iter().any(|(s, _)| s.name == spec.name) {
            return Err(GzError::new(
                ErrorCode::ConfigInvalid,
                format!("two provider files declare `{}`", spec.name),
            )
            .at(file.display().to_string()));
        }
        specs.push((spec, dir));
    }
    Ok(specs)
}

impl Context {
    /// `creating_config`: the command writes the config file, so one named
    /// by `--config` or GLEITZEIT_CONFIG need not exist yet.
    pub fn load(global: &GlobalOpts, creating_config: bool) -> Result<Context, GzError> {
        let mut config = Config::load(global.config.as_deref(), creating_config)?;
        if let Some(backend) = &global.backend {
            config.persistence.backend = backend.clone();
        }
        if let Some(url) = &global.redis_url {
            config.persistence.redis.url = Some(url.clone());
        }
        if let Some(db) = &global.db {
            config.persistence.sqlite.db_path = Some(db.display().to_string());
        }
        Ok(Context {
            custom_providers: load_custom_providers(global)?,
            redis: tokio::sync::OnceCell::new(),
            recorder: std::sync::OnceLock::new(),
            shared_limits: std::sync::OnceLock::new(),
            config,
            global: global.clone(),
        })
    }

    pub fn backend(&self) -> &str {
        &self.config.persistence.backend
    }

    pub fn redis_url(&self) -> String {
        self.config.persistence.redis.url()
    }

    pub fn redis_prefix(&self) -> &str {
        &self.config.persistence.redis.prefix
    }

    async fn redis_store(&self) -> Result<Arc<RedisStore>, GzError> {
        let store = self.redis.get_or_try_init(|| self.connect_redis()).await?;
        Ok(store.clone())
    }

    /// Connects to Redis. With `persistence.redis.wait_seconds`
    /// (GLEITZEIT_REDIS_WAIT) a Redis that does not answer yet — a container
    /// started before its Redis — is tried again with backoff, each attempt
    /// said on stderr, until that time is up.
    async fn connect_redis(&self) -> Result<Arc<RedisStore>, GzError> {
        const FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(250);
        const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
        let wait = self.config.persistence.redis.wait_seconds;
        if !wait.is_finite() || wait < 0.0 {
            return Err(GzError::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "persistence.redis.wait_seconds must be a number of seconds ≥ 0, not {wait}"
                ),
            )
            .at("persistence.redis.wait_seconds"));
        }
        let url = self.redis_url();
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs_f64(wait);
        let mut delay = FIRST_DELAY;
        let mut attempt = 1u32;
        loop {
            let options = RedisOptions {
                prefix: self.redis_prefix().to_string(),
                ..RedisOptions::default()
            };
            match RedisStore::connect(&url, options).await {
                Ok(store) => {
                    if attempt > 1 {
                        eprintln!(
                            "Redis at {} answers (attempt {attempt}).",
                            gleitzeit_store::redact_url(&url)
                        );
                    }
                    return Ok(Arc::new(store));
                }
                // A malformed URL will not get better by waiting.
                Err(StoreError::Unreachable { url: shown, reason })
                    if !reason.starts_with("not a Redis URL")
                        && tokio::time::Instant::now() + delay < give_up =>
                {
                    let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                    eprintln!(
                        "waiting for Redis at {shown} (attempt {attempt}: {reason}); next try in {:.1} s, giving up in {:.0} s",
                        delay.as_secs_f64(),
                        left.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                }
                Err(e) => {
                    let gz = GzError::from(e);
                    return Err(if attempt > 1 {
                        gz.with_hint(format!(
                            "Redis did not answer within {wait} s (GLEITZEIT_REDIS_WAIT); check that it runs and the URL (GLEITZEIT_REDIS_URL)."
                        ))
                    } else {
                        gz
                    });
                }
            }
        }
    }

    /// The Redis store whatever the configured backend (worker nodes, admin).
    pub async fn open_redis_store(&self) -> Result<Arc<dyn Store>, GzError> {
        Ok(self.redis_store().await?)
    }

    pub async fn open_store(&self, ephemeral: bool) -> Result<Arc<dyn Store>, GzError> {
        if ephemeral {
            return Ok(Arc::new(MemoryStore::new()));
        }
        match self.backend() {
            "memory" => Ok(Arc::new(MemoryStore::new())),
            "sqlite" => {
                let mut options = SqliteOptions::new(self.config.db_path());
                options.synchronous_full = self.config.persistence.durable_fsync;
                Ok(Arc::new(SqliteStore::open(options)?))
            }
            "redis" => Ok(self.redis_store().await?),
            other => Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("unknown backend `{other}`"),
            )
            .with_hint("Backends: sqlite (default), memory, redis.")),
        }
    }

    pub fn python_config(&self) -> PythonConfig {
        let section = &self.config.providers.python;
        let mut python = PythonConfig {
            interpreter: section.interpreter.clone().into(),
            memory_limit_mb: section.memory_limit_mb,
            max_processes: section.max_processes,
            max_file_size_mb: section.max_file_size_mb,
            isolation: section.isolation,
            network: section.network,
            hidden: self.secret_files(),
            ..PythonConfig::default()
        };
        if section.workers > 0 {
            python.workers = section.workers;
        }
        python
    }

    /// What every task of this process is held to: the protected files and,
    /// on a worker node (`cap`), the node's own `files.roots`.
    pub fn file_policy(&self, cap: bool) -> FilePolicy {
        FilePolicy {
            protected: self.secret_files(),
            cap: cap.then(|| self.config.files.root_paths()),
        }
    }

    /// The grant of workflows run from this machine's command line: the
    /// working directory and below, plus `files.roots`.
    pub fn local_files(&self) -> FileAccess {
        let mut roots: Vec<std::path::PathBuf> = std::env::current_dir().into_iter().collect();
        roots.extend(self.config.files.root_paths());
        FileAccess::under(roots)
    }

    /// Files no task may read: the SQLite store (with its journal files), the
    /// config file and saved credentials (the auth database is the store).
    fn secret_files(&self) -> Vec<std::path::PathBuf> {
        let db = self.config.db_path();
        let mut files = vec![
            crate::config::config_path(self.global.config.as_deref()),
            crate::credentials::path(),
        ];
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            files.push(name.into());
        }
        files
    }

    pub fn llm_provider(&self) -> Result<LlmProvider, GzError> {
        let llm = LlmProvider::new(
            self.config.llm.clone(),
            self.config.ollama_host().as_deref(),
        )?;
        if let Some(shared) = self.shared_limits.get() {
            llm.share_limits(shared.clone());
        }
        Ok(llm)
    }

    /// LLM rate limits of the providers built from now on count every worker
    /// node's calls, in the cluster's Redis.
    pub fn share_limits_across_nodes(&self) {
        let shared = gleitzeit_cluster::RedisLimits::new(&self.redis_url(), self.redis_prefix());
        let _ = self.shared_limits.set(Arc::new(shared));
    }

    /// Records (or replays) every LLM and HTTP exchange of the registries
    /// built from now on.
    pub fn use_recorder(&self, recorder: Arc<Recorder>) -> Result<(), GzError> {
        if self.backend() == "redis" {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                "--record and --replay need the providers of this process; on the redis backend tasks run on worker nodes",
            )
            .with_hint("Use --ephemeral (or --backend sqlite) with --record/--replay."));
        }
        self.recorder.set(recorder).map_err(|_| {
            GzError::new(
                ErrorCode::InvalidArgument,
                "--record and --replay exclude each other",
            )
        })
    }

    /// `provider`, through the recorder when there is one.
    fn recorded(
        &self,
        provider: Arc<dyn gleitzeit_providers::Provider>,
    ) -> Arc<dyn gleitzeit_providers::Provider> {
        match self.recorder.get() {
            Some(recorder) => recorder.wrap(provider),
            None => provider,
        }
    }

    pub fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        registry.register(Arc::new(FunctionProvider));
        for (spec, dir) in &self.custom_providers {
            registry.register(Arc::new(JsonRpcProvider::new(spec.clone(), dir.clone())));
        }
        registry.register(Arc::new(gleitzeit_providers::mcp::McpProvider::new(
            self.config.mcp_servers.clone(),
        )));
        match gleitzeit_providers::http::HttpProvider::new(self.config.http.clone()) {
            Ok(http) => registry.register(self.recorded(Arc::new(http))),
            Err(e) => tracing::warn!("HTTP provider unavailable: {e}"),
        }
        let ollama_disabled = self
            .config
            .providers
            .ollama
            .as_ref()
            .and_then(|o| o.enabled)
            == Some(false)
            && self.config.llm.endpoints.is_empty();
        if !ollama_disabled {
            match self.llm_provider() {
                Ok(llm) => registry.register(self.recorded(Arc::new(llm))),
                Err(e) => tracing::warn!("LLM provider unavailable: {e}"),
            }
        }
        if self.config.providers.python.enabled {
            registry.register(Arc::new(PythonProvider::new(self.python_config())));
        }
        registry
    }

    /// The runtime for `store`. On the Redis backend every task call goes to
    /// worker nodes, so the local concurrency limits do not apply: the queue
    /// holds the backlog and workers take what they can run.
    pub async fn runtime(&self, store: Arc<dyn Store>) -> Result<Runtime, GzError> {
        let runtime = self.local_runtime(store.clone());
        if self.backend() != "redis" {
            return Ok(runtime);
        }
        let mut config = runtime.config().clone();
        config.lane_limits.clear();
        config.default_lane_limit = config.max_concurrent_tasks;
        let dispatcher = gleitzeit_cluster::RedisDispatcher::start(
            &self.redis_url(),
            self.redis_prefix(),
            store.clone(),
            gleitzeit_cluster::DispatchOptions {
                node_timeout: std::time::Duration::from_secs_f64(
                    self.config.server.node_timeout_seconds.max(0.1),
                ),
            },
            tokio_util::sync::CancellationToken::new(),
        )
        .await?;
        let admin = gleitzeit_cluster::admin::Admin::from_connection(
            dispatcher.connection(),
            self.redis_prefix(),
        );
        if let Ok(nodes) = admin.nodes().await {
            if !nodes.iter().any(|n| n.state == "active") {
                eprintln!("note: no worker node is active on this Redis; tasks wait in the queue until one joins (`gleitzeit worker --backend redis`).");
            }
        }
        Ok(Runtime::new(store, runtime.registry().clone(), config)
            .with_remote(Arc::new(dispatcher)))
    }

    /// The runtime with this process's providers and limits.
    pub fn local_runtime(&self, store: Arc<dyn Store>) -> Runtime {
        let registry = self.registry();
        let mut config = RuntimeConfig {
            max_concurrent_tasks: self.config.execution.max_concurrent_tasks.max(1),
            allowed_env: self.config.allowed_env.clone(),
            limits: self.config.limits,
            files: self.local_files(),
            file_policy: self.file_policy(false),
            ..RuntimeConfig::default()
        };
        let python_workers = self.python_config().workers.max(1);
        config.lane_limits.insert("python".into(), python_workers);
        config.lane_limits.insert(
            "function".into(),
            self.config.execution.max_concurrent_functions.max(1),
        );
        // An LLM task counts as running only while it holds an endpoint slot,
        // so its duration is the request's, not time spent queueing.
        let llm_slots: usize = self
            .config
            .llm
            .effective_endpoints(self.config.ollama_host().as_deref())
            .iter()
            .map(|e| e.max_concurrent.max(1))
            .sum();
        config.lane_limits.insert("llm".into(), llm_slots.max(1));
        Runtime::new(store, registry, config)
    }
}
