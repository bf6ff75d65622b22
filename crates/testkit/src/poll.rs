//! Waiting for state instead of time: a test observes what it waits for until
//! it holds, and fails after a generous deadline with the last observation, so
//! a slow machine makes a test slower, never wrong.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for a state before it fails: far beyond what any
/// healthy run needs, so only a real fault reaches it.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two observations.
const INTERVAL: Duration = Duration::from_millis(50);

/// Observes until `done` holds for the observation, and returns it. Panics
/// after [`DEADLINE`] with `what` and the last observation.
pub fn until<T: Debug>(
    what: &str,
    mut observe: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = observe();
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "waited {DEADLINE:?} for {what}; last seen: {seen:#?}"
        );
        std::thread::sleep(INTERVAL);
    }
}

/// [`until`] for observations that are futures; waits without blocking the
/// runtime, so what is observed keeps running.
pub async fn until_async<T: Debug, F: Future<Output = T>>(
    what: &str,
    mut observe: impl FnMut() -> F,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = observe().await;
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "waited {DEADLINE:?} for {what}; last seen: {seen:#?}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_observation_that_holds() {
        let mut n = 0;
        let seen = until(
            "n to reach 3",
            || {
                n += 1;
                n
            },
            |n| *n >= 3,
        );
        assert_eq!(seen, 3);
    }

    #[tokio::test]
    async fn the_async_form_returns_what_holds() {
        let seen = until_async("a ready value", || async { "ready" }, |s| *s == "ready").await;
        assert_eq!(seen, "ready");
    }
}
