//! Problems found while loading, collected so one run reports them all.

use super::tasks::FUTURE_TASK_KEYS;
use crate::errors::{ErrorCode, GzError};
use crate::yaml::{Node, Pos};
use std::fmt;

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
    pub file: String,
    pub pos: Pos,
}

impl Diagnostic {
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.column)
    }

    pub fn to_error(&self) -> GzError {
        let mut error = GzError::new(self.code, self.message.clone()).at(self.location());
        error.hint = self.hint.clone();
        error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.location(), self.code, self.message)
    }
}

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn push(
        &mut self,
        code: ErrorCode,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            code,
            message: message.into(),
            hint,
            file: self.file.to_string(),
            pos,
        });
    }

    pub(super) fn check_keys(&mut self, map: &[(Node, Node)], allowed: &[&str], what: &str) {
        for (key, _) in map {
            let Some(text) = key.key_text() else {
                self.push(
                    ErrorCode::WrongType,
                    key.pos,
                    format!("{what} keys must be strings"),
                    None,
                );
                continue;
            };
            if allowed.contains(&text.as_str()) {
                continue;
            }
            if what == "task" && FUTURE_TASK_KEYS.contains(&text.as_str()) {
                self.push(
                    ErrorCode::UnknownKey,
                    key.pos,
                    format!("task key `{text}` is not supported by this version yet"),
                    Some(
                        "Remove it; the task would otherwise run differently than written.".into(),
                    ),
                );
                continue;
            }
            let hint = suggest(&text, allowed.iter().copied())
                .map(|s| format!("Did you mean `{s}`?"))
                .or_else(|| Some(format!("Accepted {what} keys: {}", allowed.join(", "))));
            self.push(
                ErrorCode::UnknownKey,
                key.pos,
                format!("unknown {what} key `{text}`"),
                hint,
            );
        }
    }

    pub(super) fn wrong_type(&mut self, node: &Node, key: &str, expected: &str) {
        self.push(
            ErrorCode::WrongType,
            node.pos,
            format!("`{key}` must be {expected}, not {}", node.type_name()),
            None,
        );
    }
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a str) -> Self {
        Ctx {
            file,
            diagnostics: Vec::new(),
        }
    }

    /// Every problem found, sorted by position; `Ok` when there were none.
    pub(super) fn finish(self) -> Result<(), Vec<Diagnostic>> {
        if self.diagnostics.is_empty() {
            return Ok(());
        }
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| (d.pos.line, d.pos.column));
        diagnostics.dedup();
        Err(diagnostics)
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
