//! `http/request` through the real binary: the example workflow feeds an HTTP
//! response into Python, and the SSRF guard refuses loopback unless config
//! allows it.

mod common;
use common::Env;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct StaticServer(Child, u16);

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's own HTTP server over a folder with one JSON file.
fn static_server(env: &Env) -> StaticServer {
    env.write(
        "data.json",
        r#"{"name": "demo", "stars": 5, "tags": ["a", "b"]}"#,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(env.home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "static server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    StaticServer(child, port)
}

#[test]
fn http_example_feeds_python_when_the_host_is_allowed() {
    let env = Env::new();
    let server = static_server(&env);
    let config = env.write("config.yaml", "http:\n  allow_hosts: [127.0.0.1]\n");
    let example = common::examples().join("http_to_python.yaml");
    let url = format!("url=http://127.0.0.1:{}/data.json", server.1);
    let out = env
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "run",
            example.to_str().unwrap(),
            "--input",
            &url,
        ])
        .ok()
        .json();
    assert_eq!(out["tasks"][0]["record"]["status"], 200);
    assert_eq!(out["tasks"][0]["result"]["stars"], 5);
    assert_eq!(
        out["tasks"][1]["result"],
        serde_json::json!({"fields": 3, "first_keys": ["name", "stars", "tags"]})
    );
}

#[test]
fn loopback_is_refused_by_default_with_gz6004() {
    let env = Env::new();
    let server = static_server(&env);
    let example = common::examples().join("http_to_python.yaml");
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("url=http://{host}:{}/data.json", server.1);
        let run = env
            .run(&["run", example.to_str().unwrap(), "--input", &url])
            .code(1);
        assert!(run.stderr.contains("GZ6004"), "{host}: {}", run.stderr);
        assert!(run.stderr.contains("allow_hosts"), "{}", run.stderr);
    }
}
