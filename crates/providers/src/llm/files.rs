//! Text files attached to a prompt (`files: [notes.md]`): read, checked for size
//! and encoding, and appended under a header naming each file, so batch runs
//! and workflows can ask about a document without a Python step to read it.

use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_functions::{FileGuard, OpenError};
use std::io::Read;
use std::path::Path;

/// Far beyond any model's context window; a larger file is almost certainly a
/// mistake (a log, a dump) that would only be truncated by the server.
pub const MAX_TEXT_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads one attached file as text, through the call's file guard.
pub fn load(guard: &FileGuard, path: &str) -> Result<String, GzError> {
    let shown = gleitzeit_core::access::shown(path);
    let opened = guard.open("files", path).map_err(|e| match e {
        OpenError::Refused(e) => e.at(shown.clone()),
        OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => GzError::new(
            ErrorCode::FileNotFound,
            format!("attached file {shown} does not exist"),
        )
        .at(shown.clone())
        .with_hint("`files:` takes paths of text files, relative to where gleitzeit runs."),
        OpenError::Io(e) => unreadable(&shown, &e.to_string()),
    })?;
    if !opened.metadata.is_file() {
        return Err(unreadable(&shown, "it is not a regular file"));
    }
    if opened.metadata.len() > MAX_TEXT_FILE_BYTES {
        return Err(GzError::new(
            ErrorCode::InvalidParameters,
            format!(
                "attached file {shown} is {:.1} MiB, more than the {} MiB a prompt can carry",
                opened.metadata.len() as f64 / 1048576.0,
                MAX_TEXT_FILE_BYTES / 1024 / 1024
            ),
        )
        .at(shown)
        .with_hint("Split the file, or summarise it in pieces with `for_each`."));
    }
    let mut bytes = Vec::new();
    opened
        .file
        .take(MAX_TEXT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&shown, &e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| {
        GzError::new(
            ErrorCode::FileUnreadable,
            format!("attached file {shown} is not UTF-8 text"),
        )
        .at(shown)
        .with_hint("Attach images with `images:` (llm/vision); other binary files cannot go into a prompt.")
    })
}

fn unreadable(shown: &str, why: &str) -> GzError {
    GzError::new(
        ErrorCode::FileUnreadable,
        format!("cannot read attached file {shown}: {why}"),
    )
    .at(shown.to_string())
    .with_hint("Check the file's permissions.")
}

/// The prompt followed by every file under a header with its name.
pub fn append(prompt: Option<&str>, files: &[(String, String)]) -> String {
    let mut text = prompt.unwrap_or_default().to_string();
    for (path, content) in files {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.clone());
        text.push_str(&format!("--- {name} ---\n{content}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(dir: &tempfile::TempDir) -> FileGuard {
        FileGuard::under(&[dir.path().to_path_buf()])
    }

    #[test]
    fn files_follow_the_prompt_under_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.md");
        std::fs::write(&path, "alpha\nbeta").unwrap();
        let content = load(&guard(&dir), path.to_str().unwrap()).unwrap();
        let text = append(Some("Summarise"), &[(path.display().to_string(), content)]);
        assert_eq!(text, "Summarise\n\n--- notes.md ---\nalpha\nbeta");
        assert_eq!(
            append(None, &[("a.txt".into(), "x".into())]),
            "--- a.txt ---\nx"
        );
    }

    #[test]
    fn missing_binary_and_directory_files_are_coded_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let err = load(&guard(&dir), missing.to_str().unwrap()).unwrap_err();
        assert_eq!(err.code, ErrorCode::FileNotFound);
        let binary = dir.path().join("b.bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x9f]).unwrap();
        let err = load(&guard(&dir), binary.to_str().unwrap()).unwrap_err();
        assert_eq!(err.code, ErrorCode::FileUnreadable);
        assert!(err.message.contains("not UTF-8"), "{}", err.message);
        let err = load(&guard(&dir), dir.path().to_str().unwrap()).unwrap_err();
        assert_eq!(err.code, ErrorCode::FileUnreadable);
        let outside = load(&guard(&dir), "/etc/hostname").unwrap_err();
        assert_eq!(outside.code, ErrorCode::FileAccessDenied);
    }
}
