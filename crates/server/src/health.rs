//! The health verdict: unhealthy when the store cannot be read or the server
//! is stopping, degraded when a provider cannot take work, healthy otherwise.

use crate::AppState;
use gleitzeit_providers::ProviderHealth;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub use gleitzeit_providers::HealthStatus;

/// How long a provider check is reused: health is polled by load balancers
/// and by anyone who can reach the port, and each check may contact every
/// LLM endpoint — so at most one round of checks runs per interval.
const PROVIDER_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The last round of provider checks. Callers that arrive while a round runs
/// wait for it instead of starting their own.
#[derive(Default)]
pub(crate) struct ProviderCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, BTreeMap<String, ProviderHealth>)>>,
}

impl ProviderCache {
    async fn get(&self, runtime: &gleitzeit_runtime::Runtime) -> BTreeMap<String, ProviderHealth> {
        let mut last = self.last.lock().await;
        if let Some((at, providers)) = last.as_ref() {
            if at.elapsed() < PROVIDER_CHECK_INTERVAL {
                return providers.clone();
            }
        }
        let providers = check_providers(runtime).await;
        *last = Some((std::time::Instant::now(), providers.clone()));
        providers
    }
}

/// How long the store's counts are reused: they read every workflow row, and
/// `/health` needs no key, so counting per call would let anyone keep the
/// store busy.
const STORE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last store check; callers within the interval share it, and a failed
/// check is never reused.
#[derive(Default)]
pub(crate) struct StoreCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, gleitzeit_store::StoreStats)>>,
}

impl StoreCache {
    async fn get(
        &self,
        runtime: &gleitzeit_runtime::Runtime,
    ) -> Result<gleitzeit_store::StoreStats, gleitzeit_store::StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, stats)) = last.as_ref() {
            if at.elapsed() < STORE_CHECK_INTERVAL {
                return Ok(stats.clone());
            }
        }
        let stats = runtime.store().stats().await?;
        *last = Some((std::time::Instant::now(), stats.clone()));
        Ok(stats)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// healthy, degraded or unhealthy
    #[schema(value_type = String, example = "healthy")]
    pub status: HealthStatus,
    /// Why it is not healthy (empty when healthy).
    pub reasons: Vec<String>,
    pub version: String,
    pub uptime_seconds: u64,
    pub active_workflows: usize,
    /// Store reachable, with counts by state.
    #[schema(value_type = Object)]
    pub store: serde_json::Value,
    /// Per provider: status, reason and detail (LLM endpoints, interpreter).
    #[schema(value_type = Object)]
    pub providers: BTreeMap<String, ProviderHealth>,
    /// Scale-out only: worker nodes by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub nodes: Option<serde_json::Value>,
}

/// `quick` skips the provider checks (which may contact LLM endpoints and
/// start interpreters): what a client needs to tell that a server answers.
/// Provider results come from [`ProviderCache`], never from a check per call.
pub(crate) async fn report(state: &AppState, quick: bool) -> HealthReport {
    let stats = state.store_health.get(&state.runtime).await;
    let mut report = verdict(
        &state.runtime,
        stats,
        state.runs.active_count(),
        state.started.elapsed(),
        false,
    )
    .await;
    if !quick {
        let providers = state.provider_health.get(&state.runtime).await;
        add_providers(&mut report.status, &mut report.reasons, &providers);
        report.providers = providers;
    }
    if let Some(cluster) = &state.config.cluster {
        match cluster.nodes().await {
            Ok(nodes) => {
                let count = |s: &str| nodes.iter().filter(|n| n.state == s).count();
                let active = count("active");
                if active == 0 {
                    report.status = report.status.max(HealthStatus::Degraded);
                    report.reasons.push(
                        "no active worker nodes: tasks wait in the queue (start `gleitzeit worker`)"
                            .into(),
                    );
                }
                report.nodes = Some(serde_json::json!({
                    "active": active, "lost": count("lost"), "left": count("left"),
                }));
            }
            Err(error) => {
                report.status = HealthStatus::Unhealthy;
                report.reasons.push(format!("cluster: {error}"));
            }
        }
    }
    report
}

/// The verdict for a runtime: a server's, or the local one `gleitzeit health`
/// builds when no server runs.
pub async fn check(
    runtime: &gleitzeit_runtime::Runtime,
    active_workflows: usize,
    uptime: std::time::Duration,
    check_providers: bool,
) -> HealthReport {
    let stats = runtime.store().stats().await;
    verdict(runtime, stats, active_workflows, uptime, check_providers).await
}

async fn verdict(
    runtime: &gleitzeit_runtime::Runtime,
    stats: Result<gleitzeit_store::StoreStats, gleitzeit_store::StoreError>,
    active_workflows: usize,
    uptime: std::time::Duration,
    check_providers: bool,
) -> HealthReport {
    let mut reasons = Vec::new();
    let mut status = HealthStatus::Healthy;
    let store = match stats {
        Ok(stats) => {
            serde_json::json!({"ok": true, "workflows_by_state": stats.workflows_by_state.into_iter().collect::<BTreeMap<_, _>>()})
        }
        Err(error) => {
            status = HealthStatus::Unhealthy;
            reasons.push(format!("store: {error}"));
            serde_json::json!({"ok": false, "error": error.to_string()})
        }
    };
    if runtime.is_draining() {
        status = HealthStatus::Unhealthy;
        reasons.push("server is shutting down".into());
    }
    let providers = if check_providers {
        self::check_providers(runtime).await
    } else {
        BTreeMap::new()
    };
    add_providers(&mut status, &mut reasons, &providers);
    HealthReport {
        status,
        reasons,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: uptime.as_secs(),
        active_workflows,
        store,
        providers,
        nodes: None,
    }
}

async fn check_providers(runtime: &gleitzeit_runtime::Runtime) -> BTreeMap<String, ProviderHealth> {
    let checks = runtime
        .registry()
        .providers()
        .map(|p| async move { (p.protocol().to_string(), p.health().await) });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

fn add_providers(
    status: &mut HealthStatus,
    reasons: &mut Vec<String>,
    providers: &BTreeMap<String, ProviderHealth>,
) {
    for (name, health) in providers {
        if health.status != HealthStatus::Healthy {
            // A provider that cannot work makes the server degraded, not
            // unhealthy: workflows that do not use it still run.
            *status = (*status).max(HealthStatus::Degraded);
            reasons.push(format!(
                "{name}: {}",
                health.reason.as_deref().unwrap_or("not healthy")
            ));
        }
    }
}
