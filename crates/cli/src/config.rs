//! Configuration: `~/.gleitzeit/config.yaml` (or `--config` / GLEITZEIT_CONFIG),
//! then environment variables, then flags. The file format is the one the earlier
//! versions wrote (`persistence:`, `providers:`, `execution:`), so old files load.

use gleitzeit_core::{yaml, ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub persistence: Persistence,
    pub providers: Providers,
    pub execution: Execution,
    /// LLM endpoints, strategy, model aliases (see README "LLM endpoints").
    pub llm: gleitzeit_providers::llm::LlmConfig,
    /// `http/request`: allowed private hosts, timeout, size limit.
    pub http: gleitzeit_providers::http::HttpConfig,
    /// MCP servers by name: `{command: [...], env: {...}}` or `{url: ..., token_env: VAR}`.
    pub mcp_servers: std::collections::BTreeMap<String, gleitzeit_providers::mcp::McpServerConfig>,
    /// Environment variables that `${env.NAME}` may read.
    pub allowed_env: Vec<String>,
    /// `gleitzeit serve`, and where client commands find a server.
    pub server: ServerSection,
    /// What a workflow, its inputs and a task's result may be at most
    /// (nesting, aliases, tasks, id lengths, result bytes, event pages).
    pub limits: gleitzeit_core::Limits,
    /// Where tasks may read files (see README "Authentication").
    pub files: FilesSection,
    /// What API roles may submit.
    pub auth: AuthSection,
}

/// `files:` — the directories tasks may read files under. `gleitzeit run`
/// adds the working directory; workflows submitted over the API get
/// `roles.ROLE` (else `roots`), and nothing when neither names a directory;
/// worker nodes read only under their own `roots`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FilesSection {
    pub roots: Vec<String>,
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
}

impl FilesSection {
    pub fn root_paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| expand_tilde(r)).collect()
    }

    pub fn role_paths(&self) -> std::collections::BTreeMap<String, Vec<PathBuf>> {
        self.roles
            .iter()
            .map(|(role, dirs)| (role.clone(), dirs.iter().map(|d| expand_tilde(d)).collect()))
            .collect()
    }
}

/// `auth:` — `methods: {USER: ["llm/*", "function/*", "!function/read_file"]}`:
/// method patterns per role (a leading `!` excludes); roles not named keep
/// the defaults (everything, except `python/*` for USER and SERVICE).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub methods: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSection {
    /// Address `serve` listens on (GLEITZEIT_HOST).
    pub host: String,
    /// Port `serve` listens on and clients look for (GLEITZEIT_PORT).
    pub port: u16,
    /// A server client commands use (GLEITZEIT_SERVER, or seed 003's
    /// GLEITZEIT_HUB_URL); when unset they use one answering on host:port,
    /// else the local store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Largest request body the API accepts.
    pub max_body_bytes: usize,
    /// Seconds shutdown waits for tasks in flight to be recorded.
    pub grace_seconds: f64,
    /// Scale-out: seconds without a heartbeat after which a worker node is
    /// marked lost (GLEITZEIT_NODE_TIMEOUT).
    pub node_timeout_seconds: f64,
    /// Behind a reverse proxy: the header it puts the client's address in
    /// (e.g. `X-Forwarded-For`), believed only from `trusted_proxies`. Off by
    /// default: the connecting address is the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxy_header: Option<String>,
    /// Addresses of the proxies whose `trusted_proxy_header` is believed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "127.0.0.1".into(),
            port: 8765,
            url: None,
            max_body_bytes: 4 * 1024 * 1024,
            grace_seconds: 30.0,
            node_timeout_seconds: 10.0,
            trusted_proxy_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Persistence {
    pub backend: String,
    pub sqlite: SqliteSection,
    pub redis: RedisSection,
    /// FULL synchronous mode: survives power loss, slower.
    pub durable_fsync: bool,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            backend: "sqlite".into(),
            sqlite: SqliteSection::default(),
            redis: RedisSection::default(),
            durable_fsync: false,
        }
    }
}

/// Where the Redis backend lives: `url` (or REDIS_URL / --redis-url), else
/// the earlier versions' `host`, `port`, `db` and `password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub db: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Every key starts with this, so clusters can share one Redis.
    pub prefix: String,
    /// Seconds to keep trying (with backoff, saying so) when Redis does not
    /// answer at start, e.g. a container started before its Redis
    /// (GLEITZEIT_REDIS_WAIT). 0: fail at once.
    pub wait_seconds: f64,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: None,
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            password: None,
            prefix: "gleitzeit".into(),
            wait_seconds: 0.0,
        }
    }
}

impl RedisSection {
    pub fn url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SqliteSection {
    pub db_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Providers {
    pub python: PythonSection,
    /// The earlier versions' single Ollama endpoint (`providers.ollama.endpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ollama: Option<OllamaSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OllamaSection {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PythonSection {
    pub enabled: bool,
    pub interpreter: String,
    /// Warm worker processes; 0 = one per CPU (at least 2).
    pub workers: usize,
    pub memory_limit_mb: u64,
    /// Processes a worker may start beyond the user's current ones; 0 = unlimited.
    pub max_processes: u64,
    /// Largest file a task may write, in MiB; 0 = unlimited.
    pub max_file_size_mb: u64,
    /// `auto` (own namespaces where the system allows, so tasks cannot read
    /// the store, config or credentials), `namespaces` (or no workers), `none`.
    pub isolation: gleitzeit_providers::python::Isolation,
    /// `host` (the machine's network) or `none` (a network namespace with
    /// only loopback: tasks reach neither the server nor Redis nor the LAN).
    pub network: gleitzeit_providers::python::Network,
}

impl Default for PythonSection {
    fn default() -> Self {
        PythonSection {
            enabled: true,
            interpreter: "python3".into(),
            workers: 0,
            memory_limit_mb: 1024,
            max_processes: 256,
            max_file_size_mb: 1024,
            isolation: gleitzeit_providers::python::Isolation::Auto,
            network: gleitzeit_providers::python::Network::Host,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Execution {
    /// Max tasks of one workflow running at once.
    pub max_concurrent_tasks: usize,
    /// Max concurrent built-in function tasks.
    pub max_concurrent_functions: usize,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            max_concurrent_tasks: 10_000,
            max_concurrent_functions: 256,
        }
    }
}

/// `~/.gleitzeit`, or GLEITZEIT_HOME.
pub fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("GLEITZEIT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".gleitzeit")
}

/// The host and port a server listens on when clients are told to reach it at
/// `url` (GLEITZEIT_HUB_URL). The host is bound as written, so a name resolves
/// to this machine's address for it (`hub-server` in /etc/hosts or DNS).
fn hub_listen_address(url: &str) -> Result<(String, u16), GzError> {
    let invalid = |why: &str| {
        GzError::new(
            ErrorCode::ConfigInvalid,
            format!("GLEITZEIT_HUB_URL={url} {why}"),
        )
        .at("environment")
        .with_hint("Set GLEITZEIT_HUB_URL to the server's address, e.g. http://hub-server:8000.")
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("is not an http:// or https:// URL"));
    }
    // An IPv6 host is written in brackets in a URL but bound without them.
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => return Err(invalid("names no host")),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid("names no port"))?;
    Ok((host, port))
}
pub fn expand_tilde(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    PathBuf::from(path)
}

pub fn config_path(flag: Option<&Path>) -> PathBuf {
    config_source(flag).0
}

/// The config file and who named it: `--config`, GLEITZEIT_CONFIG, or
/// nobody (the default place, which may be absent).
fn config_source(flag: Option<&Path>) -> (PathBuf, Option<&'static str>) {
    if let Some(path) = flag {
        return (path.to_path_buf(), Some("--config"));
    }
    if let Some(path) = std::env::var_os("GLEITZEIT_CONFIG").filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), Some("GLEITZEIT_CONFIG"));
    }
    (home_dir().join("config.yaml"), None)
}

fn config_error(path: &Path, message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::ConfigInvalid, message).at(path.display().to_string())
}

impl Config {
    /// Loads the file if it exists (one named by `--config` or
    /// GLEITZEIT_CONFIG must exist unless `creating` it), then applies
    /// environment overrides.
    pub fn load(flag: Option<&Path>, creating: bool) -> Result<Config, GzError> {
        let (path, named_by) = config_source(flag);
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path)?,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && (named_by.is_none() || creating) =>
            {
                Config::default()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GzError::new(
                    ErrorCode::FileNotFound,
                    format!(
                        "config file {} (named by {}) does not exist",
                        path.display(),
                        named_by.unwrap_or("--config")
                    ),
                )
                .at(path.display().to_string())
                .with_hint("Create one with `gleitzeit config init`, or mount it there (in a container: check the volume's source path)."))
            }
            Err(e) => {
                // A bind mount whose source file is missing on the host
                // arrives as an empty directory.
                let hint = if path.is_dir() {
                    "It is a directory: in a container, the file mounted there probably does not exist on the host (Docker then creates a directory); mount an existing file."
                } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                    "Make it readable by the user this runs as (in the container image: uid 10001), e.g. `chmod a+r FILE` on the host."
                } else {
                    "Check the path and its permissions."
                };
                return Err(GzError::new(
                    ErrorCode::FileUnreadable,
                    format!("cannot read config file {}: {e}", path.display()),
                )
                .at(path.display().to_string())
                .with_hint(hint));
            }
        };
        config.apply_env()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, GzError> {
        let node = yaml::parse(text).map_err(|e| {
            config_error(
                path,
                format!("line {}:{}: {}", e.pos.line, e.pos.column, e.message),
            )
        })?;
        let Some(node) = node else {
            return Ok(Config::default());
        };
        serde_json::from_value(node.to_json()).map_err(|e| config_error(path, e.to_string()))
    }

    fn apply_env(&mut self) -> Result<(), GzError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(backend) = var("GLEITZEIT_BACKEND") {
            self.persistence.backend = backend;
        }
        if let Some(path) = var("GLEITZEIT_SQLITE_PATH").or_else(|| var("GLEITZEIT_DB")) {
            self.persistence.sqlite.db_path = Some(path);
        }
        if let Some(url) = var("GLEITZEIT_REDIS_URL").or_else(|| var("REDIS_URL")) {
            self.persistence.redis.url = Some(url);
        }
        if let Some(timeout) = var("GLEITZEIT_NODE_TIMEOUT") {
            self.server.node_timeout_seconds = timeout
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| {
                    GzError::new(
                        ErrorCode::ConfigInvalid,
                        format!(
                            "GLEITZEIT_NODE_TIMEOUT={timeout} is not a number of seconds above 0"
                        ),
                    )
                    .at("environment")
                })?;
        }
        if let Some(wait) = var("GLEITZEIT_REDIS_WAIT") {
            self.persistence.redis.wait_seconds = wait
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| {
                    GzError::new(
                        ErrorCode::ConfigInvalid,
                        format!("GLEITZEIT_REDIS_WAIT={wait} is not a number of seconds ≥ 0"),
                    )
                    .at("environment")
                    .with_hint("Set GLEITZEIT_REDIS_WAIT to how long to wait for Redis at start, e.g. 60 (0: fail at once).")
                })?;
        }
        if let Some(prefix) = var("GLEITZEIT_REDIS_PREFIX") {
            self.persistence.redis.prefix = prefix;
        }
        if let Some(python) = var("GLEITZEIT_PYTHON") {
            self.providers.python.interpreter = python;
        }
        // Seed 003 starts its hub with `GLEITZEIT_HUB_URL=http://hub-server:8000
        // gleitzeit hub`: the URL clients are given is also where the server
        // listens, unless GLEITZEIT_HOST/GLEITZEIT_PORT (or the flags) say else.
        if let Some(url) = var("GLEITZEIT_HUB_URL") {
            let (host, port) = hub_listen_address(&url)?;
            self.server.host = host;
            self.server.port = port;
        }
        if let Some(host) = var("GLEITZEIT_HOST") {
            self.server.host = host;
        }
        if let Some(port) = var("GLEITZEIT_PORT") {
            self.server.port = port.parse().map_err(|_| {
                GzError::new(
                    ErrorCode::ConfigInvalid,
                    format!("GLEITZEIT_PORT={port} is not a port number"),
                )
                .at("environment")
                .with_hint("Set GLEITZEIT_PORT to a number from 1 to 65535.")
            })?;
        }
        if let Some(url) = var("GLEITZEIT_SERVER").or_else(|| var("GLEITZEIT_HUB_URL")) {
            self.server.url = Some(url);
        }
        Ok(())
    }

    /// Where Ollama is when no `llm.endpoints` are configured: OLLAMA_HOST, else
    /// the earlier versions' `providers.ollama.endpoint`.
    pub fn ollama_host(&self) -> Option<String> {
        std::env::var("OLLAMA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                self.providers
                    .ollama
                    .as_ref()
                    .and_then(|o| o.endpoint.clone())
            })
    }

    pub fn db_path(&self) -> PathBuf {
        match &self.persistence.sqlite.db_path {
            Some(p) => expand_tilde(p),
            None => home_dir().join("gleitzeit.db"),
        }
    }

    pub fn to_yaml(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        write_yaml(&value, 0, &mut out);
        out
    }

    /// Sets a dotted key (`execution.max_concurrent_tasks`) to a value parsed as
    /// JSON when possible, text otherwise. Unknown keys are refused.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), GzError> {
        let mut tree = serde_json::to_value(&*self).unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        let mut slot = &mut tree;
        for part in key.split('.') {
            slot = match slot.get_mut(part) {
                Some(next) => next,
                None => {
                    return Err(GzError::new(
                        ErrorCode::ConfigInvalid,
                        format!("unknown config key `{key}`"),
                    )
                    .with_hint("`gleitzeit config show` lists every key."))
                }
            };
        }
        *slot = parsed;
        *self = serde_json::from_value(tree)
            .map_err(|e| GzError::new(ErrorCode::ConfigInvalid, format!("`{key}`: {e}")))?;
        Ok(())
    }
}

/// A small YAML writer for config files (mappings, lists and scalars only).
fn write_yaml(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for item in items {
                            out.push_str(&format!("{pad}  - {}\n", scalar(item)));
                        }
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(v))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Array(a) if a.is_empty() => "[]".into(),
        serde_json::Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_url_names_the_listen_address() {
        assert_eq!(
            hub_listen_address("http://hub-server:8000").unwrap(),
            ("hub-server".to_string(), 8000)
        );
        assert_eq!(
            hub_listen_address("http://[::1]:9000/").unwrap(),
            ("::1".to_string(), 9000)
        );
        // No port: the scheme's own.
        assert_eq!(
            hub_listen_address("https://hub.example").unwrap(),
            ("hub.example".to_string(), 443)
        );
        for bad in ["hub-server:8000", "ftp://hub:21", "not a url", "http://:80"] {
            let error = hub_listen_address(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::ConfigInvalid, "{bad}");
            assert_eq!(error.location.as_deref(), Some("environment"), "{bad}");
            assert!(error.message.contains(bad), "{bad}: {}", error.message);
        }
    }

    #[test]
    fn seed_001_config_file_loads() {
        let text = "persistence:\n  backend: sqlite\n  sqlite:\n    db_path: ~/.gleitzeit/workflows.db\n  redis:\n    host: localhost\n    port: 6379\n    db: 0\nproviders:\n  python:\n    enabled: true\n  ollama:\n    enabled: true\n    endpoint: http://localhost:11434\nexecution:\n  max_concurrent_tasks: 5\n";
        let config = Config::parse(text, Path::new("c.yaml")).unwrap();
        assert_eq!(config.execution.max_concurrent_tasks, 5);
        assert!(config.db_path().ends_with(".gleitzeit/workflows.db"));
    }

    #[test]
    fn written_yaml_reads_back() {
        let mut config = Config {
            allowed_env: vec!["HOME".into()],
            ..Config::default()
        };
        config.set("execution.max_concurrent_tasks", "7").unwrap();
        let back = Config::parse(&config.to_yaml(), Path::new("c")).unwrap();
        assert_eq!(back.execution.max_concurrent_tasks, 7);
        assert_eq!(back.allowed_env, vec!["HOME".to_string()]);
    }

    #[test]
    fn bad_values_and_keys_are_gz9003() {
        let mut config = Config::default();
        assert_eq!(
            config.set("execution.nope", "1").unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
        assert_eq!(
            config
                .set("execution.max_concurrent_tasks", "many")
                .unwrap_err()
                .code,
            ErrorCode::ConfigInvalid
        );
        let error = Config::parse(
            "execution: {max_concurrent_tasks: [1]}",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::ConfigInvalid);
        assert_eq!(error.location.as_deref(), Some("c.yaml"));
    }

    #[test]
    fn files_auth_and_python_network_sections() {
        let text = "files:\n  roots: [~/data]\n  roles: {USER: [/srv/shared]}\nauth:\n  methods: {USER: ['*']}\nproviders:\n  python: {network: none}\n";
        let config = Config::parse(text, Path::new("c.yaml")).unwrap();
        assert!(config.files.root_paths()[0].ends_with("data"));
        assert!(!config.files.root_paths()[0].starts_with("~"));
        assert_eq!(
            config.files.role_paths()["USER"],
            vec![PathBuf::from("/srv/shared")]
        );
        assert_eq!(config.auth.methods["USER"], vec!["*".to_string()]);
        assert_eq!(
            config.providers.python.network,
            gleitzeit_providers::python::Network::None
        );
        // Writing is not something any method does: a `write_roots` would
        // promise what nothing enforces, so it is refused.
        let error = Config::parse("files: {write_roots: [/tmp]}", Path::new("c.yaml")).unwrap_err();
        assert_eq!(error.code, ErrorCode::ConfigInvalid);
        assert!(error.message.contains("write_roots"), "{}", error.message);
        let error =
            Config::parse("providers: {python: {network: lan}}", Path::new("c.yaml")).unwrap_err();
        assert_eq!(error.code, ErrorCode::ConfigInvalid);
    }
}
