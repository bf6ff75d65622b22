//! The MCP provider against the real reference servers from the npm registry
//! (`scripts/mcp-test-servers.sh` installs them; GLEITZEIT_TEST_MCP_DIR points
//! at them), over stdio and streamable HTTP, plus broken servers.

use gleitzeit_core::ErrorCode;
use gleitzeit_providers::mcp::{McpProvider, McpServerConfig};
use gleitzeit_providers::{CallContext, Provider};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn mcp_dir() -> PathBuf {
    gleitzeit_testkit::mcp_servers_dir()
}

fn server_js(name: &str) -> String {
    mcp_dir()
        .join("node_modules/@modelcontextprotocol")
        .join(name)
        .join("dist/index.js")
        .display()
        .to_string()
}

fn stdio(args: Vec<String>) -> McpServerConfig {
    McpServerConfig {
        command: args,
        ..McpServerConfig::default()
    }
}

async fn call(
    p: &McpProvider,
    method: &str,
    params: Value,
) -> Result<Value, gleitzeit_core::GzError> {
    p.call(method, params, &CallContext::detached("t")).await
}

#[tokio::test]
async fn everything_server_over_stdio_lists_and_calls_tools() {
    let mut servers = BTreeMap::new();
    servers.insert(
        "everything".to_string(),
        stdio(vec![
            "node".into(),
            server_js("server-everything"),
            "stdio".into(),
        ]),
    );
    let p = McpProvider::new(servers);
    let tools = call(&p, "mcp/list_tools", json!({"server": "everything"}))
        .await
        .unwrap();
    let names: Vec<&str> = tools["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    let echo = tools["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo")
        .unwrap();
    assert!(
        echo["input_schema"]["properties"]["message"].is_object(),
        "{echo}"
    );

    let answer = call(
        &p,
        "mcp/call_tool",
        json!({"server": "everything", "tool": "echo", "arguments": {"message": "hallo welt"}}),
    )
    .await
    .unwrap();
    assert!(
        answer["text"].as_str().unwrap().contains("hallo welt"),
        "{answer}"
    );
    assert!(answer["result"].to_string().contains("hallo welt"));
    // The connection is reused: a second call needs no new process.
    let again = call(
        &p,
        "mcp/call_tool",
        json!({"server": "everything", "tool": "echo", "arguments": {"message": "2"}}),
    )
    .await
    .unwrap();
    assert!(again["text"].as_str().unwrap().contains('2'));

    // A tool that does not exist, and bad arguments: GZ errors naming the server.
    let e = call(
        &p,
        "mcp/call_tool",
        json!({"server": "everything", "tool": "no_such_tool"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(e.code, ErrorCode::McpToolError), "{e}");
    assert!(e.message.contains("everything"), "{e}");
    let e = call(
        &p,
        "mcp/call_tool",
        json!({"server": "nowhere", "tool": "echo"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidParameters);
    assert!(e.hint_text().contains("everything"), "{e:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn filesystem_server_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "gleitzeit was here").unwrap();
    let root = dir.path().canonicalize().unwrap().display().to_string();
    let mut servers = BTreeMap::new();
    servers.insert(
        "files".to_string(),
        stdio(vec![
            "node".into(),
            server_js("server-filesystem"),
            root.clone(),
        ]),
    );
    let p = McpProvider::new(servers);
    let tools = call(&p, "mcp/list_tools", json!({"server": "files"}))
        .await
        .unwrap();
    let names: Vec<String> = tools["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect();
    let read = ["read_text_file", "read_file"]
        .into_iter()
        .find(|n| names.iter().any(|x| x == n))
        .expect("a read tool");
    let answer = call(
        &p,
        "mcp/call_tool",
        json!({"server": "files", "tool": read, "arguments": {"path": format!("{root}/note.txt")}}),
    )
    .await
    .unwrap();
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("gleitzeit was here"),
        "{answer}"
    );
    // Outside its root the server refuses: a tool error, not a crash.
    let e = call(
        &p,
        "mcp/call_tool",
        json!({"server": "files", "tool": read, "arguments": {"path": "/etc/passwd"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::McpToolError, "{e}");
    p.shutdown().await;
}

#[tokio::test]
async fn everything_server_over_streamable_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new("node")
        .arg(server_js("server-everything"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "HTTP MCP server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut servers = BTreeMap::new();
    servers.insert(
        "remote".to_string(),
        McpServerConfig {
            url: Some(format!("http://127.0.0.1:{port}/mcp")),
            ..McpServerConfig::default()
        },
    );
    let p = McpProvider::new(servers);
    let answer = call(
        &p,
        "mcp/call_tool",
        json!({"server": "remote", "tool": "echo", "arguments": {"message": "over http"}}),
    )
    .await
    .unwrap();
    assert!(
        answer["text"].as_str().unwrap().contains("over http"),
        "{answer}"
    );
    p.shutdown().await;
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_server_that_dies_is_restarted_and_broken_ones_are_gz2041() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The server writes its pid so the test can kill it between calls.
    let wrapper = format!(
        "echo $$ > {}; exec node {} stdio",
        pid_file.display(),
        server_js("server-everything")
    );
    let mut servers = BTreeMap::new();
    servers.insert(
        "mortal".to_string(),
        stdio(vec!["sh".into(), "-c".into(), wrapper]),
    );
    servers.insert(
        "missing".to_string(),
        stdio(vec!["/no/such/program".into()]),
    );
    servers.insert(
        "garbage".to_string(),
        McpServerConfig {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo 'this is not json-rpc'; sleep 30".into(),
            ],
            timeout_secs: Some(5.0),
            ..McpServerConfig::default()
        },
    );
    servers.insert("nothing".to_string(), McpServerConfig::default());
    let p = McpProvider::new(servers);
    let echo = json!({"server": "mortal", "tool": "echo", "arguments": {"message": "one"}});
    call(&p, "mcp/call_tool", echo.clone()).await.unwrap();
    let first_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(first_pid, libc::SIGKILL) };
    // Dead means gone or a zombie: its state letter follows the `(name)`.
    gleitzeit_testkit::poll::until_async(
        "the killed server to die",
        || async {
            std::fs::read_to_string(format!("/proc/{first_pid}/stat"))
                .ok()
                .and_then(|stat| stat.get(stat.rfind(')')? + 2..)?.chars().next())
        },
        |state| matches!(state, None | Some('Z' | 'X')),
    )
    .await;
    // The scenario is a call made after the death, not racing it: the pool
    // learns of a death from its transport's end of file, asynchronously (a
    // call that races the death fails, since a tool call is never re-sent).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = call(&p, "mcp/call_tool", echo).await.unwrap();
    assert!(answer["text"].as_str().unwrap().contains("one"));
    let second_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(first_pid, second_pid, "a new server process was started");

    for server in ["missing", "garbage", "nothing"] {
        let started = std::time::Instant::now();
        let e = call(&p, "mcp/list_tools", json!({"server": server}))
            .await
            .unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::McpServerFailed | ErrorCode::TaskTimeout),
            "{server}: {e}"
        );
        assert!(e.message.contains(server), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20), "{server} hung");
    }
    let health = p.health().await;
    assert_ne!(health.status, gleitzeit_providers::HealthStatus::Healthy);
    assert!(health.reason.unwrap().contains("missing"));
    p.shutdown().await;
}

/// The test server written here with rmcp's server side (built by cargo as
/// an example of this crate).
fn test_server() -> String {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|d| d.parent()).unwrap();
    debug.join("examples/mcp_test_server").display().to_string()
}

#[tokio::test]
async fn an_rmcp_server_gives_structured_results_errors_and_crashes() {
    let mut servers = BTreeMap::new();
    servers.insert("test".to_string(), stdio(vec![test_server()]));
    let p = McpProvider::new(servers);
    let tools = call(&p, "mcp/list_tools", json!({"server": "test"}))
        .await
        .unwrap();
    let names: Vec<&str> = tools["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // Structured content is the primary result.
    let sum = call(
        &p,
        "mcp/call_tool",
        json!({"server": "test", "tool": "add", "arguments": {"a": 40, "b": 2}}),
    )
    .await
    .unwrap();
    assert_eq!(sum["result"], json!({"sum": 42}));

    let e = call(
        &p,
        "mcp/call_tool",
        json!({"server": "test", "tool": "fail", "arguments": {"reason": "out of coffee"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::McpToolError);
    assert!(e.message.contains("out of coffee"), "{e}");

    // The server dies mid-call: that call fails; the next one gets a new server.
    let e = call(
        &p,
        "mcp/call_tool",
        json!({"server": "test", "tool": "crash"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(e.code, ErrorCode::McpServerFailed), "{e}");
    let again = call(
        &p,
        "mcp/call_tool",
        json!({"server": "test", "tool": "add", "arguments": {"a": 1, "b": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(again["result"]["sum"], 2);
    p.shutdown().await;
}
