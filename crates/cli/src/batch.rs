//! Folder batches (seed 000): `run --batch-folder DIR` runs one task per matching
//! file as one stored workflow; `discover DIR` reads folders the same way.
//!
//! Every file is its own task with `on_error: continue`, so one unreadable file
//! is reported in the summary while the others complete. Results are written
//! next to the inputs (`notes.txt` → `notes.txt.result.txt`) or under `--out`.

use crate::context::Context;
use crate::launch::{default_model, drive, single_task};
use crate::output::{self, format_ms, Paint};
use clap::Args;
use gleitzeit_core::{ErrorCode, GzError, OnError, TaskState, Workflow};
use gleitzeit_store::TaskRecord;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Output files carry this marker so a second run over the same folder does
/// not take the first run's results for inputs.
const RESULT_MARKER: &str = ".result.";

/// The flags of `run --batch-folder DIR`: which files it takes and what it
/// does with each.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// Which files a batch takes: a glob on the file name (repeatable), e.g. '*.md'
    #[arg(long, value_name = "GLOB", requires = "batch_folder")]
    pub pattern: Vec<String>,
    /// Which files a batch takes: extensions, e.g. .txt,.md
    #[arg(long, value_name = "EXTS", requires = "batch_folder")]
    pub extensions: Vec<String>,
    /// Batch type: text files go into the prompt, vision sends images
    #[arg(
        long = "type",
        value_enum,
        value_name = "TYPE",
        requires = "batch_folder"
    )]
    pub kind: Option<FileKind>,
    /// Take files from subfolders too
    #[arg(long, short = 'r', requires = "batch_folder")]
    pub recursive: bool,
    /// Batch method instead of an LLM call: python/execute, python/script, python/function
    #[arg(long, value_name = "METHOD", requires = "batch_folder")]
    pub method: Option<String>,
    /// Python code for --method python/execute; the file is inputs['file_path']
    #[arg(long, value_name = "CODE", requires = "batch_folder")]
    pub code: Option<String>,
    /// A parameter of every batch task as KEY=VALUE (JSON when it parses), e.g. module=tools.py
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "batch_folder")]
    pub params: Vec<String>,
    /// Write batch results under this folder instead of next to the inputs
    #[arg(long, value_name = "DIR", requires = "batch_folder")]
    pub out: Option<PathBuf>,
}

/// What `run --batch-folder` shares with the other ways of `run`.
pub struct BatchRun {
    /// The question for every file.
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub system: Option<String>,
    pub ephemeral: bool,
    pub quiet: bool,
    pub watch: bool,
    pub no_cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum FileKind {
    Text,
    #[value(alias = "image")]
    Vision,
    #[value(skip)]
    Data,
    #[value(skip)]
    Code,
    #[value(skip)]
    Other,
}

impl FileKind {
    pub fn of(path: &Path) -> FileKind {
        let ext = extension(path);
        match ext.as_str() {
            "txt" | "md" | "markdown" | "rst" | "log" | "html" | "htm" | "xml" | "tex" | "org"
            | "adoc" => FileKind::Text,
            "png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" => FileKind::Vision,
            "csv" | "tsv" | "json" | "jsonl" | "ndjson" | "yaml" | "yml" | "toml" | "parquet"
            | "xlsx" | "xls" => FileKind::Data,
            "py" | "rs" | "js" | "ts" | "go" | "java" | "c" | "h" | "cpp" | "hpp" | "sh" | "rb"
            | "sql" => FileKind::Code,
            _ => FileKind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FileKind::Text => "text",
            FileKind::Vision => "image",
            FileKind::Data => "data",
            FileKind::Code => "code",
            FileKind::Other => "other",
        }
    }
}

pub fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Regular files under `dir` (hidden entries and earlier results left out),
/// sorted by path. Symlinked directories are not followed, so a link loop
/// cannot trap the walk.
pub fn walk(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, GzError> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::FileNotFound
        } else {
            ErrorCode::FileUnreadable
        };
        GzError::new(
            code,
            format!("folder {} cannot be read: {e}", dir.display()),
        )
        .at(dir.display().to_string())
        .with_hint("Give the path of an existing folder.")
    })?;
    if !meta.is_dir() {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("{} is a file, not a folder", dir.display()),
        )
        .at(dir.display().to_string())
        .with_hint("To run one file, use `gleitzeit run FILE.yaml` or `--text`/`--vision`."));
    }
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| {
            GzError::new(
                ErrorCode::FileUnreadable,
                format!("cannot list {}: {e}", current.display()),
            )
            .at(current.display().to_string())
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.contains(RESULT_MARKER) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if recursive {
                    pending.push(entry.path());
                }
            } else if file_type.is_file() || file_type.is_symlink() {
                // A dangling link stays in: the run reports it rather than hiding it.
                if file_type.is_symlink() && entry.path().is_dir() {
                    continue;
                }
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Which files a batch takes: `--pattern` globs, else `--extensions`, else the
/// extensions of the batch's type.
struct Selection {
    patterns: Vec<(String, globset::GlobMatcher)>,
    extensions: Vec<String>,
    kind: FileKind,
}

impl Selection {
    fn new(args: &BatchArgs, kind: FileKind) -> Result<Selection, GzError> {
        let mut patterns = Vec::new();
        for pattern in &args.pattern {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    GzError::new(
                        ErrorCode::InvalidArgument,
                        format!("--pattern `{pattern}` is not a valid glob: {e}"),
                    )
                    .with_hint(
                        "Use shell-style globs such as '*.txt', 'report-??.md' or '*.{md,txt}'.",
                    )
                })?;
            patterns.push((pattern.clone(), glob.compile_matcher()));
        }
        let extensions = args
            .extensions
            .iter()
            .flat_map(|list| list.split(','))
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        Ok(Selection {
            patterns,
            extensions,
            kind,
        })
    }

    fn takes(&self, relative: &Path) -> bool {
        if !self.patterns.is_empty() {
            let name = relative.file_name().map(Path::new).unwrap_or(relative);
            return self.patterns.iter().any(|(text, glob)| {
                // A pattern without a slash matches the file name at any depth.
                if text.contains('/') {
                    glob.is_match(relative)
                } else {
                    glob.is_match(name)
                }
            });
        }
        if !self.extensions.is_empty() {
            return self.extensions.contains(&extension(relative));
        }
        FileKind::of(relative) == self.kind
    }

    fn describe(&self) -> String {
        if !self.patterns.is_empty() {
            let list: Vec<String> = self
                .patterns
                .iter()
                .map(|(p, _)| format!("'{p}'"))
                .collect();
            format!("matching {}", list.join(" or "))
        } else if !self.extensions.is_empty() {
            let list: Vec<String> = self.extensions.iter().map(|e| format!(".{e}")).collect();
            format!("with extension {}", list.join(", "))
        } else {
            format!("of type {}", self.kind.label())
        }
    }
}

/// What each file's task does.
enum Action {
    Llm {
        method: &'static str,
        model: String,
        prompt: String,
        system: Option<String>,
    },
    Python {
        method: String,
        params: Map<String, Value>,
    },
}

impl Action {
    fn new(args: &BatchArgs, run: &BatchRun, kind: FileKind) -> Result<Action, GzError> {
        let mut params = Map::new();
        for pair in &args.params {
            let (key, value) = gleitzeit_core::parse::parse_input_override(pair)?;
            params.insert(key, value);
        }
        if let Some(code) = &args.code {
            params.insert("code".into(), Value::String(code.clone()));
        }
        match args.method.as_deref() {
            None | Some("llm/chat") | Some("llm/vision") | Some("llm/generate") => {
                let vision = kind == FileKind::Vision || args.method.as_deref() == Some("llm/vision");
                let method = match args.method.as_deref() {
                    Some("llm/generate") => "llm/generate",
                    _ if vision => "llm/vision",
                    _ => "llm/chat",
                };
                let prompt = run.prompt.clone().unwrap_or_else(|| {
                    if vision { "Describe this image." } else { "Summarize this document." }.into()
                });
                Ok(Action::Llm {
                    method,
                    model: run.model.clone().unwrap_or_else(|| default_model(vision)),
                    prompt,
                    system: run.system.clone(),
                })
            }
            Some(method @ ("python/execute" | "python/script" | "python/function")) => {
                let needs = match method {
                    "python/execute" => ("code", "--code 'result = len(open(inputs[\"file_path\"]).read())'"),
                    "python/script" => ("file", "--param file=process.py"),
                    _ => ("module", "--param module=tools.py --param function=handle"),
                };
                if !params.contains_key(needs.0) {
                    return Err(GzError::new(
                        ErrorCode::InvalidArgument,
                        format!("a batch with --method {method} needs `{}`", needs.0),
                    )
                    .with_hint(format!("e.g. {}; each task gets the file as inputs['file_path'].", needs.1)));
                }
                Ok(Action::Python { method: method.to_string(), params })
            }
            Some(other) => Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("--batch-folder cannot run `{other}` per file"),
            )
            .with_hint("Use --prompt (an LLM call per file, --type vision for images) or --method python/execute|python/script|python/function; for anything else write a workflow with `for_each`.")),
        }
    }

    fn task(&self, index: usize, relative: &Path, absolute: &Path) -> gleitzeit_core::TaskSpec {
        let path = absolute.display().to_string();
        let (method, params) = match self {
            Action::Llm {
                method,
                model,
                prompt,
                system,
            } => {
                let mut params = Map::new();
                params.insert("model".into(), model.clone().into());
                params.insert("prompt".into(), prompt.clone().into());
                if let Some(system) = system {
                    params.insert("system".into(), system.clone().into());
                }
                let key = if *method == "llm/vision" {
                    "images"
                } else {
                    "files"
                };
                params.insert(key.into(), json!([path]));
                (method.to_string(), params)
            }
            Action::Python { method, params } => {
                let mut params = params.clone();
                let mut inputs = match params.remove("inputs") {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                inputs.insert("file_path".into(), path.clone().into());
                inputs.insert("file_name".into(), relative.display().to_string().into());
                params.insert("inputs".into(), Value::Object(inputs));
                if method != "python/execute" && !params.contains_key("args") {
                    params.insert("args".into(), json!([path]));
                }
                (method.clone(), params)
            }
        };
        let mut task = single_task(&task_id(index, relative), &method, params);
        task.name = Some(relative.display().to_string());
        task.on_error = OnError::Continue;
        task
    }
}

/// `f007_notes_txt`: stable, unique (the index) and still readable in `get`.
fn task_id(index: usize, relative: &Path) -> String {
    let stem: String = relative
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("f{:03}_{}", index + 1, stem.trim_matches('_'))
}

fn kind_of(args: &BatchArgs) -> FileKind {
    match (args.kind, args.method.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some("llm/vision")) => FileKind::Vision,
        _ => FileKind::Text,
    }
}

pub async fn run_batch(
    ctx: &Context,
    folder: &Path,
    args: &BatchArgs,
    run: &BatchRun,
) -> Result<u8, GzError> {
    let kind = kind_of(args);
    let selection = Selection::new(args, kind)?;
    let action = Action::new(args, run, kind)?;
    let root = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let all = walk(&root, args.recursive)?;
    let files: Vec<PathBuf> = all
        .iter()
        .filter(|path| selection.takes(path.strip_prefix(&root).unwrap_or(path)))
        .cloned()
        .collect();
    if files.is_empty() {
        return Err(no_matches(folder, &selection, &all, &root));
    }
    let out_dir = args.out.as_ref().map(|out| out.to_path_buf());
    if let Some(out) = &out_dir {
        std::fs::create_dir_all(out).map_err(|e| {
            GzError::new(
                ErrorCode::FileUnreadable,
                format!("cannot create the output folder {}: {e}", out.display()),
            )
            .at(out.display().to_string())
        })?;
    }
    let relatives: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap_or(f).to_path_buf())
        .collect();
    let workflow = Workflow {
        name: format!("batch {}", folder.display()),
        description: Some(format!("{} files {}", files.len(), selection.describe())),
        inputs: Map::new(),
        tasks: files
            .iter()
            .zip(&relatives)
            .enumerate()
            .map(|(i, (absolute, relative))| action.task(i, relative, absolute))
            .collect(),
        outputs: Default::default(),
        budget: None,
        triggers: Vec::new(),
        trigger: None,
        // The folder named on the command line is readable as well as the
        // working directory and `files.roots`.
        access: Some({
            let mut grant = ctx.local_files();
            grant.roots.push(root.clone());
            grant
        }),
    };
    if !ctx.global.json && !run.quiet {
        eprintln!(
            "Batch: {} files {} in {}",
            files.len(),
            selection.describe(),
            folder.display()
        );
    }
    let store = ctx.open_store(run.ephemeral).await?;
    let mut runtime = ctx.runtime(store).await?;
    if run.no_cache {
        runtime = runtime.without_cache();
    }
    let id = runtime
        .submit(workflow, Some(folder.display().to_string()))
        .await?;
    let (outcome, interrupted) =
        drive(ctx.global.json, &runtime, &id, run.quiet, run.watch).await?;
    runtime.registry().shutdown().await;

    let rows: Vec<Row> = outcome
        .tasks
        .iter()
        .zip(&relatives)
        .zip(&files)
        .map(|((task, relative), absolute)| {
            Row::finish(task, relative, absolute, &root, out_dir.as_deref())
        })
        .collect();
    let failed = rows.iter().filter(|r| r.status != "completed").count();
    if ctx.global.json {
        let list: Vec<Value> = rows.iter().map(Row::json).collect();
        println!(
            "{}",
            json!({
                "workflow_id": id,
                "state": outcome.state.as_str(),
                "files": list,
                "completed": rows.len() - failed,
                "failed": failed,
            })
        );
    } else {
        print!("{}", table(&rows, &Paint(output::color_stdout())));
        println!(
            "{} of {} files completed{} — workflow {id}",
            rows.len() - failed,
            rows.len(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
    }
    Ok(if interrupted {
        130
    } else if failed > 0 {
        output::EXIT_WORKFLOW_FAILED
    } else {
        output::EXIT_OK
    })
}

fn no_matches(folder: &Path, selection: &Selection, all: &[PathBuf], root: &Path) -> GzError {
    let mut by_ext: BTreeMap<String, usize> = BTreeMap::new();
    for path in all {
        *by_ext
            .entry(extension(path.strip_prefix(root).unwrap_or(path)))
            .or_default() += 1;
    }
    let held = if by_ext.is_empty() {
        "it holds no files".to_string()
    } else {
        let list: Vec<String> = by_ext
            .iter()
            .take(6)
            .map(|(ext, n)| {
                if ext.is_empty() {
                    format!("{n} without extension")
                } else {
                    format!("{n} .{ext}")
                }
            })
            .collect();
        format!("it holds {}", list.join(", "))
    };
    GzError::new(
        ErrorCode::BatchNoFiles,
        format!("no files {} in {}; {held}", selection.describe(), folder.display()),
    )
    .at(folder.display().to_string())
    .with_hint(format!(
        "Change --pattern/--extensions/--type (add --recursive for subfolders); `gleitzeit discover {}` lists what the folder holds.",
        folder.display()
    ))
}

/// One line of the summary: a file, how its task ended, where its result went.
struct Row {
    file: String,
    status: &'static str,
    duration_ms: Option<i64>,
    output: Option<String>,
    error: Option<GzError>,
}

impl Row {
    fn finish(
        task: &TaskRecord,
        relative: &Path,
        absolute: &Path,
        root: &Path,
        out: Option<&Path>,
    ) -> Row {
        let duration_ms = task.started_ms.zip(task.finished_ms).map(|(s, f)| f - s);
        let mut row = Row {
            file: relative.display().to_string(),
            status: task.state.as_str(),
            duration_ms,
            output: None,
            error: task.error.clone(),
        };
        if task.state != TaskState::Completed {
            return row;
        }
        let (content, ext) = match task.result.as_ref().map(result_text) {
            Some((text, ext)) => (text, ext),
            None => return row,
        };
        let target = match out {
            Some(out) => out.join(relative),
            None => absolute.to_path_buf(),
        };
        let name = format!(
            "{}{RESULT_MARKER}{ext}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let target = target.with_file_name(name);
        let written = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&target, content));
        match written {
            Ok(()) => {
                let shown = target
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or(target);
                row.output = Some(shown.display().to_string());
            }
            Err(e) => {
                row.status = "unwritten";
                row.error = Some(
                    GzError::new(
                        ErrorCode::FileUnreadable,
                        format!("cannot write the result to {}: {e}", target.display()),
                    )
                    .at(target.display().to_string()),
                );
            }
        }
        row
    }

    fn json(&self) -> Value {
        json!({
            "file": self.file,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "error": self.error.as_ref().map(output::json_error),
        })
    }
}

/// The text worth keeping from a result: an LLM's response, a Python or
/// function result (text as is, anything else as JSON).
fn result_text(result: &Value) -> (String, &'static str) {
    let inner = result
        .get("response")
        .or_else(|| result.get("result"))
        .unwrap_or(result);
    match inner {
        Value::String(text) => (text.clone(), "txt"),
        other => (
            serde_json::to_string_pretty(other).unwrap_or_default() + "\n",
            "json",
        ),
    }
}

fn table(rows: &[Row], paint: &Paint) -> String {
    let width = rows
        .iter()
        .map(|r| r.file.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let mut text = paint.bold(&format!(
        "{:<width$}  {:<10}  {:>8}  OUTPUT\n",
        "FILE", "STATUS", "DURATION"
    ));
    for row in rows {
        let status = match row.status {
            "completed" => paint.green(&format!("{:<10}", row.status)),
            _ => paint.red(&format!("{:<10}", row.status)),
        };
        let detail = match (&row.output, &row.error) {
            (Some(out), _) => out.clone(),
            (None, Some(error)) => format!("{}: {}", error.code.as_str(), error.message),
            (None, None) => String::new(),
        };
        text.push_str(&format!(
            "{:<width$}  {status}  {:>8}  {detail}\n",
            truncate(&row.file, width),
            row.duration_ms.map(format_ms).unwrap_or_else(|| "-".into()),
        ));
    }
    text
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let tail: String = text
        .chars()
        .rev()
        .take(width - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_unique_and_readable() {
        assert_eq!(task_id(6, Path::new("Notes 1.TXT")), "f007_notes_1_txt");
        assert_eq!(task_id(0, Path::new("sub/ä.md")), "f001_sub___md");
    }

    #[test]
    fn results_keep_text_as_text_and_the_rest_as_json() {
        assert_eq!(
            result_text(&json!({"response": "hi"})),
            ("hi".into(), "txt")
        );
        assert_eq!(result_text(&json!({"result": {"n": 1}})).1, "json");
    }

    #[test]
    fn walk_leaves_out_hidden_files_and_earlier_results() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.txt", ".hidden.txt", "a.txt.result.txt", "b.md"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.txt"), "x").unwrap();
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names(walk(dir.path(), false).unwrap()), ["a.txt", "b.md"]);
        assert_eq!(
            names(walk(dir.path(), true).unwrap()),
            ["a.txt", "b.md", "sub/c.txt"]
        );
    }
}
