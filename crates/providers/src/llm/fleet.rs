//! The endpoint fleet: per-endpoint load, latency, circuit breaker and the
//! models each serves; choosing an endpoint by strategy; health checks.

use super::config::{Dialect, EndpointConfig, LlmConfig, Strategy};
use super::limits::{Limiter, SharedLimits, SharedScope, Ticket};
use super::wire::{self, model_matches};
use gleitzeit_core::{ErrorCode, GzError};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct State {
    dialect: Option<Dialect>,
    in_flight: usize,
    requests: u64,
    failures: u64,
    consecutive_failures: u32,
    circuit: Circuit,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
    latency_ms: Option<f64>,
    discovered: Option<Vec<String>>,
    /// Models the server said it does not have.
    missing: Vec<String>,
    last_model: Option<String>,
    healthy: Option<bool>,
    last_error: Option<String>,
    /// The server asked us to wait (429/503 with Retry-After) until then.
    cooling_until: Option<Instant>,
}

pub struct Endpoint {
    pub config: EndpointConfig,
    api_key: Option<String>,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    limiter: Option<Limiter>,
}

/// How long a node counts limits on its own after the shared store failed.
const SHARED_RETRY: Duration = Duration::from_secs(10);

/// A call admitted by the rate limits that apply to it.
pub enum Admission {
    Local {
        endpoint: Option<Ticket>,
        model: Option<Ticket>,
    },
    Shared {
        scopes: Vec<SharedScope>,
        ticket: u64,
    },
}

/// What `providers list` / `providers health` show about an endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub name: String,
    pub url: String,
    pub kind: Option<Dialect>,
    pub priority: i32,
    pub max_concurrent: usize,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    pub success_rate: f64,
    pub latency_ms: Option<f64>,
    pub circuit: Circuit,
    pub healthy: Option<bool>,
    pub models: Vec<String>,
    pub tags: Vec<String>,
    /// Whether an API key is attached (never the key).
    pub api_key: bool,
    pub last_error: Option<String>,
}

impl Endpoint {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    fn serves(&self, model: &str, state: &State) -> bool {
        if state.missing.iter().any(|m| m == model) {
            return false;
        }
        if !self.config.models.is_empty() {
            return self.config.models.iter().any(|m| model_matches(m, model));
        }
        match &state.discovered {
            // llama-server lists the file it loaded and answers to any name.
            Some(models) if state.dialect == Some(Dialect::Ollama) => {
                models.iter().any(|m| model_matches(m, model))
            }
            _ => true,
        }
    }
}

pub struct Fleet {
    pub endpoints: Vec<Arc<Endpoint>>,
    strategy: Strategy,
    next: AtomicUsize,
    failure_threshold: u32,
    cooldown: Duration,
    pub client: reqwest::Client,
    /// Never reuses a connection: for the one retry after a stale one.
    fresh_client: reqwest::Client,
    model_limiters: std::collections::HashMap<String, Limiter>,
    /// Set on worker nodes: the limits count every node's calls.
    shared: OnceLock<Arc<dyn SharedLimits>>,
    /// Set while the shared limits cannot be reached: until when calls count
    /// on this node only (each try may take a connect timeout).
    shared_down_until: Mutex<Option<Instant>>,
}

/// A reserved slot on an endpoint; dropping it frees the slot.
pub struct Lease {
    pub index: usize,
    endpoint: Arc<Endpoint>,
    _permit: OwnedSemaphorePermit,
    started: Instant,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.endpoint.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.trial_in_flight = false;
    }
}

impl Lease {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Fleet {
    pub fn new(config: &LlmConfig, ollama_host: Option<&str>) -> Result<Fleet, GzError> {
        let connect = LlmConfig::secs(config.connect_timeout_secs).max(Duration::from_millis(100));
        let build_error = |e: reqwest::Error| {
            GzError::new(
                ErrorCode::InternalError,
                format!("cannot build HTTP client: {e}"),
            )
        };
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(build_error)?;
        let fresh_client = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(build_error)?;
        let mut model_limiters = std::collections::HashMap::new();
        for (model, limits) in &config.model_limits {
            limits.validate(&format!("llm.model_limits.{model}"))?;
            if let Some(limiter) = Limiter::new(limits) {
                model_limiters.insert(model.clone(), limiter);
            }
        }
        let configs = config.effective_endpoints(ollama_host);
        for c in &configs {
            c.limits().validate(&format!("llm endpoint `{}`", c.name))?;
        }
        let endpoints = configs
            .into_iter()
            .map(|c| {
                let api_key = c
                    .api_key_env
                    .as_deref()
                    .and_then(|var| std::env::var(var).ok())
                    .filter(|k| !k.is_empty());
                Arc::new(Endpoint {
                    slots: Arc::new(Semaphore::new(c.max_concurrent.max(1))),
                    state: Mutex::new(State {
                        dialect: c.kind,
                        in_flight: 0,
                        requests: 0,
                        failures: 0,
                        consecutive_failures: 0,
                        circuit: Circuit::Closed,
                        opened_at: None,
                        trial_in_flight: false,
                        latency_ms: None,
                        discovered: None,
                        missing: Vec::new(),
                        last_model: None,
                        healthy: None,
                        last_error: None,
                        cooling_until: None,
                    }),
                    api_key,
                    limiter: Limiter::new(&c.limits()),
                    config: c,
                })
            })
            .collect();
        Ok(Fleet {
            endpoints,
            strategy: config.strategy,
            next: AtomicUsize::new(0),
            failure_threshold: config.failure_threshold.max(1),
            cooldown: LlmConfig::secs(config.circuit_cooldown_secs),
            client,
            fresh_client,
            model_limiters,
            shared: OnceLock::new(),
            shared_down_until: Mutex::new(None),
        })
    }

    /// Counts rate limits in `shared` from now on instead of in this process.
    pub fn share_limits(&self, shared: Arc<dyn SharedLimits>) {
        // A second call keeps the first: limits must not change mid-flight.
        let _ = self.shared.set(shared);
    }

    /// Admits a call of about `tokens` tokens to `index` under the model's and
    /// the endpoint's limits, or says how long until it would be.
    pub async fn admit(
        &self,
        index: usize,
        model: &str,
        tokens: f64,
    ) -> Result<Admission, Duration> {
        // Only nodes with shared limits pay for the lock.
        let shared = self.shared.get().filter(|_| {
            self.shared_down_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|until| Instant::now() >= until)
        });
        if let Some(shared) = shared {
            let scopes = self.scopes(index, model);
            if scopes.is_empty() {
                return Ok(Admission::Local {
                    endpoint: None,
                    model: None,
                });
            }
            match shared.try_admit(&scopes, tokens).await {
                Ok(Ok(ticket)) => return Ok(Admission::Shared { scopes, ticket }),
                Ok(Err(wait)) => return Err(wait),
                Err(e) => {
                    // Work goes on under this node's own count rather than stopping.
                    tracing::warn!(
                        "shared rate limits unreachable, counting on this node only for {}s: {e}",
                        SHARED_RETRY.as_secs()
                    );
                    *self
                        .shared_down_until
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + SHARED_RETRY);
                }
            }
        }
        self.admit_locally(index, model, tokens)
    }

    fn admit_locally(&self, index: usize, model: &str, tokens: f64) -> Result<Admission, Duration> {
        let now = Instant::now();
        let model_ticket = match self.model_limiters.get(model) {
            Some(limiter) => Some((limiter, limiter.try_admit(now, tokens)?)),
            None => None,
        };
        let endpoint_ticket = match &self.endpoints[index].limiter {
            Some(limiter) => match limiter.try_admit(now, tokens) {
                Ok(ticket) => Some(ticket),
                Err(wait) => {
                    if let Some((limiter, ticket)) = model_ticket {
                        limiter.release(ticket);
                    }
                    return Err(wait);
                }
            },
            None => None,
        };
        Ok(Admission::Local {
            endpoint: endpoint_ticket,
            model: model_ticket.map(|(_, t)| t),
        })
    }

    /// The shared windows a call of `model` to `index` counts against.
    fn scopes(&self, index: usize, model: &str) -> Vec<SharedScope> {
        let endpoint = &self.endpoints[index];
        let mut scopes = Vec::new();
        if let Some(limiter) = self.model_limiters.get(model) {
            scopes.push(SharedScope {
                key: format!("model:{model}"),
                limits: limiter.limits().clone(),
            });
        }
        if let Some(limiter) = &endpoint.limiter {
            scopes.push(SharedScope {
                key: format!("endpoint:{}", endpoint.config.name),
                limits: limiter.limits().clone(),
            });
        }
        scopes
    }

    /// The local limiters that admitted a call, with the ticket each gave.
    fn local_tickets<'a>(
        &'a self,
        index: usize,
        model: &str,
        endpoint: Option<Ticket>,
        model_ticket: Option<Ticket>,
    ) -> impl Iterator<Item = (&'a Limiter, Ticket)> {
        let by_model = self.model_limiters.get(model).zip(model_ticket);
        let by_endpoint = self.endpoints[index].limiter.as_ref().zip(endpoint);
        by_model.into_iter().chain(by_endpoint)
    }

    /// The tokens an admitted call really used, as the server reported them.
    pub async fn settle(&self, index: usize, model: &str, admission: &Admission, tokens: f64) {
        match admission {
            Admission::Local {
                endpoint,
                model: model_ticket,
            } => {
                for (limiter, ticket) in self.local_tickets(index, model, *endpoint, *model_ticket)
                {
                    limiter.correct(ticket, tokens);
                }
            }
            Admission::Shared { scopes, ticket } => {
                if let Some(shared) = self.shared.get() {
                    if let Err(e) = shared.correct(scopes, *ticket, tokens).await {
                        tracing::debug!("shared rate limits: cannot correct a call's tokens: {e}");
                    }
                }
            }
        }
    }

    /// The call was admitted but never reached the endpoint.
    pub async fn release(&self, index: usize, model: &str, admission: Admission) {
        match admission {
            Admission::Local {
                endpoint,
                model: model_ticket,
            } => {
                for (limiter, ticket) in self.local_tickets(index, model, endpoint, model_ticket) {
                    limiter.release(ticket);
                }
            }
            Admission::Shared { scopes, ticket } => {
                if let Some(shared) = self.shared.get() {
                    if let Err(e) = shared.release(&scopes, ticket).await {
                        tracing::debug!("shared rate limits: cannot release a call: {e}");
                    }
                }
            }
        }
    }

    /// Honours a server's Retry-After: no requests to it until then.
    pub fn cool(&self, index: usize, wait: Duration) {
        let mut state = self.endpoints[index].lock();
        let until = Instant::now() + wait;
        state.cooling_until = Some(state.cooling_until.map_or(until, |u| u.max(until)));
    }

    /// How long until an endpoint that is only cooling down (Retry-After)
    /// could take `model` again; `None` when none is.
    pub fn cooling_wait(
        &self,
        model: &str,
        tags: &[String],
        exclude: &[usize],
    ) -> Option<Duration> {
        let now = Instant::now();
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(i, e)| !exclude.contains(i) && tags.iter().all(|t| e.config.tags.contains(t)))
            .filter_map(|(_, e)| {
                let state = e.lock();
                if !e.serves(model, &state) || state.circuit == Circuit::Open {
                    return None;
                }
                state
                    .cooling_until
                    .map(|u| u.saturating_duration_since(now))
            })
            .min()
    }

    /// Endpoints that may take a request for `model` now, best first.
    pub fn eligible(&self, model: &str, tags: &[String], exclude: &[usize]) -> Vec<usize> {
        let now = Instant::now();
        let mut scored: Vec<(usize, f64, i32, bool)> = Vec::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if exclude.contains(&i) || !tags.iter().all(|t| endpoint.config.tags.contains(t)) {
                continue;
            }
            let mut state = endpoint.lock();
            if !endpoint.serves(model, &state) {
                continue;
            }
            if state.circuit == Circuit::Open {
                match state.opened_at {
                    Some(at) if now.duration_since(at) >= self.cooldown => {
                        state.circuit = Circuit::HalfOpen
                    }
                    _ => continue,
                }
            }
            if state.circuit == Circuit::HalfOpen && state.trial_in_flight {
                continue;
            }
            match state.cooling_until {
                Some(until) if until > now => continue,
                Some(_) => state.cooling_until = None,
                None => {}
            }
            let load = state.in_flight as f64 / endpoint.config.max_concurrent.max(1) as f64;
            let measure = match self.strategy {
                Strategy::LeastLoaded | Strategy::RoundRobin => load,
                Strategy::FastestResponse => state.latency_ms.unwrap_or(0.0),
                Strategy::ModelAffinity => load,
            };
            let affine = state.last_model.as_deref() == Some(model);
            scored.push((i, measure, endpoint.config.priority, affine));
        }
        match self.strategy {
            Strategy::RoundRobin => {
                scored.sort_by_key(|s| s.0);
                if !scored.is_empty() {
                    let start = self.next.fetch_add(1, Ordering::Relaxed) % scored.len();
                    scored.rotate_left(start);
                }
            }
            Strategy::ModelAffinity => scored.sort_by(|a, b| {
                b.3.cmp(&a.3)
                    .then(a.1.total_cmp(&b.1))
                    .then(b.2.cmp(&a.2))
                    .then(a.0.cmp(&b.0))
            }),
            _ => scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0))),
        }
        scored.into_iter().map(|s| s.0).collect()
    }

    /// Reserves a slot on the first of `order` with room, or waits for whichever
    /// frees first.
    pub async fn acquire(&self, order: &[usize]) -> Option<Lease> {
        let mut chosen = None;
        for &i in order {
            if let Ok(permit) = self.endpoints[i].slots.clone().try_acquire_owned() {
                chosen = Some((i, permit));
                break;
            }
        }
        let (index, permit) = match chosen {
            Some(c) => c,
            None => {
                let waits = order.iter().map(|&i| {
                    let slots = self.endpoints[i].slots.clone();
                    Box::pin(async move { (i, slots.acquire_owned().await) })
                });
                let ((i, permit), _, _) = futures_util::future::select_all(waits).await;
                (i, permit.ok()?)
            }
        };
        let endpoint = self.endpoints[index].clone();
        {
            let mut state = endpoint.lock();
            state.in_flight += 1;
            state.requests += 1;
            if state.circuit == Circuit::HalfOpen {
                state.trial_in_flight = true;
            }
        }
        Some(Lease {
            index,
            endpoint,
            _permit: permit,
            started: Instant::now(),
        })
    }

    pub fn record_success(&self, index: usize, model: &str, latency: Duration) {
        let mut state = self.endpoints[index].lock();
        state.consecutive_failures = 0;
        state.circuit = Circuit::Closed;
        state.opened_at = None;
        state.healthy = Some(true);
        state.last_model = Some(model.to_string());
        let ms = latency.as_secs_f64() * 1000.0;
        state.latency_ms = Some(match state.latency_ms {
            Some(old) => old * 0.7 + ms * 0.3,
            None => ms,
        });
    }

    /// A failure that says something about the endpoint (not about the request).
    pub fn record_failure(&self, index: usize, error: &GzError) {
        let mut state = self.endpoints[index].lock();
        state.failures += 1;
        state.consecutive_failures += 1;
        state.last_error = Some(error.message.clone());
        if state.circuit == Circuit::HalfOpen
            || state.consecutive_failures >= self.failure_threshold
        {
            state.circuit = Circuit::Open;
            state.opened_at = Some(Instant::now());
            state.healthy = Some(false);
        }
    }

    pub fn record_missing_model(&self, index: usize, model: &str) {
        let mut state = self.endpoints[index].lock();
        if !state.missing.iter().any(|m| m == model) {
            state.missing.push(model.to_string());
        }
    }

    /// The endpoint's dialect, probing the server once when config did not say.
    pub async fn dialect(&self, index: usize) -> Result<Dialect, GzError> {
        if let Some(d) = self.endpoints[index].lock().dialect {
            return Ok(d);
        }
        let endpoint = &self.endpoints[index];
        for dialect in [Dialect::Ollama, Dialect::Openai] {
            if let Ok(models) = self.list_models(endpoint, dialect).await {
                let mut state = endpoint.lock();
                state.dialect = Some(dialect);
                state.discovered = Some(models);
                return Ok(dialect);
            }
        }
        Err(unreachable(
            endpoint,
            "it answers neither /api/tags (Ollama) nor /v1/models (OpenAI-compatible)",
        ))
    }

    async fn list_models(
        &self,
        endpoint: &Endpoint,
        dialect: Dialect,
    ) -> Result<Vec<String>, GzError> {
        let url = format!("{}{}", endpoint.config.url, wire::models_path(dialect));
        let response = send(self, |client| {
            let request = client.get(&url).timeout(Duration::from_secs(10));
            match endpoint.api_key() {
                Some(key) => request.bearer_auth(key),
                None => request,
            }
        })
        .await
        .map_err(|e| transport_error(endpoint, &e))?;
        if !response.status().is_success() {
            return Err(unreachable(
                endpoint,
                format!("{url} answered {}", response.status()),
            ));
        }
        let value: serde_json::Value = response
            .json()
            .await
            .map_err(|e| unreachable(endpoint, format!("{url} did not answer JSON: {e}")))?;
        let models = wire::decode_models(dialect, &value);
        if dialect == Dialect::Ollama && value.get("models").is_none() {
            return Err(unreachable(endpoint, "not an Ollama server"));
        }
        Ok(models)
    }

    /// Checks one endpoint now: reachable, which models. Updates its health.
    pub async fn check(&self, index: usize) -> Result<Vec<String>, GzError> {
        let endpoint = &self.endpoints[index];
        let dialect = self.dialect(index).await;
        let result = match dialect {
            Ok(d) => self.list_models(endpoint, d).await,
            Err(e) => Err(e),
        };
        let mut state = endpoint.lock();
        match &result {
            Ok(models) => {
                state.healthy = Some(true);
                state.discovered = Some(models.clone());
                state.last_error = None;
                if state.circuit == Circuit::Open {
                    state.circuit = Circuit::HalfOpen;
                }
            }
            Err(e) => {
                state.healthy = Some(false);
                state.last_error = Some(e.message.clone());
            }
        }
        result
    }

    pub fn status(&self) -> Vec<EndpointStatus> {
        self.endpoints
            .iter()
            .map(|e| {
                let state = e.lock();
                let mut models = e.config.models.clone();
                if models.is_empty() {
                    models = state.discovered.clone().unwrap_or_default();
                }
                EndpointStatus {
                    name: e.config.name.clone(),
                    url: e.config.url.clone(),
                    kind: state.dialect,
                    priority: e.config.priority,
                    max_concurrent: e.config.max_concurrent,
                    in_flight: state.in_flight,
                    requests: state.requests,
                    failures: state.failures,
                    success_rate: if state.requests == 0 {
                        1.0
                    } else {
                        1.0 - state.failures as f64 / state.requests as f64
                    },
                    latency_ms: state.latency_ms.map(|l| (l * 10.0).round() / 10.0),
                    circuit: state.circuit,
                    healthy: state.healthy,
                    models,
                    tags: e.config.tags.clone(),
                    api_key: e.api_key.is_some(),
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

/// Sends a request; when a pooled keep-alive connection turns out to have been
/// closed by the server (llama-server closes some after a stream), the server
/// never saw the request, so it is sent again on a new connection.
pub async fn send(
    fleet: &Fleet,
    build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    match build(&fleet.client).send().await {
        Err(e) if !e.is_timeout() && !e.is_connect() && e.is_request() => {
            build(&fleet.fresh_client).send().await
        }
        other => other,
    }
}

pub fn unreachable(endpoint: &Endpoint, why: impl Into<String>) -> GzError {
    GzError::new(
        ErrorCode::LlmEndpointUnreachable,
        format!(
            "LLM endpoint `{}` ({}) is unreachable: {}",
            endpoint.config.name,
            endpoint.config.url,
            why.into()
        ),
    )
    .at(endpoint.config.name.clone())
}

pub fn transport_error(endpoint: &Endpoint, error: &reqwest::Error) -> GzError {
    if error.is_timeout() {
        GzError::new(
            ErrorCode::NetworkTimeout,
            format!(
                "LLM endpoint `{}` ({}) timed out: {error}",
                endpoint.config.name, endpoint.config.url
            ),
        )
        .at(endpoint.config.name.clone())
    } else {
        let mut source: Option<&dyn std::error::Error> = Some(error);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        unreachable(endpoint, detail)
    }
}
