//! How the CLI talks to people: errors with code, place and hint; colour only on
//! a terminal (and never with NO_COLOR); exit codes per the spec.

use gleitzeit_api::views::UsageTotals;
use gleitzeit_core::parse::Diagnostic;
use gleitzeit_core::{ErrorCode, GzError};
use std::io::IsTerminal;

pub const EXIT_OK: u8 = 0;
pub const EXIT_WORKFLOW_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_BACKEND: u8 = 3;

/// Exit code for an error that stopped a command.
pub fn exit_code(error: &GzError) -> u8 {
    if matches!(
        error.code,
        ErrorCode::FunctionArgumentInvalid
            | ErrorCode::FunctionNotFound
            | ErrorCode::InvalidParameters
            | ErrorCode::ReplayCorrupt
    ) {
        return EXIT_INVALID;
    }
    match error.code as u16 / 1000 {
        1 | 5 | 6 => EXIT_BACKEND,
        3 | 9 | 4 => EXIT_INVALID,
        _ if error.code == ErrorCode::PythonNotFound => EXIT_BACKEND,
        _ => EXIT_WORKFLOW_FAILED,
    }
}

pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

pub struct Paint(pub bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn red(&self, t: &str) -> String {
        self.wrap("1;31", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    pub fn cyan(&self, t: &str) -> String {
        self.wrap("36", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
}

/// One paragraph: `error[GZxxxx]: message`, where it happened, what to do.
pub fn render_error(error: &GzError, paint: &Paint) -> String {
    let mut out = format!(
        "{}: {}\n",
        paint.red(&format!("error[{}]", error.code)),
        error.message
    );
    if let Some(location) = &error.location {
        out.push_str(&format!("  {} {location}\n", paint.cyan("-->")));
    }
    if let Some(traceback) = error.details.get("traceback").and_then(|t| t.as_str()) {
        for line in traceback.trim_end().lines() {
            out.push_str(&format!("  {} {line}\n", paint.dim("|")));
        }
    }
    out.push_str(&format!(
        "  {} {}\n",
        paint.yellow("hint:"),
        error.hint_text()
    ));
    if let Some(context) = context_line(&error.details) {
        out.push_str(&format!("  {} {context}\n", paint.dim("context:")));
    }
    out
}

/// Seed 000's `Context: file_path=missing_file.csv, operation=read`: the
/// error's details as `key=value` pairs, each value cut short (a model's whole
/// response can be a detail). The traceback has its own lines above.
fn context_line(details: &serde_json::Value) -> Option<String> {
    let pairs: Vec<String> = details
        .as_object()?
        .iter()
        .filter(|(key, value)| key.as_str() != "traceback" && !value.is_null())
        .map(|(key, value)| format!("{key}={}", preview(value, 60)))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join(", "))
}

pub fn print_error(error: &GzError) {
    eprint!("{}", render_error(error, &Paint(color_stderr())));
}

pub fn render_diagnostics(diagnostics: &[Diagnostic], file: &str, paint: &Paint) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&render_error(&d.to_error(), paint));
    }
    let n = diagnostics.len();
    out.push_str(&format!(
        "{} {n} problem{} found in {file}\n",
        paint.red("✗"),
        if n == 1 { "" } else { "s" }
    ));
    out
}

pub fn json_error(error: &GzError) -> serde_json::Value {
    gleitzeit_api::error_json(error)
}

/// Counts by state as `completed 3, failed 1` (or `none`).
pub fn counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A one-line preview of a value, cut to `width` characters.
pub fn preview(value: &serde_json::Value, width: usize) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.replace('\n', "⏎"),
        other => other.to_string(),
    };
    if text.chars().count() > width {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// A usage total's cost: `$0.0123`, or what is unknown about it.
pub fn cost_text(usage: &UsageTotals) -> String {
    let known = format!("${:.4}", usage.cost_usd);
    match usage.cost_unknown_calls {
        0 => known,
        n if n == usage.llm_calls => "cost unknown (no price for the model in `llm.prices`)".into(),
        n => format!("{known} + unknown for {n} call(s) without a price"),
    }
}

/// How long ago `ms` was, for heartbeats and dead letters.
pub fn heartbeat_age(ms: i64) -> String {
    let s = (gleitzeit_store::now_ms() - ms).max(0) as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.1}s ago")
    } else {
        format!("{:.0}m ago", s / 60.0)
    }
}

/// A worker node's labels, `gpu` first, or `-`.
pub fn node_labels(node: &gleitzeit_api::system::NodeView) -> String {
    let mut parts: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if node.gpu {
        parts.insert(0, "gpu".into());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// How `stats` and `health` print what they report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_paragraph_has_code_location_and_hint() {
        let error = GzError::new(ErrorCode::MissingDependency, "task `a` depends on `x`")
            .at("flow.yaml:5:3");
        let text = render_error(&error, &Paint(false));
        assert_eq!(
            text,
            "error[GZ3006]: task `a` depends on `x`\n  --> flow.yaml:5:3\n  hint: Use the id or name of a task defined in the same file.\n"
        );
    }

    #[test]
    fn details_become_the_context_line_under_the_hint() {
        let error = GzError::new(ErrorCode::FileNotFound, "no such file").with_details(
            serde_json::json!({"file_path": "missing_file.csv", "operation": "read", "traceback": "x", "response": "a".repeat(100)}),
        );
        let text = render_error(&error, &Paint(false));
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("  context: file_path=missing_file.csv, operation=read, response=aaa"),
            "{text}"
        );
        assert!(last.ends_with("…") && !last.contains("traceback"), "{text}");
        // No details, no context line.
        let plain = render_error(&GzError::new(ErrorCode::FileNotFound, "x"), &Paint(false));
        assert!(!plain.contains("context:"), "{plain}");
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        assert_eq!(
            exit_code(&GzError::new(ErrorCode::YamlSyntax, "")),
            EXIT_INVALID
        );
        assert_eq!(
            exit_code(&GzError::new(ErrorCode::DatabaseLocked, "")),
            EXIT_BACKEND
        );
        assert_eq!(
            exit_code(&GzError::new(ErrorCode::PythonException, "")),
            EXIT_WORKFLOW_FAILED
        );
        assert_eq!(
            exit_code(&GzError::new(ErrorCode::InvalidArgument, "")),
            EXIT_INVALID
        );
    }

    #[test]
    fn previews_are_cut() {
        assert_eq!(preview(&serde_json::json!("a\nb"), 10), "a⏎b");
        assert_eq!(preview(&serde_json::json!("abcdefghijkl"), 5), "abcd…");
    }
}
