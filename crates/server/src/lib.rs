//! `gleitzeit serve`: the runtime behind an HTTP API.
//!
//! - `api.rs` — REST handlers under `/api/v1` (their OpenAPI document is
//!   generated from the handlers' annotations, so it cannot drift);
//! - `runs.rs` — which workflows this server is executing, cancel/resume, and
//!   adopting interrupted workflows at start;
//! - `stream.rs` — one event stream (stored history, then live) that SSE,
//!   WebSocket and Socket.IO all serve;
//! - `metrics.rs` / `health.rs` — Prometheus text and the health verdict;
//! - `auth_api.rs` — `/api/v1/auth/…` (users, keys, the audit log);
//! - `shared.rs` — what the workflow and auth handlers both need (finding a
//!   caller's workflow, turning rejected queries into the API's error);
//! - `dashboard.rs` — the web dashboard at `/` (files in `dashboard/`, built
//!   into the binary).
//!
//! Every body the API sends or accepts is a type of `gleitzeit-api`, which
//! also gives `/api/v1/openapi.json` its schemas (checked in as
//! `docs/openapi.json`).

#![forbid(unsafe_code)]

mod api;
pub mod auth;
mod auth_api;
mod dashboard;
mod error;
mod health;
mod metrics;
mod runs;
mod schedules;
mod shared;
mod socketio;
mod stream;

pub use api::openapi;
pub use error::{status_for, ApiError};
pub use health::{HealthReport, HealthStatus};

use axum::Router;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_runtime::Runtime;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long shutdown waits for tasks in flight to be recorded.
    pub grace: Duration,
    /// Whether requests need an API key (`serve` turns this on unless
    /// `--no-auth`).
    pub auth_required: bool,
    /// Scale-out: where worker nodes register (`None`: tasks run in-process).
    pub cluster: Option<Arc<gleitzeit_cluster::admin::Admin>>,
    /// A reverse proxy whose header names the client (off by default: the
    /// peer address is the client).
    pub trusted_proxy: Option<TrustedProxy>,
    /// Methods and files per role for submitted workflows.
    pub policy: gleitzeit_auth::policy::Policy,
    /// Calls each webhook accepts per minute (429 beyond).
    pub hook_calls_per_minute: u32,
    /// How often the scheduler looks for due ticks.
    pub tick_period: Duration,
}

/// `server.trusted_proxy_header` with `server.trusted_proxies`: the header is
/// believed only on connections from those addresses, so a client cannot
/// pick its own address for the failed-attempt limiter.
#[derive(Debug, Clone)]
pub struct TrustedProxy {
    pub header: axum::http::HeaderName,
    pub addresses: Vec<std::net::IpAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 4 * 1024 * 1024,
            grace: Duration::from_secs(30),
            auth_required: false,
            cluster: None,
            trusted_proxy: None,
            policy: gleitzeit_auth::policy::Policy::default(),
            hook_calls_per_minute: schedules::HOOK_CALLS_PER_MINUTE,
            tick_period: Duration::from_millis(250),
        }
    }
}

pub(crate) struct Shared {
    pub runtime: Runtime,
    pub runs: runs::RunManager,
    pub metrics: metrics::Metrics,
    pub config: ServerConfig,
    /// Fired at shutdown: event streams end so connections can close.
    pub stopping: CancellationToken,
    pub started: Instant,
    pub auth_failures: auth::FailureLimiter,
    pub tickets: auth::TicketBook,
    /// Bumped whenever a key is revoked or a user disabled here, so open
    /// streams check their principal at once rather than at their next tick.
    pub auth_changed: tokio::sync::watch::Sender<u64>,
    pub provider_health: health::ProviderCache,
    pub store_health: health::StoreCache,
    /// Fires schedules; also starts the runs of webhooks and run-now.
    pub ticker: gleitzeit_runtime::schedules::Ticker,
    pub hook_limiter: schedules::HookLimiter,
}

pub(crate) type AppState = Arc<Shared>;

pub struct Server {
    state: AppState,
}

impl Server {
    pub fn new(runtime: Runtime, config: ServerConfig) -> Server {
        let metrics = metrics::Metrics::new();
        metrics.follow(runtime.subscribe());
        let runs = runs::RunManager::new(runtime.clone());
        let ticker = gleitzeit_runtime::schedules::Ticker::new(
            runtime.store().clone(),
            Arc::new(gleitzeit_runtime::schedules::SystemClock),
            Arc::new(schedules::ServerStarter {
                runtime: runtime.clone(),
                runs: runs.clone(),
            }),
        );
        Server {
            state: Arc::new(Shared {
                runs,
                ticker,
                hook_limiter: schedules::HookLimiter::default(),
                runtime,
                metrics,
                config,
                stopping: CancellationToken::new(),
                started: Instant::now(),
                auth_failures: auth::FailureLimiter::default(),
                tickets: auth::TicketBook::default(),
                auth_changed: tokio::sync::watch::Sender::new(0),
                provider_health: health::ProviderCache::default(),
                store_health: health::StoreCache::default(),
            }),
        }
    }

    /// The whole HTTP surface; tests drive it with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> Router {
        api::router(self.state.clone())
    }

    /// Whether any user exists (None: the store could not say).
    pub async fn users_exist(&self) -> Option<bool> {
        self.state
            .runtime
            .store()
            .users()
            .await
            .ok()
            .map(|u| !u.is_empty())
    }

    /// Starts every workflow that was running (or submitted and never started)
    /// when the last process stopped. Returns their ids.
    pub async fn resume_interrupted(&self) -> Result<Vec<String>, GzError> {
        self.state.runs.resume_interrupted().await
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends event
    /// streams, lets tasks in flight be recorded (up to the grace period) and
    /// returns. Workflows that did not finish stay resumable and continue when
    /// a server starts on the same store again.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GzError> {
        let state = self.state.clone();
        let router = self.router();
        let stopping = state.stopping.clone();
        let runtime = state.runtime.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new work, waiting for tasks in flight");
            runtime.drain();
            stopping.cancel();
        };
        // Schedules fire from now until shutdown begins.
        let ticker = tokio::spawn(
            state
                .ticker
                .clone()
                .run(state.config.tick_period, state.stopping.clone()),
        );
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(signal)
            .await
            .map_err(|e| {
                GzError::new(
                    ErrorCode::ServiceStartFailed,
                    format!("HTTP server failed: {e}"),
                )
            })?;
        state.runtime.drain();
        state.stopping.cancel();
        let _ = ticker.await;
        if !state.runs.wait_idle(state.config.grace).await {
            tracing::warn!(
                "grace period of {:?} passed with tasks still running; they run again on restart",
                state.config.grace
            );
        }
        state.runtime.registry().shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod tests;
