//! Tests against the real system `python3`.

use super::*;
use serde_json::json;
use std::path::Path;

fn provider(workers: usize) -> PythonProvider {
    PythonProvider::new(PythonConfig {
        workers,
        ..PythonConfig::default()
    })
}

/// A call that may read any file: these tests are about Python; the file
/// guard has its own tests (and `python_paths_go_through_the_file_guard`).
fn ctx() -> CallContext {
    let mut ctx = CallContext::detached("t");
    ctx.files = FileGuard::under(&[PathBuf::from("/")]);
    ctx
}

async fn execute(p: &PythonProvider, params: Value) -> Result<Value, GzError> {
    p.call("python/execute", params, &ctx()).await
}

async fn code(p: &PythonProvider, code: &str) -> Result<Value, GzError> {
    execute(p, json!({ "code": code })).await
}

/// True once no process with this pid exists (a zombie counts as existing).
fn pid_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe {
        libc::kill(pid, 0) != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// True once the process is gone or a zombie (orphans may be reaped by an init
/// that is slow to do so; a zombie no longer runs).
fn pid_dead(pid: i32) -> bool {
    if pid_gone(pid) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_pid(path: &Path) -> i32 {
    let mut pid = 0;
    wait_until("the job wrote its pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    })
    .await;
    pid
}

async fn assert_pool_works(p: &PythonProvider) {
    let out = code(p, "result = 6 * 7").await.unwrap();
    assert_eq!(out["result"], 42);
}

#[tokio::test]
async fn python_execute_result_variable() {
    let p = provider(2);
    let out = code(
        &p,
        "x = 2\nresult = {'answer': x * 21, 'items': [1, 'a', None]}",
    )
    .await
    .unwrap();
    assert_eq!(
        out["result"],
        json!({"answer": 42, "items": [1, "a", null]})
    );
    assert_eq!(out["stdout"], "");
    assert_eq!(out["stderr"], "");
    assert!(out["duration_ms"].is_u64());
    p.shutdown().await;
}

#[tokio::test]
async fn python_stdout_is_the_result_without_result_variable() {
    let p = provider(1);
    let out = code(
        &p,
        "import sys\nprint('hello')\nprint('oops', file=sys.stderr)",
    )
    .await
    .unwrap();
    assert_eq!(out["result"], "hello");
    assert_eq!(out["stdout"], "hello\n");
    assert_eq!(out["stderr"], "oops\n");
    let out = code(&p, "x = 1").await.unwrap();
    assert_eq!(out["result"], Value::Null);
}

#[tokio::test]
async fn python_inputs_are_a_dict() {
    let p = provider(1);
    let out = execute(
        &p,
        json!({"code": "result = inputs['a'] + inputs['b']", "inputs": {"a": 2, "b": 3}}),
    )
    .await
    .unwrap();
    assert_eq!(out["result"], 5);
    let out = code(&p, "result = inputs").await.unwrap();
    assert_eq!(out["result"], json!({}));
    let err = execute(&p, json!({"code": "x = 1", "inputs": [1]}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameters);
}

#[tokio::test]
async fn python_unserialisable_result_becomes_repr() {
    let p = provider(1);
    let out = code(
        &p,
        "class Thing:\n    def __repr__(self):\n        return 'Thing()'\nresult = Thing()",
    )
    .await
    .unwrap();
    assert_eq!(out["result"], "Thing()");
    assert!(out["stderr"].as_str().unwrap().contains("repr()"), "{out}");
    let out = code(&p, "result = {'s': {1}, 'n': 1}").await.unwrap();
    assert_eq!(out["result"], json!({"s": "{1}", "n": 1}));
}

#[tokio::test]
async fn python_exception_carries_the_traceback() {
    let p = provider(1);
    let err = code(&p, "x = 1\ny = x / 0\n").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException);
    let traceback = err.details["traceback"].as_str().unwrap();
    assert!(traceback.contains("File \"<task>\", line 2"), "{traceback}");
    assert!(traceback.contains("y = x / 0"), "{traceback}");
    assert!(
        !traceback.contains("<string>"),
        "worker frames leak: {traceback}"
    );
    assert_eq!(
        err.message.lines().last(),
        Some("ZeroDivisionError: division by zero")
    );
    assert!(
        err.message
            .starts_with("ZeroDivisionError: division by zero\n"),
        "{}",
        err.message
    );
    assert_eq!(err.location.as_deref(), Some("<task>:2"));
    assert_eq!(err.details["type"], "ZeroDivisionError");
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_syntax_error() {
    let p = provider(1);
    let err = code(&p, "x = 1\ndef (:\n").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException);
    assert_eq!(err.details["type"], "SyntaxError");
    assert!(err.message.contains("SyntaxError"), "{}", err.message);
    assert_eq!(err.location.as_deref(), Some("<task>:2"));
}

#[tokio::test]
async fn python_system_exit() {
    let p = provider(1);
    let out = code(&p, "import sys\nprint('bye')\nsys.exit(0)")
        .await
        .unwrap();
    assert_eq!(out["result"], "bye");
    let out = code(&p, "import sys\nresult = 1\nsys.exit()")
        .await
        .unwrap();
    assert_eq!(out["result"], 1);
    let err = code(&p, "import sys\nsys.exit(2)").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException);
    assert!(err.message.contains("exit code 2"), "{}", err.message);
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_timeout_kills_the_worker() {
    let p = provider(1);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let started = Instant::now();
    let job = format!(
        "import os, subprocess\nopen({:?}, 'w').write(str(os.getpid()))\n\
         child = subprocess.Popen(['sleep', '100'])\nopen({:?}, 'w').write(str(child.pid))\nwhile True: pass",
        pidfile.to_str().unwrap(),
        dir.path().join("child").to_str().unwrap(),
    );
    let err = execute(&p, json!({"code": job, "timeout": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TaskTimeout);
    assert!(err.message.contains("after 1 s"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10));
    let worker = read_pid(&pidfile).await;
    let child = read_pid(&dir.path().join("child")).await;
    wait_until("the worker is reaped", || pid_gone(worker)).await;
    wait_until("the worker's subprocess is killed", || pid_dead(child)).await;
    assert_pool_works(&p).await;

    // The context's timeout works the same way.
    let mut context = ctx();
    context.timeout = Some(Duration::from_millis(500));
    let err = p
        .call(
            "python/execute",
            json!({"code": "while True: pass"}),
            &context,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TaskTimeout);
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_cancellation_kills_the_worker() {
    let p = Arc::new(provider(1));
    let context = ctx();
    let cancel = context.cancel.clone();
    let task = {
        let p = p.clone();
        tokio::spawn(async move {
            p.call(
                "python/execute",
                json!({"code": "while True: pass"}),
                &context,
            )
            .await
        })
    };
    // The scenario: the cancel reaches code that is already running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TaskCancelled);
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_dropped_call_kills_the_worker() {
    let p = Arc::new(provider(1));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let job = format!(
        "import os\nopen({:?}, 'w').write(str(os.getpid()))\nwhile True: pass",
        pidfile.to_str().unwrap()
    );
    let task = {
        let p = p.clone();
        tokio::spawn(async move { p.call("python/execute", json!({"code": job}), &ctx()).await })
    };
    let pid = read_pid(&pidfile).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_until("the abandoned worker is killed and reaped", || {
        pid_gone(pid)
    })
    .await;
    let out = code(&p, "import os\nresult = os.getpid()").await.unwrap();
    assert_ne!(out["result"], pid);
}

#[tokio::test]
async fn python_worker_crash_is_reported_and_replaced() {
    let p = provider(1);
    let err = code(
        &p,
        "import os, sys\nsys.stderr.flush()\nos.write(2, b'about to exit\\n')\nos._exit(3)",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonWorkerCrashed);
    assert_eq!(err.details["exit_code"], 3, "{err:?}");
    assert!(err.message.contains("exit status: 3"), "{}", err.message);
    assert!(err.message.contains("about to exit"), "{}", err.message);
    assert_pool_works(&p).await;

    let err = code(&p, "import ctypes\nctypes.string_at(0)")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonWorkerCrashed);
    assert_eq!(err.details["signal"], libc::SIGSEGV, "{err:?}");
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_memory_limit() {
    let p = provider(1);
    let err = execute(
        &p,
        json!({"code": "x = bytearray(2 * 1024 ** 3)", "memory_limit_mb": 256}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonMemoryLimit, "{err:?}");
    assert!(err.message.contains("256 MB"), "{}", err.message);
    // The per-job limit is lifted again afterwards.
    let out = code(&p, "x = bytearray(300 * 1024 ** 2)\nresult = len(x)")
        .await
        .unwrap();
    assert_eq!(out["result"], 300 * 1024 * 1024);
    // The pool-wide limit holds without a per-job one.
    let err = code(&p, "x = bytearray(2 * 1024 ** 3)").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonMemoryLimit);
    assert!(err.message.contains("1024 MB"), "{}", err.message);
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_low_level_output_does_not_corrupt_the_protocol() {
    let p = provider(1);
    let out = code(
        &p,
        "import os, sys\nos.system('echo corrupt')\nos.write(1, b'raw\\n')\nsys.__stdout__.write('x\\n')\n\
         sys.__stdout__.flush()\nprint('fine')\nresult = input.__name__",
    )
    .await
    .unwrap();
    assert_eq!(out["result"], "input");
    assert_eq!(out["stdout"], "fine\n");
    // Reading stdin sees end of file instead of the protocol.
    let err = code(&p, "input()").await.unwrap_err();
    assert_eq!(err.details["type"], "EOFError");
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_output_capture_is_bounded() {
    let p = provider(1);
    let out = code(&p, "print('x' * (3 * 1024 * 1024))\nresult = 1")
        .await
        .unwrap();
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.len() < 1024 * 1024 + 200, "{}", stdout.len());
    assert!(stdout.ends_with("truncated after 1048576 characters]\n"));
}

#[tokio::test]
async fn python_script_with_args() {
    let p = provider(1);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.py");
    std::fs::write(
        &script,
        "import sys\nresult = {'argv': sys.argv[1:], 'name': __name__, 'file': __file__, 'x': inputs.get('x')}\n",
    )
    .unwrap();
    let out = p
        .call(
            "python/script",
            json!({"file": script, "args": ["a", "b", 3], "inputs": {"x": 1}}),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(
        out["result"],
        json!({"argv": ["a", "b", "3"], "name": "__main__", "file": script.to_str().unwrap(), "x": 1})
    );

    let missing = dir.path().join("missing.py");
    let err = p
        .call("python/script", json!({"path": missing}), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FileNotFound);
    assert_eq!(err.code.as_str(), "GZ5001");
    assert!(
        err.message.contains(missing.to_str().unwrap()),
        "{}",
        err.message
    );

    // Relative paths resolve in the working directory, and tracebacks name the file.
    std::fs::write(
        dir.path().join("fail.py"),
        "def f():\n    raise ValueError('bad')\nf()\n",
    )
    .unwrap();
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        working_dir: Some(dir.path().to_path_buf()),
        ..PythonConfig::default()
    });
    let err = p
        .call("python/script", json!({"file": "fail.py"}), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException);
    assert!(
        err.details["traceback"]
            .as_str()
            .unwrap()
            .contains("raise ValueError('bad')"),
        "{err:?}"
    );
    assert!(err.location.unwrap().ends_with("fail.py:2"));
}

#[tokio::test]
async fn python_function_from_a_module_file() {
    let p = provider(1);
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("mathy.py");
    std::fs::write(
        &module,
        "def add(a, b, scale=1):\n    print('adding')\n    return (a + b) * scale\n",
    )
    .unwrap();
    let out = p
        .call(
            "python/function",
            json!({"module": module, "function": "add", "args": [1, 2], "kwargs": {"scale": 10}}),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out["result"], 30);
    assert_eq!(out["stdout"], "adding\n");

    let out = p
        .call(
            "python/function",
            json!({"module": "json", "function": "dumps", "args": [[1, 2]]}),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out["result"], "[1, 2]");

    let err = p
        .call(
            "python/function",
            json!({"module": module, "function": "nope"}),
            &ctx(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameters);
    let err = p
        .call(
            "python/function",
            json!({"module": dir.path().join("no.py"), "function": "f"}),
            &ctx(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FileNotFound);
    let err = p
        .call(
            "python/function",
            json!({"module": "no_such_module_xyz", "function": "f"}),
            &ctx(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException);
    assert_eq!(err.details["type"], "ModuleNotFoundError");
}

#[tokio::test]
async fn python_missing_interpreter() {
    let p = PythonProvider::new(PythonConfig {
        interpreter: PathBuf::from("/nonexistent/bin/python3"),
        ..PythonConfig::default()
    });
    let err = p.check().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonNotFound);
    assert!(err.hint_text().contains("python.interpreter"));
    assert!(err.hint_text().contains("GLEITZEIT_PYTHON"));
    let err = code(&p, "result = 1").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonNotFound);
    assert!(
        err.message.contains("/nonexistent/bin/python3"),
        "{}",
        err.message
    );

    // Something that runs but is no python.
    let p = PythonProvider::new(PythonConfig {
        interpreter: PathBuf::from("false"),
        ..PythonConfig::default()
    });
    let err = code(&p, "result = 1").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonNotFound);
}

#[tokio::test]
async fn python_check_reports_the_version() {
    let p = provider(2);
    let version = p.check().await.unwrap();
    assert!(version.starts_with("3."), "{version}");
}

#[tokio::test]
async fn python_many_concurrent_jobs() {
    let p = Arc::new(provider(4));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                execute(
                    &p,
                    json!({"code": "result = inputs['i'] * 2", "inputs": {"i": i}}),
                )
                .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out["result"], json!(i * 2));
    }
}

#[tokio::test]
async fn python_jobs_do_not_share_globals() {
    let p = provider(1);
    code(&p, "leak = 1\nimport os\nos.chdir('/')")
        .await
        .unwrap();
    let out = code(
        &p,
        "import os\nresult = ['leak' in globals(), os.getcwd() == '/']",
    )
    .await
    .unwrap();
    assert_eq!(
        out["result"],
        json!([false, std::env::current_dir().unwrap() == Path::new("/")])
    );
}

#[tokio::test]
async fn python_shutdown_kills_workers() {
    let p = provider(2);
    let out = code(&p, "import os\nresult = os.getpid()").await.unwrap();
    let pid = out["result"].as_i64().unwrap() as i32;
    p.shutdown().await;
    wait_until("the worker is gone", || pid_gone(pid)).await;
    let err = code(&p, "result = 1").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderUnavailable);
}

#[tokio::test]
async fn python_bad_parameters() {
    let p = provider(1);
    let err = execute(&p, json!({})).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameters);
    let err = execute(&p, json!({"code": "x = 1", "timeout": "soon"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParameters);
    let err = p.call("python/nope", json!({}), &ctx()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderUnavailable);
}

/// Ad-hoc throughput measurement: `cargo test -p gleitzeit-providers --release
/// python_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn python_throughput() {
    let p = Arc::new(provider(2));
    p.check().await.unwrap();
    assert_pool_works(&p).await;
    let jobs = 5000;
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in 0..jobs / 8 {
                    let out = execute(
                        &p,
                        json!({"code": "result = inputs['i'] + 1", "inputs": {"i": i}}),
                    )
                    .await
                    .unwrap();
                    assert_eq!(out["result"], json!(i + 1));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    println!("{jobs} jobs in {:?}: {rate:.0} jobs/s", started.elapsed());
}

// ---------------------------------------------------------------------------
// Sandbox limits (SECURITY.md). The memory bomb and the infinite loop are
// `python_memory_limit` and `python_timeout_kills_the_worker` above.

fn is_root() -> bool {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn python_fork_bomb_is_contained() {
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        max_processes: 40,
        ..PythonConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // Bounded (300 forks) so the test is safe where the limit does not apply.
    let job = format!(
        "import os, time\n\
         for i in range(300):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    \
         with open({:?}, 'a') as f:\n        f.write('%d\\n' % pid)\n\
         time.sleep(60)\n",
        pids.to_str().unwrap()
    );
    let err = execute(&p, json!({"code": job, "timeout": 3}))
        .await
        .unwrap_err();
    let forked = read_pids(&pids);
    match err.code {
        // RLIMIT_NPROC does not bind root: the timeout kills the whole group.
        ErrorCode::TaskTimeout => assert!(is_root(), "{err:?}"),
        // fork failed (the process limit, or a container's pids limit).
        ErrorCode::PythonException => {
            assert!(err.message.contains("BlockingIOError"), "{}", err.message);
            let hint = err.hint.as_deref().unwrap_or("");
            assert!(hint.contains("max_processes"), "{err:?}");
            if !is_root() {
                assert!(forked.len() <= 40, "{} processes started", forked.len());
            }
            // The worker survived the exception; its children still sleep in
            // its process group. Shutting the pool down kills the group.
            p.shutdown().await;
        }
        _ => panic!("{err:?}"),
    }
    for pid in forked {
        wait_until("a forked child is killed", || pid_dead(pid)).await;
    }
}

#[tokio::test]
async fn python_file_size_is_limited() {
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        max_file_size_mb: 1,
        ..PythonConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let job = format!(
        "with open({:?}, 'wb') as f:\n    for i in range(8):\n        f.write(b'x' * (1024 * 1024))\n",
        big.to_str().unwrap()
    );
    let err = execute(&p, json!({"code": job})).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PythonException, "{err:?}");
    assert!(err.message.contains("File too large"), "{}", err.message);
    assert!(
        err.hint
            .as_deref()
            .unwrap_or("")
            .contains("max_file_size_mb"),
        "{err:?}"
    );
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(size <= 1024 * 1024, "{size} bytes written");
    // Small files are fine, and the worker is still usable.
    let small = dir.path().join("small");
    let job = format!("open({:?}, 'w').write('ok')", small.to_str().unwrap());
    execute(&p, json!({"code": job})).await.unwrap();
    assert_pool_works(&p).await;
}

#[tokio::test]
async fn python_environment_is_scrubbed() {
    // Set before the provider starts its workers. Unique names: tests share
    // the process environment.
    std::env::set_var("GLEITZEIT_SANDBOX_TEST_TOKEN", "s3cret");
    std::env::set_var("SANDBOX_TEST_API_KEY", "sk-s3cret");
    std::env::set_var("LC_SANDBOX_TEST_KEY", "s3cret");
    let p = provider(1);
    let out = code(
        &p,
        "import os\nresult = {'env': dict(os.environ), 'proc': open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace')}",
    )
    .await
    .unwrap();
    let env = out["result"]["env"].as_object().unwrap();
    // Whatever was inherited is on the list; the interpreter (or a wrapper such
    // as pyenv's shim) may add variables of its own.
    for (name, value) in env {
        let inherited = std::env::var(name).is_ok_and(|v| Some(v.as_str()) == value.as_str());
        assert!(
            !inherited || WORKER_ENV.contains(&name.as_str()) || name.starts_with("LC_"),
            "{name} was passed to the worker"
        );
        assert!(!value.as_str().unwrap_or("").contains("s3cret"), "{name}");
    }
    assert!(!env.contains_key("GLEITZEIT_SANDBOX_TEST_TOKEN"));
    assert!(!env.contains_key("SANDBOX_TEST_API_KEY"));
    assert!(!env.contains_key("LC_SANDBOX_TEST_KEY"));
    let proc_env = out["result"]["proc"].as_str().unwrap();
    assert!(!proc_env.contains("s3cret"), "{proc_env}");
    if std::env::var_os("PATH").is_some() {
        assert!(env.contains_key("PATH"));
    }
}

/// The store's database is not handed to tasks: no variable names it, the
/// workers run in their own directory, and in their own namespaces the file
/// cannot be read even by its absolute path (its neighbours can).
#[tokio::test]
async fn python_task_cannot_read_the_store() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("gleitzeit.db");
    std::fs::write(&db, b"SQLite format 3\0 secret").unwrap();
    std::fs::write(data.path().join("notes.txt"), b"readable").unwrap();
    std::env::set_var("GLEITZEIT_SANDBOX_TEST_DB", &db);
    let work = tempfile::tempdir().unwrap();
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        working_dir: Some(work.path().to_path_buf()),
        isolation: Isolation::Namespaces,
        hidden: vec![db.clone()],
        ..PythonConfig::default()
    });
    let out = code(
        &p,
        &format!(
            "import os\nhits = [k for k, v in os.environ.items() if 'gleitzeit.db' in v]\n\
             try:\n    leaked = open({db:?}, 'rb').read().decode('latin-1')\nexcept OSError as e:\n    leaked = type(e).__name__\n\
             result = {{'hits': hits, 'cwd': os.getcwd(), 'here': os.listdir('.'), 'leaked': leaked, \
             'neighbour': open({notes:?}).read()}}",
            db = db.display().to_string(),
            notes = data.path().join("notes.txt").display().to_string(),
        ),
    )
    .await
    .unwrap();
    let r = &out["result"];
    assert_eq!(r["hits"], json!([]));
    assert_eq!(r["here"], json!([]));
    assert_eq!(r["leaked"], "PermissionError", "{r}");
    assert_eq!(r["neighbour"], "readable");
    assert_eq!(
        std::fs::canonicalize(r["cwd"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(work.path()).unwrap()
    );
    // Outside the workers nothing changed.
    assert!(std::fs::read(&db).unwrap().ends_with(b"secret"));
}

/// Where namespaces cannot be made, `namespaces` refuses to start workers
/// with a hint, and `auto` runs them without (and says so in the log).
#[tokio::test]
async fn python_isolation_that_cannot_be_made() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("gleitzeit.db");
    std::fs::write(&db, b"secret").unwrap();
    let broken = || {
        // A directory as the veil over a file: the mount fails as a refused
        // namespace would.
        isolation::Plan::new(std::slice::from_ref(&db), Some(data.path()), Network::Host)
            .map(Arc::new)
    };
    let strict = PythonProvider::new(PythonConfig {
        workers: 1,
        isolation: Isolation::Namespaces,
        hidden: vec![db.clone()],
        ..PythonConfig::default()
    });
    *locked(&strict.pool.plan_override) = broken();
    let err = code(&strict, "result = 1").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderUnavailable, "{}", err.message);
    assert!(err.message.contains("namespaces"), "{}", err.message);
    assert!(err.hint.unwrap().contains("isolation"));

    let relaxed = PythonProvider::new(PythonConfig {
        workers: 1,
        isolation: Isolation::Auto,
        hidden: vec![db.clone()],
        ..PythonConfig::default()
    });
    *locked(&relaxed.pool.plan_override) = broken();
    let out = code(&relaxed, "result = 1").await.unwrap();
    assert_eq!(out["result"], 1);
    assert!(relaxed.pool.plan().unwrap().is_none(), "fell back for good");

    // Under `namespaces`, a veil that could not be made stops workers too.
    let mut no_veil = PythonProvider::new(PythonConfig {
        workers: 1,
        isolation: Isolation::Namespaces,
        hidden: vec![db.clone()],
        ..PythonConfig::default()
    });
    Arc::get_mut(&mut no_veil.pool).unwrap().veil = Err("no temporary directory".into());
    let err = code(&no_veil, "result = 1").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderUnavailable, "{}", err.message);
    assert!(
        err.message.contains("no temporary directory"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn python_paths_go_through_the_file_guard() {
    let p = provider(1);
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("job.py"), "result = 1").unwrap();
    std::fs::write(dir.path().join("outside.py"), "def f():\n    return 1\n").unwrap();
    let mut ctx = CallContext::detached("t");
    ctx.files = FileGuard::under(std::slice::from_ref(&inside));
    let ok = p
        .call(
            "python/script",
            json!({"file": inside.join("job.py")}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(ok["result"], 1);
    for (method, params) in [
        (
            "python/script",
            json!({"file": dir.path().join("outside.py")}),
        ),
        (
            "python/script",
            json!({"file": inside.join("../outside.py")}),
        ),
        (
            "python/function",
            json!({"module": dir.path().join("outside.py"), "function": "f"}),
        ),
    ] {
        let error = p.call(method, params.clone(), &ctx).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::FileAccessDenied, "{method} {params}");
    }
    let error = p
        .call(
            "python/script",
            json!({"file": "job.py"}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::FileAccessDenied,
        "a detached call may read no file"
    );
    p.shutdown().await;
}

/// What a task sees when it connects to a listener of the test process on
/// 127.0.0.1, and whether its own loopback works.
async fn reach_host_port(network: Network) -> Result<Value, GzError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        network,
        ..PythonConfig::default()
    });
    let code = format!(
        "import socket\n\
         def reach(port):\n\
         \x20   try:\n\
         \x20       socket.create_connection(('127.0.0.1', port), timeout=5).close()\n\
         \x20       return 'connected'\n\
         \x20   except OSError as e:\n\
         \x20       return type(e).__name__\n\
         own = socket.socket()\n\
         own.bind(('127.0.0.1', 0))\n\
         own.listen(1)\n\
         result = {{'host': reach({port}), 'own': reach(own.getsockname()[1])}}\n"
    );
    let outcome = p
        .call("python/execute", json!({"code": code}), &ctx())
        .await;
    p.shutdown().await;
    drop(listener);
    outcome
}

#[tokio::test]
async fn python_network_host_reaches_this_machine() {
    let record = reach_host_port(Network::Host).await.unwrap();
    assert_eq!(
        record["result"],
        json!({"host": "connected", "own": "connected"})
    );
}

#[tokio::test]
async fn python_network_none_reaches_only_its_own_loopback() {
    match reach_host_port(Network::None).await {
        Ok(record) => assert_eq!(
            record["result"],
            json!({"host": "ConnectionRefusedError", "own": "connected"}),
            "a task in its own network namespace must not reach the host's 127.0.0.1"
        ),
        // Where namespaces are not allowed, no worker runs at all: never
        // one with the host's network.
        Err(error) => {
            assert_eq!(error.code, ErrorCode::ProviderUnavailable, "{error}");
            assert_eq!(error.details["isolation"], true, "{error}");
            assert!(
                error.hint_text().contains("network"),
                "{}",
                error.hint_text()
            );
        }
    }
}

#[tokio::test]
async fn python_network_none_without_namespaces_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let p = PythonProvider::new(PythonConfig {
        workers: 1,
        network: Network::None,
        ..PythonConfig::default()
    });
    // A plan whose mount fails, as a refused namespace would: `auto` must
    // not fall back to the host's network.
    let db = data.path().join("db");
    std::fs::write(&db, b"x").unwrap();
    *locked(&p.pool.plan_override) =
        isolation::Plan::new(std::slice::from_ref(&db), Some(data.path()), Network::None)
            .map(Arc::new);
    let error = p
        .call("python/execute", json!({"code": "result = 1"}), &ctx())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ProviderUnavailable, "{error}");
    p.shutdown().await;
}
