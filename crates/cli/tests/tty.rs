//! The live terminal view, driven in a real terminal (tmux): a running LLM
//! task's tokens appear while it streams.

mod common;
use common::{tmux, Env};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
use std::time::{Duration, Instant};

#[test]
fn tokens_stream_into_the_progress_line() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_token_delay(Duration::from_millis(120)),
        ))
        .unwrap();
    let env = Env::new();
    let words: Vec<String> = (1..=40).map(|i| format!("word{i}")).collect();
    let file = env.write(
        "talk.yaml",
        &format!(
            "name: talk\ntasks:\n  - id: talk\n    method: llm/chat\n    parameters: {{model: llama3.2, prompt: '{}'}}\n",
            words.join(" ")
        ),
    );
    let session = format!("gz-tty-{}", std::process::id());
    let command = format!(
        "env GLEITZEIT_HOME={} OLLAMA_HOST={} {} run {}; sleep 30",
        env.home.path().display(),
        server.url(),
        env!("CARGO_BIN_EXE_gleitzeit"),
        file.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "20",
        &command,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_partial = false;
    let mut screen = String::new();
    while Instant::now() < deadline {
        screen = tmux(&["capture-pane", "-p", "-t", &session]);
        if screen.contains("talk: …") && !screen.contains("Workflow \"talk\" completed") {
            // Part of the reply is on screen before the task has finished.
            if screen.contains("echo: word1") || screen.contains("word") {
                saw_partial = true;
            }
        }
        if screen.contains("Workflow \"talk\" completed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux(&["kill-session", "-t", &session]);
    assert!(
        saw_partial,
        "no live token text seen; last screen:\n{screen}"
    );
    assert!(screen.contains("Workflow \"talk\" completed"), "{screen}");
}
