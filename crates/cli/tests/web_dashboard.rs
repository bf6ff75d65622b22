//! The web dashboard in a real browser: `tests/web/dashboard.mjs` drives
//! Debian's Chromium headless through playwright-core against the real
//! `gleitzeit serve` (keys on) — login, submit through the form, the DAG and
//! task details, LLM tokens streaming in (from the Ollama double), providers
//! and nodes, not-found, a server killed and restarted, and a 5,000-task
//! workflow. Screenshots land in
//! `$CARGO_TARGET_DIR/web-screenshots` (or GLEITZEIT_SCREENSHOT_DIR).
//!
//! Chromium and playwright-core come from `scripts/browser-test-deps.sh`
//! (GLEITZEIT_TEST_PLAYWRIGHT_DIR when `scripts/test.sh` ran it already).
//! Without them this test fails: a dashboard nobody looked at is not tested.

use gleitzeit_testkit::{DoubleConfig, OllamaDouble, Reply};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn playwright_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLEITZEIT_TEST_PLAYWRIGHT_DIR") {
        return PathBuf::from(dir);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/browser-test-deps.sh"
    );
    let out = Command::new(script)
        .output()
        .expect("run scripts/browser-test-deps.sh");
    assert!(
        out.status.success(),
        "the browser test needs Chromium and playwright-core:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.trim().trim_start_matches("PLAYWRIGHT_DIR="))
}

fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLEITZEIT_SCREENSHOT_DIR") {
        return PathBuf::from(dir);
    }
    // The binary is `<target>/debug/gleitzeit`: screenshots go beside the
    // build, where CI keeps its artifacts.
    let bin = Path::new(env!("CARGO_BIN_EXE_gleitzeit"));
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("web-screenshots")
}

#[test]
fn dashboard_in_headless_chromium() {
    let playwright = playwright_dir();
    let shots = screenshot_dir();
    let work = tempfile::tempdir().expect("temp dir");
    // An Ollama double that streams slowly enough for the page to show the
    // tokens while the task still runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let llm = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default()
                .with_token_delay(Duration::from_millis(120))
                .with_reply(Reply::Fixed(
                    "Gleitzeit streams every token to the dashboard as it arrives, one by one, live."
                        .into(),
                )),
        ))
        .expect("start the Ollama double");
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "llm:\n  endpoints:\n    - {{name: double, url: '{}', kind: ollama}}\n",
            llm.url()
        ),
    )
    .expect("write config");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/dashboard.mjs");
    let out = Command::new("node")
        .arg(&script)
        .env("GLEITZEIT_BIN", env!("CARGO_BIN_EXE_gleitzeit"))
        .env("PLAYWRIGHT_DIR", &playwright)
        .env("CHROMIUM", "/usr/bin/chromium")
        .env("WORK_DIR", work.path())
        .env("GLEITZEIT_TEST_CONFIG", &config)
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .expect("run node (the browser test needs Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let log = std::fs::read_to_string(work.path().join("server.log")).unwrap_or_default();
    // Both the exit status and the script's own tally: a script that dies
    // quietly half-way must not pass.
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "browser test failed:\n{stdout}\n{stderr}\n{log}"
    );
    println!("screenshots: {}", shots.display());
    rt.block_on(llm.shutdown());
}
