//! The health verdict: unhealthy when the store cannot be read or the server
//! is stopping, degraded when a provider cannot take work, healthy otherwise.

use crate::AppState;
use gleitzeit_api::health::{NodeCounts, ProviderHealthView};
use std::collections::BTreeMap;

pub use gleitzeit_api::health::{HealthReport, HealthStatus};

/// How long a provider check is reused: health is polled by load balancers
/// and by anyone who can reach the port, and each check may contact every
/// LLM endpoint — so at most one round of checks runs per interval.
const PROVIDER_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The last round of provider checks. Callers that arrive while a round runs
/// wait for it instead of starting their own.
#[derive(Default)]
pub(crate) struct ProviderCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, BTreeMap<String, ProviderHealthView>)>>,
}

impl ProviderCache {
    async fn get(
        &self,
        runtime: &gleitzeit_runtime::Runtime,
    ) -> BTreeMap<String, ProviderHealthView> {
        let mut last = self.last.lock().await;
        if let Some((at, providers)) = last.as_ref() {
            if at.elapsed() < PROVIDER_CHECK_INTERVAL {
                return providers.clone();
            }
        }
        let providers = gleitzeit_runtime::health::check_providers(runtime.registry()).await;
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

/// `quick` skips the provider checks (which may contact LLM endpoints and
/// start interpreters): what a client needs to tell that a server answers.
/// Provider results come from [`ProviderCache`], never from a check per call.
pub(crate) async fn report(state: &AppState, quick: bool) -> HealthReport {
    let stats = state
        .store_health
        .get(&state.runtime)
        .await
        .map_err(|e| e.to_string());
    let mut report = HealthReport::verdict(
        stats,
        state.runtime.is_draining(),
        BTreeMap::new(),
        state.runs.active_count(),
        state.started.elapsed(),
    );
    if !quick {
        report.add_providers(state.provider_health.get(&state.runtime).await);
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
                report.nodes = Some(NodeCounts {
                    active,
                    lost: count("lost"),
                    left: count("left"),
                });
            }
            Err(error) => {
                report.status = HealthStatus::Unhealthy;
                report.reasons.push(format!("cluster: {error}"));
            }
        }
    }
    report
}
