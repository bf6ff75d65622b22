//! Rate limits per endpoint and per model: requests and tokens per minute (or
//! per second), as sliding windows.
//!
//! A sliding window (not a token bucket) because providers enforce "at most N
//! in any minute": a bucket that starts full lets through twice its size in
//! the first minute and earns a 429. Tokens are estimated before a call (from
//! the prompt and `max_tokens`) and corrected with the usage the server
//! reports, so later calls wait for what was really spent.

use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub requests_per_minute: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        *self == RateLimits::default()
    }

    /// Refuses limits that cannot mean anything (0, negative, not a number).
    pub fn validate(&self, owner: &str) -> Result<(), GzError> {
        for (name, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("requests_per_second", self.requests_per_second),
            ("tokens_per_second", self.tokens_per_second),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0) {
                    return Err(GzError::new(
                        ErrorCode::ConfigInvalid,
                        format!("{owner}: `{name}: {v}` is not a limit"),
                    )
                    .at(owner.to_string())
                    .with_hint(format!(
                        "Give `{name}` a positive number, or leave it out for no limit."
                    )));
                }
            }
        }
        Ok(())
    }

    /// Each window these limits set: its span, and at most how many requests
    /// and tokens it may hold.
    pub fn windows(&self) -> Vec<WindowLimits> {
        [
            (
                Duration::from_secs(60),
                self.requests_per_minute,
                self.tokens_per_minute,
            ),
            (
                Duration::from_secs(1),
                self.requests_per_second,
                self.tokens_per_second,
            ),
        ]
        .into_iter()
        .filter(|(_, requests, tokens)| requests.is_some() || tokens.is_some())
        .map(|(span, max_requests, max_tokens)| WindowLimits {
            span,
            max_requests,
            max_tokens,
        })
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLimits {
    pub span: Duration,
    pub max_requests: Option<f64>,
    pub max_tokens: Option<f64>,
}

/// Limits that one endpoint or one model puts on every node of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedScope {
    /// Names the windows in the shared store: `endpoint:NAME` or `model:NAME`.
    pub key: String,
    pub limits: RateLimits,
}

/// Sliding windows that live outside this process, so that every worker
/// node counts against the same limits (the Redis backend's implementation is
/// in the cluster crate). The same rules as [`Limiter`], applied to all
/// scopes at once: a call is admitted by all of them or by none.
#[async_trait]
pub trait SharedLimits: Send + Sync {
    /// The admitted call's ticket, or how long until it would fit;
    /// `Err` when the shared store cannot be reached.
    async fn try_admit(
        &self,
        scopes: &[SharedScope],
        tokens: f64,
    ) -> Result<Result<u64, Duration>, GzError>;

    /// The call used `tokens`, not the estimate.
    async fn correct(
        &self,
        scopes: &[SharedScope],
        ticket: u64,
        tokens: f64,
    ) -> Result<(), GzError>;

    /// The call never went out.
    async fn release(&self, scopes: &[SharedScope], ticket: u64) -> Result<(), GzError>;
}

/// Added to every window: a call admitted at the very end of one window may
/// reach the server a little later than the previous one did, and the server
/// counts arrivals.
pub const MARGIN: Duration = Duration::from_millis(25);

struct Window {
    span: Duration,
    max_requests: Option<f64>,
    max_tokens: Option<f64>,
    /// Admitted calls still inside the window: when, which, how many tokens.
    entries: VecDeque<(Instant, u64, f64)>,
    tokens: f64,
}

impl Window {
    fn evict(&mut self, now: Instant) {
        while let Some(&(at, _, tokens)) = self.entries.front() {
            if now.duration_since(at) < self.span + MARGIN {
                break;
            }
            self.entries.pop_front();
            self.tokens -= tokens;
        }
        if self.entries.is_empty() {
            self.tokens = 0.0;
        }
    }

    /// How long until a call of `tokens` fits; zero when it fits now.
    fn wait(&self, now: Instant, tokens: f64) -> Duration {
        let expiry = |index: usize| {
            let (at, _, _) = self.entries[index];
            (at + self.span + MARGIN).saturating_duration_since(now)
        };
        let mut wait = Duration::ZERO;
        if let Some(max) = self.max_requests {
            let over = self.entries.len() as f64 + 1.0 - max.floor().max(1.0);
            if over > 0.0 {
                wait = wait.max(expiry(over as usize - 1));
            }
        }
        if let Some(max) = self.max_tokens {
            // A call larger than the whole budget goes alone, once the window is empty.
            let fits = tokens.min(max);
            let mut freed = max - self.tokens;
            let mut index = 0;
            while freed < fits && index < self.entries.len() {
                freed += self.entries[index].2;
                wait = wait.max(expiry(index));
                index += 1;
            }
        }
        wait
    }
}

/// One set of limits, shared by every call it applies to.
pub struct Limiter {
    limits: RateLimits,
    windows: Mutex<Vec<Window>>,
    next: AtomicU64,
}

/// An admitted call: correct its tokens afterwards, or give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Limiter {
    /// `None` when the limits limit nothing.
    pub fn new(limits: &RateLimits) -> Option<Limiter> {
        let windows: Vec<Window> = limits
            .windows()
            .into_iter()
            .map(|w| Window {
                span: w.span,
                max_requests: w.max_requests,
                max_tokens: w.max_tokens,
                entries: VecDeque::new(),
                tokens: 0.0,
            })
            .collect();
        (!windows.is_empty()).then(|| Limiter {
            limits: limits.clone(),
            windows: Mutex::new(windows),
            next: AtomicU64::new(1),
        })
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a call of about `tokens` tokens now, or says how long to wait.
    pub fn try_admit(&self, now: Instant, tokens: f64) -> Result<Ticket, Duration> {
        let mut windows = self.lock();
        let mut wait = Duration::ZERO;
        for window in windows.iter_mut() {
            window.evict(now);
            wait = wait.max(window.wait(now, tokens));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        for window in windows.iter_mut() {
            window.entries.push_back((now, id, tokens));
            window.tokens += tokens;
        }
        Ok(Ticket(id))
    }

    /// The call used `tokens`, not the estimate.
    pub fn correct(&self, ticket: Ticket, tokens: f64) {
        for window in self.lock().iter_mut() {
            // Calls are settled soon after they were admitted: look from the newest.
            if let Some(entry) = window.entries.iter_mut().rev().find(|e| e.1 == ticket.0) {
                window.tokens += tokens - entry.2;
                entry.2 = tokens;
            }
        }
    }

    /// The call never went out (another limit refused it).
    pub fn release(&self, ticket: Ticket) {
        for window in self.lock().iter_mut() {
            if let Some(i) = window.entries.iter().rposition(|e| e.1 == ticket.0) {
                if let Some((_, _, tokens)) = window.entries.remove(i) {
                    window.tokens -= tokens;
                }
            }
        }
    }
}

/// Tokens a call will probably use: its text at about four characters a
/// token, plus what it may generate.
pub fn estimate_tokens(chars: usize, max_tokens: Option<u64>) -> f64 {
    (chars as f64 / 4.0).ceil() + max_tokens.unwrap_or(0) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(requests: Option<f64>, tokens: Option<f64>) -> Limiter {
        Limiter::new(&RateLimits {
            requests_per_second: requests,
            tokens_per_second: tokens,
            ..RateLimits::default()
        })
        .unwrap()
    }

    #[test]
    fn requests_never_exceed_the_window() {
        let limiter = per_second(Some(3.0), None);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.try_admit(t0, 0.0).is_ok());
        }
        let wait = limiter
            .try_admit(t0 + Duration::from_millis(400), 0.0)
            .unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(625),
            "until the oldest leaves the window"
        );
        assert!(limiter
            .try_admit(t0 + Duration::from_millis(1025), 0.0)
            .is_ok());
    }

    #[test]
    fn tokens_are_estimated_then_corrected() {
        let limiter = per_second(None, Some(100.0));
        let t0 = Instant::now();
        let first = limiter.try_admit(t0, 60.0).unwrap();
        assert!(limiter.try_admit(t0, 50.0).is_err(), "60 + 50 > 100");
        limiter.correct(first, 20.0);
        let second = limiter.try_admit(t0, 50.0).unwrap();
        assert!(limiter.try_admit(t0, 40.0).is_err(), "20 + 50 + 40 > 100");
        limiter.release(second);
        assert!(limiter.try_admit(t0, 40.0).is_ok());
        // A call bigger than the whole budget waits for an empty window, then goes.
        let big = per_second(None, Some(10.0));
        big.try_admit(t0, 5.0).unwrap();
        assert_eq!(
            big.try_admit(t0, 50.0).unwrap_err(),
            Duration::from_millis(1025)
        );
        assert!(big
            .try_admit(t0 + Duration::from_millis(1025), 50.0)
            .is_ok());
    }

    #[test]
    fn nonsense_limits_are_refused() {
        for bad in [0.0, -1.0, f64::NAN] {
            let limits = RateLimits {
                requests_per_minute: Some(bad),
                ..RateLimits::default()
            };
            let err = limits.validate("endpoint `a`").unwrap_err();
            assert_eq!(err.code, ErrorCode::ConfigInvalid);
            assert!(err.message.contains("is not a limit"), "{}", err.message);
        }
        assert!(Limiter::new(&RateLimits::default()).is_none());
    }
}
