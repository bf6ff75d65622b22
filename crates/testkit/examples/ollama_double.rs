//! Runs the Ollama double until Ctrl-C, for poking at it with curl:
//! `cargo run -p gleitzeit-testkit --example ollama_double`.

#![forbid(unsafe_code)]

use std::time::Duration;

use gleitzeit_testkit::{DoubleConfig, OllamaDouble};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let double =
        OllamaDouble::start(DoubleConfig::default().with_token_delay(Duration::from_millis(50)))
            .await?;
    println!("{}", double.url());
    tokio::signal::ctrl_c().await?;
    double.shutdown().await;
    Ok(())
}
