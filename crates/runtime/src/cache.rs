//! Result cache for tasks with `cache:`. A call's key is the SHA-256 of the
//! canonical JSON of its method and fully resolved parameters (or of the
//! task's own rendered `cache.key`), so equal calls meet across runs and
//! processes that share a store. Only successful results are stored.

use crate::Runtime;
use gleitzeit_core::GzError;
use gleitzeit_store::{now_ms, CacheEntry};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where one call's result is looked up and stored.
#[derive(Debug, Clone)]
pub(crate) struct CacheSlot {
    pub key: String,
    pub method: String,
    pub ttl_ms: Option<i64>,
}

impl CacheSlot {
    /// `custom` is the task's rendered `cache.key`, which stands in for the
    /// parameters.
    #[cfg(test)]
    pub fn new(
        method: &str,
        params: &Value,
        custom: Option<&Value>,
        ttl: Option<f64>,
    ) -> CacheSlot {
        CacheSlot::granted(method, params, custom, ttl, None)
    }

    /// As `new`, for a workflow that carries its own file grant: results are
    /// shared only between workflows with the same grant, so a cached file
    /// read never reaches a workflow that could not read the file itself.
    pub fn granted(
        method: &str,
        params: &Value,
        custom: Option<&Value>,
        ttl: Option<f64>,
        access: Option<&gleitzeit_core::access::FileAccess>,
    ) -> CacheSlot {
        let mut subject = match custom {
            Some(key) => json!({"method": method, "key": key}),
            None => json!({"method": method, "params": params}),
        };
        if let (Some(access), Value::Object(map)) = (access, &mut subject) {
            map.insert("files".into(), json!(access.roots));
        }
        let mut text = String::new();
        gleitzeit_core::model::canonical_json(&subject, &mut text);
        CacheSlot {
            key: format!("{:x}", Sha256::digest(text.as_bytes())),
            method: method.to_string(),
            ttl_ms: ttl.map(|s| (s * 1000.0).round().clamp(1.0, i64::MAX as f64) as i64),
        }
    }
}

impl Runtime {
    /// A stored result for the slot, marked `"cached": true`. A store that
    /// cannot answer counts as a miss: the cache only ever saves work.
    pub(crate) async fn cached(&self, slot: &CacheSlot) -> Option<Value> {
        if !self.config.use_cache {
            return None;
        }
        match self.store.cache_get(&slot.key, now_ms()).await {
            Ok(Some(entry)) => {
                let mut record = entry.result;
                if let Value::Object(map) = &mut record {
                    map.insert("cached".into(), Value::Bool(true));
                }
                Some(record)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "cache lookup failed; running the task");
                None
            }
        }
    }

    /// Stores a successful result; a failure to store is logged, not fatal.
    pub(crate) async fn remember(&self, slot: &CacheSlot, outcome: &Result<Value, GzError>) {
        let Ok(record) = outcome else { return };
        let now = now_ms();
        let entry = CacheEntry {
            key: slot.key.clone(),
            method: slot.method.clone(),
            result: record.clone(),
            created_ms: now,
            expires_ms: slot.ttl_ms.map(|ttl| now.saturating_add(ttl)),
        };
        fail::fail_point!("runtime.before_cache_put");
        if let Err(error) = self.store.cache_put(&entry).await {
            tracing::warn!(%error, "could not store a cache entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_object_key_order_but_not_values() {
        let a = CacheSlot::new(
            "f/x",
            &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
            None,
            None,
        );
        let b = CacheSlot::new(
            "f/x",
            &json!({"b": {"d": "x", "c": [1, 2]}, "a": 1}),
            None,
            None,
        );
        let c = CacheSlot::new(
            "f/x",
            &json!({"a": 1, "b": {"c": [2, 1], "d": "x"}}),
            None,
            None,
        );
        let d = CacheSlot::new(
            "f/y",
            &json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}),
            None,
            None,
        );
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_ne!(a.key, d.key);
        assert_eq!(a.key.len(), 64);
    }

    #[test]
    fn custom_key_replaces_the_parameters() {
        let key = json!("topic=rust");
        let granted = |roots: Vec<std::path::PathBuf>| {
            let access = gleitzeit_core::access::FileAccess::under(roots);
            CacheSlot::granted(
                "function/call",
                &json!({"path": "x"}),
                None,
                None,
                Some(&access),
            )
            .key
        };
        assert_ne!(
            granted(vec!["/srv/a".into()]),
            granted(vec!["/srv/b".into()]),
            "different file grants never share results"
        );
        assert_ne!(
            granted(vec![]),
            CacheSlot::new("function/call", &json!({"path": "x"}), None, None).key
        );
        let a = CacheSlot::new("llm/chat", &json!({"seed": 1}), Some(&key), Some(1.5));
        let b = CacheSlot::new("llm/chat", &json!({"seed": 2}), Some(&key), None);
        assert_eq!(a.key, b.key);
        assert_eq!(a.ttl_ms, Some(1500));
    }
}
