//! LLM settings: the endpoints (Ollama or OpenAI-compatible servers), how to
//! choose among them, model aliases and fallbacks. Read from the `llm:` section
//! of the config file; `OLLAMA_HOST` gives the default endpoint when none is set.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, NDJSON streams.
    Ollama,
    /// `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`, SSE streams
    /// (llama.cpp's llama-server, vLLM, LM Studio, OpenAI).
    #[serde(
        alias = "openai-compatible",
        alias = "llamacpp",
        alias = "llama.cpp",
        alias = "vllm"
    )]
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    #[default]
    #[serde(alias = "least_loaded")]
    LeastLoaded,
    #[serde(alias = "round_robin")]
    RoundRobin,
    #[serde(alias = "fastest_response")]
    FastestResponse,
    #[serde(alias = "model_affinity")]
    ModelAffinity,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "LEAST_LOADED",
            Strategy::RoundRobin => "ROUND_ROBIN",
            Strategy::FastestResponse => "FASTEST_RESPONSE",
            Strategy::ModelAffinity => "MODEL_AFFINITY",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    /// `ollama` or `openai`; probed from the server when not given.
    pub kind: Option<Dialect>,
    /// Higher is preferred when the strategy's measure ties.
    pub priority: i32,
    pub max_concurrent: usize,
    /// Models this endpoint serves; empty means "ask the server".
    pub models: Vec<String>,
    pub tags: Vec<String>,
    /// Name of an environment variable holding an API key (sent as a Bearer
    /// token). The key itself never appears in config output or logs.
    pub api_key_env: Option<String>,
    /// Rate limits of this endpoint (sliding windows; see `limits.rs`).
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

impl EndpointConfig {
    pub fn limits(&self) -> super::limits::RateLimits {
        super::limits::RateLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            requests_per_second: self.requests_per_second,
            tokens_per_second: self.tokens_per_second,
        }
    }
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            name: String::new(),
            url: String::new(),
            kind: None,
            priority: 1,
            max_concurrent: 4,
            models: Vec::new(),
            tags: Vec::new(),
            api_key_env: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            requests_per_second: None,
            tokens_per_second: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub endpoints: Vec<EndpointConfig>,
    pub strategy: Strategy,
    /// Model aliases: a name used in workflows → models to try, in order. The
    /// seeds ask for `llama3.2`; map it to whatever your endpoints serve.
    pub models: BTreeMap<String, Vec<String>>,
    /// Seconds between background health checks (0 disables them).
    pub health_interval_secs: f64,
    /// Consecutive failures that open an endpoint's circuit.
    pub failure_threshold: u32,
    /// Seconds an open circuit waits before letting one trial request through.
    pub circuit_cooldown_secs: f64,
    /// Seconds without a byte from a streaming server before the attempt fails.
    pub stream_idle_timeout_secs: f64,
    pub connect_timeout_secs: f64,
    /// Largest image accepted for vision calls, in MiB.
    pub max_image_mb: f64,
    /// `max_tokens` for calls that do not set one (a cap for base models that
    /// never stop by themselves).
    pub default_max_tokens: Option<u64>,
    /// Rate limits per model, across all endpoints (a provider account's quota).
    pub model_limits: BTreeMap<String, super::limits::RateLimits>,
    /// Prices per model (USD per million input/output tokens). Models served
    /// by local endpoints cost nothing unless listed; others without a price
    /// have an unknown cost.
    pub prices: BTreeMap<String, Price>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            endpoints: Vec::new(),
            strategy: Strategy::LeastLoaded,
            models: BTreeMap::new(),
            health_interval_secs: 15.0,
            failure_threshold: 3,
            circuit_cooldown_secs: 30.0,
            stream_idle_timeout_secs: 120.0,
            connect_timeout_secs: 5.0,
            max_image_mb: 20.0,
            default_max_tokens: None,
            model_limits: BTreeMap::new(),
            prices: BTreeMap::new(),
        }
    }
}

impl LlmConfig {
    pub fn secs(value: f64) -> Duration {
        Duration::from_secs_f64(if value.is_finite() && value > 0.0 {
            value
        } else {
            0.0
        })
    }

    /// The endpoints to use: the configured ones, or one Ollama endpoint from
    /// `OLLAMA_HOST` (as Ollama's own tools read it), or `127.0.0.1:11434`.
    pub fn effective_endpoints(&self, ollama_host: Option<&str>) -> Vec<EndpointConfig> {
        if !self.endpoints.is_empty() {
            return self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut e = e.clone();
                    if e.name.is_empty() {
                        e.name = format!("endpoint{}", i + 1);
                    }
                    e.url = e.url.trim_end_matches('/').to_string();
                    e
                })
                .collect();
        }
        vec![EndpointConfig {
            name: "ollama".into(),
            url: ollama_url(ollama_host.unwrap_or("")),
            kind: Some(Dialect::Ollama),
            ..EndpointConfig::default()
        }]
    }

    /// Candidate models for a requested name: its alias list, else itself.
    pub fn candidates(&self, requested: &str) -> Vec<String> {
        match self.models.get(requested) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => vec![requested.to_string()],
        }
    }
}

/// `OLLAMA_HOST` accepts `host`, `host:port`, `:port`, `scheme://host:port`;
/// `0.0.0.0` (a bind address) means this machine.
pub fn ollama_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.is_empty() {
        return "http://127.0.0.1:11434".into();
    }
    let (scheme, rest) = match host.split_once("://") {
        Some((s, r)) => (s.to_string(), r.to_string()),
        None => ("http".to_string(), host.to_string()),
    };
    let (name, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_string(), p.to_string())
        }
        _ => (
            rest.clone(),
            if scheme == "https" {
                "443".into()
            } else {
                "11434".into()
            },
        ),
    };
    let name = match name.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        other => other.to_string(),
    };
    format!("{scheme}://{name}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_forms() {
        assert_eq!(ollama_url(""), "http://127.0.0.1:11434");
        assert_eq!(ollama_url("0.0.0.0"), "http://127.0.0.1:11434");
        assert_eq!(ollama_url("gpu-box"), "http://gpu-box:11434");
        assert_eq!(ollama_url("gpu-box:8080"), "http://gpu-box:8080");
        assert_eq!(ollama_url(":9999"), "http://127.0.0.1:9999");
        assert_eq!(ollama_url("https://example.org"), "https://example.org:443");
        assert_eq!(
            ollama_url("http://10.0.0.2:11434/"),
            "http://10.0.0.2:11434"
        );
    }

    #[test]
    fn aliases_and_endpoint_defaults() {
        let mut config = LlmConfig::default();
        config
            .models
            .insert("llama3.2".into(), vec!["gemma3".into(), "qwen".into()]);
        assert_eq!(config.candidates("llama3.2"), vec!["gemma3", "qwen"]);
        assert_eq!(config.candidates("other"), vec!["other"]);
        let endpoints = config.effective_endpoints(Some("box:1234"));
        assert_eq!(endpoints[0].url, "http://box:1234");
        assert_eq!(endpoints[0].kind, Some(Dialect::Ollama));
    }

    #[test]
    fn strategies_parse_in_both_spellings() {
        let s: Strategy = serde_json::from_str("\"MODEL_AFFINITY\"").unwrap();
        assert_eq!(s, Strategy::ModelAffinity);
        let s: Strategy = serde_json::from_str("\"round_robin\"").unwrap();
        assert_eq!(s, Strategy::RoundRobin);
    }
}
