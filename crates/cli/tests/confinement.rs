//! The attack table: a real `gleitzeit serve` with API keys, one user per
//! role, and every method that takes a path pointed at every file a task
//! must not read (saved credentials, the database and its journal, the
//! config, /etc/shadow, /proc/self/environ, `../` escapes, a symlink out of a
//! root) and at every path that is no local path (NUL, over-long, `~user/`,
//! Windows-style, a URL, empty).
//!
//! Paths are checked where the task runs (they may come from references, so
//! only then are they known): the task fails with GZ6010 (outside the roots,
//! or protected) or GZ6011 (not a local path) and nothing is read. Methods
//! outside a role's reach are refused at submit: 403, GZ4003, nothing stored.

mod common;
use common::{Env, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MARKER: &str = "TOPSECRET-5a1e";

struct Caller {
    role: &'static str,
    key: String,
    /// A file this role may read, and what it holds.
    allowed: PathBuf,
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
        .block_on(future)
}

fn submit(server: &str, key: &str, body: &Value) -> (u16, Value) {
    block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{server}/api/v1/workflows"))
            .bearer_auth(key)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn get(server: &str, key: &str, path: &str) -> Value {
    block_on(async {
        reqwest::Client::new()
            .get(format!("{server}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn finished(server: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view = get(server, key, &format!("/api/v1/workflows/{id}"));
        if view["state"] == "completed" || view["state"] == "failed" {
            return view;
        }
        assert!(Instant::now() < deadline, "{id} never finished: {view}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn workflow_count(server: &str, key: &str) -> usize {
    get(server, key, "/api/v1/workflows?limit=1000")["workflows"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `(method, parameters)` with `P` standing for the path.
fn path_methods(path: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("read_file", json!({"path": path})),
        ("file_info", json!({"path": path})),
        ("read_csv", json!({"file": path})),
        ("csv_filter", json!({"file": path, "column": "a"})),
        ("analyze_data", json!({"data": path})),
        (
            "llm/chat",
            json!({"model": "m", "prompt": "x", "files": [path]}),
        ),
        (
            "llm/vision",
            json!({"model": "m", "prompt": "x", "images": [path]}),
        ),
        ("python/script", json!({"file": path})),
        ("python/function", json!({"module": path, "function": "f"})),
    ]
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn no_role_reads_outside_its_roots_or_any_secret_through_any_method() {
    let env = Env::new();
    let home = std::fs::canonicalize(env.home.path()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere = std::fs::canonicalize(elsewhere.path()).unwrap();
    let shared = home.join("roots/shared");
    let ops = home.join("roots/ops");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&ops).unwrap();
    std::fs::write(shared.join("ok.txt"), "a\n1\n").unwrap();
    std::fs::write(ops.join("ok.txt"), "a\n2\n").unwrap();
    std::fs::write(elsewhere.join("secret.txt"), format!("a\n{MARKER}\n")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("secret.txt"), shared.join("link")).unwrap();
    env.write(
        "config.yaml",
        &format!(
            "# {MARKER}\nfiles:\n  roots: ['{}']\n  roles:\n    OPERATOR: ['{}']\n    ADMIN: ['{}']\n",
            display(&shared),
            display(&ops),
            display(&home)
        ),
    );

    let init = env.run(&["--json", "auth", "init"]).ok().json();
    let admin_key = init["key"].as_str().unwrap().to_string();
    let server = Server::spawn(&env, &[]);
    let s = server.url.clone();
    env.run(&[
        "--server",
        &s,
        "auth",
        "login",
        "--api-key",
        &admin_key,
        "--save",
    ])
    .ok();
    let credentials = home.join("credentials");
    assert!(credentials.is_file(), "login --save wrote the credentials");

    // `serve` says what API workflows may do.
    let banner = server.banner.join("\n");
    assert!(
        banner.contains(&format!("USER: files under {}", display(&shared)))
            && banner.contains(&format!("OPERATOR: files under {}", display(&ops)))
            && banner.contains(
                "python (arbitrary code on this server) may be submitted by: ADMIN, OPERATOR"
            )
            && banner.contains("network host"),
        "{banner}"
    );

    let mut callers = vec![Caller {
        role: "ADMIN",
        key: admin_key.clone(),
        allowed: shared.join("ok.txt"),
    }];
    for (name, role, allowed) in [
        ("olga", "OPERATOR", ops.join("ok.txt")),
        ("mallory", "USER", shared.join("ok.txt")),
        ("sam", "SERVICE", shared.join("ok.txt")),
    ] {
        env.run(&[
            "--server", &s, "auth", "users", "create", name, "--role", role,
        ])
        .ok();
        let key = env
            .run(&[
                "--server", &s, "--json", "auth", "keys", "create", "k", "--user", name,
            ])
            .ok()
            .json();
        callers.push(Caller {
            role,
            key: key["key"].as_str().unwrap().to_string(),
            allowed,
        });
    }

    let db = display(&home.join("gleitzeit.db"));
    let targets: Vec<(&str, String, &str)> = vec![
        ("credentials", display(&credentials), "GZ6010"),
        ("database", db.clone(), "GZ6010"),
        ("database journal", format!("{db}-wal"), "GZ6010"),
        ("config", display(&home.join("config.yaml")), "GZ6010"),
        ("/etc/shadow", "/etc/shadow".into(), "GZ6010"),
        ("/proc/self/environ", "/proc/self/environ".into(), "GZ6010"),
        (
            "../ escape from a root",
            format!(
                "{}/{}{}",
                display(&shared),
                "../".repeat(12),
                display(&elsewhere.join("secret.txt")).trim_start_matches('/')
            ),
            "GZ6010",
        ),
        (
            "symlink out of a root",
            display(&shared.join("link")),
            "GZ6010",
        ),
        (
            "NUL byte",
            format!("{}/ok\u{0}.txt", display(&shared)),
            "GZ6011",
        ),
        (
            "over-long",
            format!("{}/{}", display(&shared), "a/".repeat(2100)),
            "GZ6011",
        ),
        ("~user/", "~root/.bashrc".into(), "GZ6011"),
        ("Windows-style", "C:\\Windows\\win.ini".into(), "GZ6011"),
        ("URL", "file:///etc/passwd".into(), "GZ6011"),
        ("empty", String::new(), "GZ6011"),
    ];

    for caller in &callers {
        let python_allowed = matches!(caller.role, "ADMIN" | "OPERATOR");
        let mut tasks = Vec::new();
        let mut expected = Vec::new();
        for (t, (label, path, code)) in targets.iter().enumerate() {
            for (m, (method, params)) in path_methods(path).into_iter().enumerate() {
                if method.starts_with("python/") && !python_allowed {
                    continue;
                }
                let id = format!("t{t}m{m}");
                tasks.push(json!({"id": id, "method": method, "parameters": params, "on_error": "continue"}));
                expected.push((id, format!("{method} × {label}"), *code));
            }
        }
        // A path known only at run time, through a reference.
        tasks.push(json!({"id": "by_reference", "method": "read_file",
            "parameters": {"path": "${inputs.target}"}, "on_error": "continue"}));
        expected.push((
            "by_reference".into(),
            "read_file × reference to /etc/shadow".into(),
            "GZ6010",
        ));
        // Another role's root.
        let foreign = if caller.role == "OPERATOR" {
            shared.join("ok.txt")
        } else {
            ops.join("ok.txt")
        };
        if caller.role != "ADMIN" {
            tasks.push(json!({"id": "foreign_root", "method": "read_file",
                "parameters": {"path": display(&foreign)}, "on_error": "continue"}));
            expected.push((
                "foreign_root".into(),
                "read_file × another role's root".into(),
                "GZ6010",
            ));
        }
        // The control: the role's own root is readable, so refusals are the
        // policy's and not a broken setup.
        tasks.push(json!({"id": "allowed", "method": "read_file",
            "parameters": {"path": display(&caller.allowed)}, "on_error": "continue"}));
        let body = json!({"name": format!("attack {}", caller.role),
            "inputs": {"target": "/etc/shadow"}, "tasks": tasks});
        let (status, answer) = submit(&s, &caller.key, &body);
        assert_eq!(status, 201, "{}: {answer}", caller.role);
        let id = answer["workflow_id"].as_str().unwrap().to_string();
        let view = finished(&s, &caller.key, &id);
        let task = |id: &str| -> Value {
            view["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("no task {id} in {view}"))
        };
        let allowed = task("allowed");
        assert_eq!(allowed["state"], "completed", "{}: {allowed}", caller.role);
        assert!(
            allowed["result"]["content"]
                .as_str()
                .unwrap()
                .starts_with("a\n"),
            "{allowed}"
        );
        let mut wrong = Vec::new();
        for (id, what, code) in &expected {
            let t = task(id);
            if t["state"] != "failed" || t["error"]["code"] != *code {
                wrong.push(format!(
                    "{} {what}: {} {}",
                    caller.role, t["state"], t["error"]
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "not refused as expected:\n{}",
            wrong.join("\n")
        );
        let text = view.to_string();
        assert!(
            !text.contains(MARKER),
            "{}: a secret was read: {text}",
            caller.role
        );
        assert!(
            !text.contains(&admin_key[4..]),
            "{}: the admin key was read",
            caller.role
        );

        if !python_allowed {
            // Python is outside USER's and SERVICE's reach: refused whole at
            // submit, nothing stored.
            let before = workflow_count(&s, &caller.key);
            for (method, params) in path_methods(&display(&caller.allowed))
                .into_iter()
                .filter(|(m, _)| m.starts_with("python/"))
                .chain([(
                    "python/execute",
                    json!({"code": "result = open('/etc/passwd').read()"}),
                )])
            {
                let body = json!({"name": "py", "tasks": [
                    {"id": "fine", "method": "read_file", "parameters": {"path": display(&caller.allowed)}},
                    {"id": "steal", "method": method, "parameters": params},
                ]});
                let (status, answer) = submit(&s, &caller.key, &body);
                assert_eq!(status, 403, "{} {method}: {answer}", caller.role);
                assert_eq!(answer["code"], "GZ4003", "{answer}");
                let message = answer["message"].as_str().unwrap();
                assert!(
                    message.contains("`steal`") && message.contains(method),
                    "{message}"
                );
            }
            assert_eq!(
                workflow_count(&s, &caller.key),
                before,
                "a refused workflow was stored"
            );
        }
    }
}
