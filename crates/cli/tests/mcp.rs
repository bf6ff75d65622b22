//! MCP through the real binary: the example workflow reads a file with the
//! reference filesystem server and summarises it with the real llama.cpp
//! model; `providers list` shows the server's tools.

mod common;
use common::Env;

fn mcp_dir() -> String {
    gleitzeit_testkit::mcp_servers_dir().display().to_string()
}

#[test]
fn mcp_tool_feeds_an_llm_task() {
    let env = Env::new();
    let notes = env.path("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(
        notes.join("todo.txt"),
        "Buy milk. Fix the roof. Call Anna about the trip.",
    )
    .unwrap();
    let notes = notes.canonicalize().unwrap();
    let llama = gleitzeit_testkit::llama_server_url();
    let config = env.write(
        "config.yaml",
        &format!(
            "mcp_servers:\n  files:\n    command: [node, '{dir}/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js', '{notes}']\nllm:\n  endpoints:\n    - {{name: llama, url: '{llama}', kind: openai}}\n  models:\n    llama3.2: [gemma3]\n",
            dir = mcp_dir(),
            notes = notes.display()
        ),
    );
    let c = config.to_str().unwrap();
    let listed = env.run(&["--config", c, "providers", "list"]).ok();
    assert!(
        listed.stdout.contains("MCP servers") && listed.stdout.contains("read_text_file"),
        "{}",
        listed.stdout
    );

    let example = common::examples().join("mcp_to_llm.yaml");
    let path = format!("path={}/todo.txt", notes.display());
    let out = env
        .run(&[
            "--config",
            c,
            "--json",
            "run",
            example.to_str().unwrap(),
            "--input",
            &path,
        ])
        .ok()
        .json();
    assert!(
        out["tasks"][0]["record"]["text"]
            .as_str()
            .unwrap()
            .contains("Call Anna"),
        "{out}"
    );
    assert_eq!(out["tasks"][1]["record"]["endpoint"], "llama");
    assert!(!out["tasks"][1]["result"]
        .as_str()
        .unwrap()
        .trim()
        .is_empty());

    // A server that cannot start: GZ2041 naming it, exit 1.
    let broken = env.write(
        "broken.yaml",
        "mcp_servers:\n  files:\n    command: [/no/such/server]\n",
    );
    let run = env
        .run(&[
            "--config",
            broken.to_str().unwrap(),
            "run",
            example.to_str().unwrap(),
            "--input",
            &path,
        ])
        .code(1);
    assert!(
        run.stderr.contains("GZ2041") && run.stderr.contains("files"),
        "{}",
        run.stderr
    );
}
