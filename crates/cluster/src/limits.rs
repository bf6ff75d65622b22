//! Rate limits every worker node shares: the in-process limiter's sliding
//! windows, kept in Redis so that two nodes calling one endpoint count
//! against one limit. Each admission is one script call (about one round
//! trip), and only calls to endpoints or models that have limits make one.

use async_trait::async_trait;
use gleitzeit_core::GzError;
use gleitzeit_providers::llm::limits::{SharedLimits, SharedScope, MARGIN};
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::sync::OnceCell;

use crate::{ClusterError, Keys};

pub struct RedisLimits {
    url: String,
    keys: Keys,
    /// Opened on the first limited call, so nodes without limits never connect.
    conn: OnceCell<ConnectionManager>,
    admit: redis::Script,
    settle: redis::Script,
}

impl RedisLimits {
    pub fn new(url: &str, prefix: &str) -> RedisLimits {
        RedisLimits {
            url: url.to_string(),
            keys: Keys::new(prefix),
            conn: OnceCell::new(),
            admit: redis::Script::new(include_str!("lua/rate_admit.lua")),
            settle: redis::Script::new(include_str!("lua/rate_settle.lua")),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, ClusterError> {
        self.conn
            .get_or_try_init(|| crate::connect(&self.url, Some(Duration::from_secs(2))))
            .await
            .cloned()
    }

    /// The two keys of each window of each scope, in the scripts' order.
    fn window_keys(&self, scopes: &[SharedScope]) -> Vec<(String, String)> {
        scopes
            .iter()
            .flat_map(|scope| {
                scope.limits.windows().into_iter().map(|w| {
                    let calls = self.keys.rate_window(&scope.key, w.span.as_millis());
                    let spent = format!("{calls}:t");
                    (calls, spent)
                })
            })
            .collect()
    }

    async fn settle(
        &self,
        scopes: &[SharedScope],
        ticket: u64,
        tokens: Option<f64>,
    ) -> Result<(), ClusterError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.settle.prepare_invoke();
        for (calls, spent) in self.window_keys(scopes) {
            invocation.key(calls).key(spent);
        }
        invocation.arg(ticket);
        if let Some(tokens) = tokens {
            invocation.arg(tokens);
        }
        invocation.invoke_async::<i64>(&mut conn).await?;
        Ok(())
    }
}

#[async_trait]
impl SharedLimits for RedisLimits {
    async fn try_admit(
        &self,
        scopes: &[SharedScope],
        tokens: f64,
    ) -> Result<Result<u64, Duration>, GzError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.admit.prepare_invoke();
        invocation.key(self.keys.rate_tickets());
        invocation.arg(tokens).arg(MARGIN.as_millis() as u64);
        for (calls, spent) in self.window_keys(scopes) {
            invocation.key(calls).key(spent);
        }
        for scope in scopes {
            for window in scope.limits.windows() {
                invocation
                    .arg(window.span.as_millis() as u64)
                    .arg(window.max_requests.unwrap_or(0.0))
                    .arg(window.max_tokens.unwrap_or(0.0));
            }
        }
        let (admitted, value): (i64, u64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(ClusterError::from)?;
        Ok(if admitted == 1 {
            Ok(value)
        } else {
            Err(Duration::from_millis(value.max(1)))
        })
    }

    async fn correct(
        &self,
        scopes: &[SharedScope],
        ticket: u64,
        tokens: f64,
    ) -> Result<(), GzError> {
        Ok(self.settle(scopes, ticket, Some(tokens)).await?)
    }

    async fn release(&self, scopes: &[SharedScope], ticket: u64) -> Result<(), GzError> {
        Ok(self.settle(scopes, ticket, None).await?)
    }
}
