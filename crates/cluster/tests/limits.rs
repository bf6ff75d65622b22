//! Rate limits shared through a real Redis: two nodes (two `RedisLimits`)
//! count against one window, tokens are estimated then corrected, calls that
//! never went out are taken back, and a wrong URL is an error, not a pass.

use gleitzeit_cluster::RedisLimits;
use gleitzeit_providers::llm::limits::{RateLimits, SharedLimits, SharedScope};
use std::time::Duration;

fn url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!(
        "gz-test-rl-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn scope(key: &str, limits: RateLimits) -> SharedScope {
    SharedScope {
        key: key.into(),
        limits,
    }
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_nodes_share_one_request_window() {
    let prefix = prefix();
    let one = RedisLimits::new(&url(), &prefix);
    let two = RedisLimits::new(&url(), &prefix);
    let endpoint = [scope(
        "endpoint:a",
        RateLimits {
            requests_per_second: Some(3.0),
            ..RateLimits::default()
        },
    )];
    let mut admitted = 0;
    for node in [&one, &two, &one, &two, &one] {
        if node.try_admit(&endpoint, 0.0).await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "three in the window, whichever node asks");
    let wait = two.try_admit(&endpoint, 0.0).await.unwrap().unwrap_err();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_millis(1025),
        "until the oldest leaves the window: {wait:?}"
    );
    // Another endpoint's window is its own.
    let other = [scope(
        "endpoint:b",
        RateLimits {
            requests_per_second: Some(1.0),
            ..RateLimits::default()
        },
    )];
    assert!(one.try_admit(&other, 0.0).await.unwrap().is_ok());
    // The scenario: the window moves on the clock, by the wait it announced.
    tokio::time::sleep(wait).await;
    assert!(two.try_admit(&endpoint, 0.0).await.unwrap().is_ok());
    cleanup(&prefix).await;
}

#[tokio::test]
async fn tokens_are_corrected_and_unsent_calls_released_across_nodes() {
    let prefix = prefix();
    let one = RedisLimits::new(&url(), &prefix);
    let two = RedisLimits::new(&url(), &prefix);
    let tokens = RateLimits {
        tokens_per_minute: Some(100.0),
        ..RateLimits::default()
    };
    let model = [scope("model:m", tokens.clone())];
    let first = one.try_admit(&model, 60.0).await.unwrap().unwrap();
    assert!(
        two.try_admit(&model, 50.0).await.unwrap().is_err(),
        "60 + 50 > 100"
    );
    one.correct(&model, first, 20.0).await.unwrap();
    let second = two.try_admit(&model, 50.0).await.unwrap().unwrap();
    assert!(
        one.try_admit(&model, 40.0).await.unwrap().is_err(),
        "20 + 50 + 40 > 100"
    );
    two.release(&model, second).await.unwrap();
    assert!(one.try_admit(&model, 40.0).await.unwrap().is_ok());

    // A call counts against every scope or none: the endpoint refusing it
    // leaves the model's window untouched.
    let full = scope(
        "endpoint:full",
        RateLimits {
            requests_per_minute: Some(1.0),
            ..RateLimits::default()
        },
    );
    let free = scope(
        "model:free",
        RateLimits {
            requests_per_minute: Some(1.0),
            ..RateLimits::default()
        },
    );
    one.try_admit(std::slice::from_ref(&full), 0.0)
        .await
        .unwrap()
        .unwrap();
    assert!(two
        .try_admit(&[free.clone(), full.clone()], 0.0)
        .await
        .unwrap()
        .is_err());
    assert!(one.try_admit(&[free], 0.0).await.unwrap().is_ok());

    // Windows nobody uses expire by themselves.
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:rl:model:m:60000"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 60_000 && ttl <= 120_025, "{ttl}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error() {
    let limits = RedisLimits::new("redis://127.0.0.1:1", "gz-test-unreachable");
    let endpoint = [scope(
        "endpoint:a",
        RateLimits {
            requests_per_second: Some(3.0),
            ..RateLimits::default()
        },
    )];
    let err = limits.try_admit(&endpoint, 0.0).await.unwrap_err();
    assert_eq!(err.code, gleitzeit_core::ErrorCode::RedisConnectionFailed);
}
