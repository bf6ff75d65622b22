//! `run --batch-folder` and `discover` through the real binary, on real files.

mod common;
use common::{llama_config, Env};
use serde_json::Value;
use std::path::Path;

/// 50 text files of 1..=50 words, plus one that is not text.
fn fifty_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=50 {
        let words = vec!["word"; i].join(" ");
        std::fs::write(dir.join(format!("doc{i:02}.txt")), words).unwrap();
    }
    std::fs::write(dir.join("corrupt.txt"), [0xff, 0xfe, 0x00, 0xc3, 0x28]).unwrap();
}

fn row<'a>(json: &'a Value, file: &str) -> &'a Value {
    json["files"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["file"] == file))
        .unwrap_or_else(|| panic!("no row for {file} in {json}"))
}

const COUNT_WORDS: &str =
    "result = len(open(inputs['file_path'], encoding='utf-8').read().split())";

#[test]
fn fifty_files_with_one_unreadable_all_others_complete() {
    let env = Env::new();
    let docs = env.path("docs");
    fifty_files(&docs);
    let run = env
        .run(&[
            "--json",
            "run",
            "--batch-folder",
            docs.to_str().unwrap(),
            "--pattern",
            "*.txt",
            "--method",
            "python/execute",
            "--code",
            COUNT_WORDS,
        ])
        .code(1);
    let json = run.json();
    assert_eq!(json["files"].as_array().unwrap().len(), 51, "{json}");
    assert_eq!(json["completed"], 50);
    assert_eq!(json["failed"], 1);
    let bad = row(&json, "corrupt.txt");
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UnicodeDecodeError"),
        "{bad}"
    );
    for i in [1, 17, 50] {
        let file = format!("doc{i:02}.txt");
        let good = row(&json, &file);
        assert_eq!(good["status"], "completed", "{good}");
        assert_eq!(good["output"], format!("{file}.result.json"));
        let written = std::fs::read_to_string(docs.join(format!("{file}.result.json"))).unwrap();
        assert_eq!(written.trim(), i.to_string(), "{file}");
    }
    assert!(!docs.join("corrupt.txt.result.json").exists());

    // The stored workflow has one task per file, named after it.
    let id = json["workflow_id"].as_str().unwrap();
    let get = env.run(&["--json", "get", id]).json();
    assert_eq!(get["tasks"].as_array().unwrap().len(), 51);
    assert_eq!(get["tasks"][0]["id"], "f001_corrupt_txt");

    // A second run does not take the first run's results for inputs, and the
    // human summary is a table with the failure's code and the output files.
    let again = env.run(&[
        "run",
        "--batch-folder",
        docs.to_str().unwrap(),
        "--pattern",
        "*.txt",
        "--method",
        "python/execute",
        "--code",
        COUNT_WORDS,
        "--quiet",
    ]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    let table = &again.stdout;
    assert!(table.starts_with("FILE"), "{table}");
    assert!(table.contains("doc07.txt    completed"), "{table}");
    assert!(table.contains("doc07.txt.result.json"), "{table}");
    assert!(table.contains("corrupt.txt  failed"), "{table}");
    assert!(
        table.contains("50 of 51 files completed, 1 failed"),
        "{table}"
    );
}

#[test]
fn out_folder_recursion_and_extensions() {
    let env = Env::new();
    let docs = env.path("notes");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("a.md"), "one two").unwrap();
    std::fs::write(docs.join("b.txt"), "three").unwrap();
    std::fs::write(docs.join("sub/c.md"), "four five six").unwrap();
    std::fs::write(docs.join("skip.csv"), "x,y").unwrap();
    let out = env.path("results");
    let json = env
        .run(&[
            "--json",
            "run",
            "--batch-folder",
            docs.to_str().unwrap(),
            "--extensions",
            ".md,.txt",
            "--recursive",
            "--method",
            "python/execute",
            "--code",
            "result = open(inputs['file_path']).read().upper()",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok()
        .json();
    let files: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["a.md", "b.txt", "sub/c.md"]);
    assert_eq!(
        std::fs::read_to_string(out.join("sub/c.md.result.txt")).unwrap(),
        "FOUR FIVE SIX"
    );
    assert!(
        !docs.join("a.md.result.txt").exists(),
        "--out keeps the inputs' folder clean"
    );

    // Without --recursive the subfolder is left out.
    let json = env
        .run(&[
            "--json",
            "run",
            "--batch-folder",
            docs.to_str().unwrap(),
            "--pattern",
            "*.md",
            "--method",
            "python/execute",
            "--code",
            "result = 1",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(json["files"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_batches_are_coded_errors_with_hints() {
    let env = Env::new();
    let docs = env.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("photo.png"), b"\x89PNG").unwrap();
    std::fs::write(docs.join("data.csv"), "a,b").unwrap();
    let dir = docs.to_str().unwrap();

    let run = env
        .run(&[
            "run",
            "--batch-folder",
            dir,
            "--pattern",
            "*.txt",
            "--prompt",
            "x",
        ])
        .code(2);
    assert!(run.stderr.contains("GZ3030"), "{}", run.stderr);
    assert!(
        run.stderr.contains("no files matching '*.txt'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("it holds 1 .csv, 1 .png"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("gleitzeit discover"), "{}", run.stderr);

    // A missing file or folder exits 3, like `run missing.yaml`.
    let run = env.run(&["run", "--batch-folder", "nowhere", "--prompt", "x"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("GZ5001"), "{}", run.stderr);

    let run = env.run(&["run", "--batch-folder", dir, "--method", "http/request"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot run `http/request` per file"),
        "{}",
        run.stderr
    );

    let run = env.run(&[
        "run",
        "--batch-folder",
        dir,
        "--extensions",
        ".csv",
        "--method",
        "python/execute",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("needs `code`"), "{}", run.stderr);

    let run = env.run(&[
        "run",
        "--batch-folder",
        dir,
        "--pattern",
        "[",
        "--prompt",
        "x",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not a valid glob"), "{}", run.stderr);

    let run = env.run(&["run", "--prompt", "Describe"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--prompt goes with"), "{}", run.stderr);
}

#[test]
fn text_batch_asks_the_real_model_about_each_file() {
    let env = Env::new();
    let config = llama_config(&env);
    let docs = env.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("rust.md"),
        "Rust is a systems programming language.",
    )
    .unwrap();
    std::fs::write(
        docs.join("tea.txt"),
        "Green tea is steamed, black tea is oxidised.",
    )
    .unwrap();
    std::fs::write(docs.join("broken.txt"), [0xff, 0xfe, 0xfd]).unwrap();
    // The seed's form: --type text --extensions .txt,.md (no prompt: a default one).
    let json = env
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "run",
            "--batch-folder",
            docs.to_str().unwrap(),
            "--type",
            "text",
            "--extensions",
            ".txt,.md",
            "--model",
            "llama3.2",
        ])
        .code(1)
        .json();
    assert_eq!(json["completed"], 2, "{json}");
    let broken = row(&json, "broken.txt");
    assert_eq!(broken["error"]["code"], "GZ5002", "{broken}");
    assert!(broken["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));
    for file in ["rust.md", "tea.txt"] {
        assert_eq!(row(&json, file)["status"], "completed");
        let answer = std::fs::read_to_string(docs.join(format!("{file}.result.txt"))).unwrap();
        assert!(!answer.trim().is_empty(), "{file}: empty answer");
    }
    // The file really went into the prompt: the stored task shows it with the prompt.
    let id = json["workflow_id"].as_str().unwrap();
    let get = env.run(&["--json", "get", id]).json();
    let task = get["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "f002_rust_md")
        .unwrap()
        .clone();
    assert!(
        task["record"]["usage"]["prompt_tokens"].as_u64().unwrap() > 10,
        "{task}"
    );
}

#[test]
fn discover_lists_types_and_suggests_batch_commands() {
    let env = Env::new();
    let dir = env.path("mixed");
    std::fs::create_dir_all(dir.join("deep")).unwrap();
    for (name, bytes) in [
        ("a.txt", &b"hello"[..]),
        ("b.md", b"# t"),
        ("c.png", b"\x89PNG...."),
        ("d.csv", b"x,y\n1,2"),
        ("deep/e.txt", b"deeper"),
        (".hidden", b"no"),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let run = env.run(&["discover", dir.to_str().unwrap()]).ok();
    let out = &run.stdout;
    assert!(out.contains(": 4 files"), "{out}");
    assert!(out.contains("text        2"), "{out}");
    assert!(out.contains(".md (1), .txt (1)"), "{out}");
    assert!(out.contains("image       1"), "{out}");
    assert!(out.contains("--type text --extensions .md,.txt"), "{out}");
    assert!(
        out.contains("--type vision --prompt \"Describe this image\""),
        "{out}"
    );
    assert!(out.contains("--method python/execute"), "{out}");

    let json = env
        .run(&["--json", "discover", dir.to_str().unwrap(), "--recursive"])
        .ok()
        .json();
    assert_eq!(json["files"], 5);
    assert_eq!(json["types"][0]["type"], "text");
    assert_eq!(json["types"][0]["files"], 3);

    let run = env.run(&["discover", "no/such/dir"]).code(3);
    assert!(run.stderr.contains("GZ5001"), "{}", run.stderr);
    let run = env
        .run(&["discover", dir.join("a.txt").to_str().unwrap()])
        .code(2);
    assert!(
        run.stderr.contains("is a file, not a folder"),
        "{}",
        run.stderr
    );
}
