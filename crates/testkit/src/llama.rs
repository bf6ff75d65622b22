//! A real llama.cpp server for tests of the OpenAI-compatible dialect.
//!
//! `GLEITZEIT_TEST_LLAMA_URL` points at a running server (the test script starts
//! one); without it the first test that asks starts one through
//! `scripts/llm-test-server.sh start --embeddings`, which builds and caches
//! llama-server and the model on first use. The server is shared by all tests
//! and left running for the next test binary; `scripts/llm-test-server.sh stop`
//! ends it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/llm-test-server.sh")
}

/// The base URL of a live llama-server (`http://127.0.0.1:PORT`), started with
/// embeddings enabled and 4 parallel slots. Panics with the script's output when
/// no server can be had: these tests must not silently pass without one.
pub fn llama_server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("GLEITZEIT_TEST_LLAMA_URL") {
            if !url.is_empty() {
                return url.trim_end_matches('/').to_string();
            }
        }
        let output = Command::new("bash")
            .arg(script())
            .args(["start", "--embeddings"])
            .output()
            .expect("run scripts/llm-test-server.sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "could not start llama-server:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("LLAMA_URL="))
            .expect("LLAMA_URL= line from llm-test-server.sh")
            .trim()
            .to_string()
    })
    .clone()
}
