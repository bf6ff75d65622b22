//! A runtime's health and providers in the API's terms: what the server's
//! `/health` and `/api/v1/providers` answer, and what `gleitzeit health` and
//! the monitor show when no server runs.

use crate::Runtime;
use gleitzeit_api::health::{HealthReport, HealthStatus, ProviderHealthView};
use gleitzeit_api::system::{ProviderEntry, ProviderList};
use gleitzeit_providers::{ProviderHealth, Registry};
use std::collections::BTreeMap;
use std::time::Duration;

pub fn provider_view(health: ProviderHealth) -> ProviderHealthView {
    ProviderHealthView {
        status: match health.status {
            gleitzeit_providers::HealthStatus::Healthy => HealthStatus::Healthy,
            gleitzeit_providers::HealthStatus::Degraded => HealthStatus::Degraded,
            gleitzeit_providers::HealthStatus::Unhealthy => HealthStatus::Unhealthy,
        },
        reason: health.reason,
        detail: health.detail,
    }
}

/// Every provider's health check, run at once.
pub async fn check_providers(registry: &Registry) -> BTreeMap<String, ProviderHealthView> {
    let checks = registry
        .providers()
        .map(|p| async move { (p.protocol().to_string(), provider_view(p.health().await)) });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

/// The verdict for a runtime: a server's, or the local one `gleitzeit health`
/// builds when no server runs.
pub async fn check(
    runtime: &Runtime,
    active_workflows: usize,
    uptime: Duration,
    check_providers: bool,
) -> HealthReport {
    let stats = runtime.store().stats().await.map_err(|e| e.to_string());
    let providers = if check_providers {
        self::check_providers(runtime.registry()).await
    } else {
        BTreeMap::new()
    };
    HealthReport::verdict(
        stats,
        runtime.is_draining(),
        providers,
        active_workflows,
        uptime,
    )
}

/// Providers and their methods, as `/api/v1/providers` and the monitor show
/// them; with `check`, each provider's health too (LLM endpoints are contacted).
pub async fn providers(registry: &Registry, check: bool) -> ProviderList {
    let mut providers: Vec<_> = registry.providers().collect();
    providers.sort_by_key(|p| p.protocol());
    let mut list = Vec::new();
    for provider in providers {
        list.push(ProviderEntry {
            protocol: provider.protocol().to_string(),
            methods: serde_json::to_value(provider.methods()).unwrap_or_default(),
            health: if check {
                Some(provider_view(provider.health().await))
            } else {
                None
            },
        });
    }
    ProviderList { providers: list }
}
