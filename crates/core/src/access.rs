//! Which files a workflow's tasks may open: the pure half of the file-access
//! policy. [`FileAccess`] is the grant a workflow carries (in its stored spec
//! and in every task call, so worker nodes enforce the submitter's grant too);
//! [`check_syntax`] refuses paths that cannot be meant as a local file before
//! anything touches the disk. Opening files against the grant is the I/O half,
//! `gleitzeit_functions::guard`.

use crate::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Longer paths are refused outright: Linux's own limit, so nothing a task can
/// name legitimately is lost.
pub const MAX_PATH_BYTES: usize = 4096;

/// The directories under which a workflow's tasks may read files. Empty means
/// no file access at all (the default for workflows that arrive over the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAccess {
    #[serde(default)]
    pub roots: Vec<PathBuf>,
}

impl FileAccess {
    pub fn none() -> FileAccess {
        FileAccess::default()
    }

    pub fn under(roots: Vec<PathBuf>) -> FileAccess {
        FileAccess { roots }
    }

    pub fn is_none(&self) -> bool {
        self.roots.is_empty()
    }
}

/// What the process that runs tasks adds to every grant: files that are
/// refused whatever a grant says (store, config, credentials) and, on worker
/// nodes, the roots the node's own config allows (a grant from the scheduler
/// never reaches beyond them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilePolicy {
    pub protected: Vec<PathBuf>,
    /// `None`: grants apply as they are (the process that accepted the
    /// workflow computed them); `Some(roots)`: only paths under these too.
    pub cap: Option<Vec<PathBuf>>,
}

/// A `GZ6011` for a path that is not a plain local path.
pub fn invalid_path(argument: &str, shown: &str, why: &str) -> GzError {
    GzError::new(
        ErrorCode::PathInvalid,
        format!("`{argument}` {why}: {shown}"),
    )
    .with_hint("Give the path of a local file, absolute or relative to the working directory; `~/` means the home directory of the user running gleitzeit.")
    .with_details(serde_json::json!({"argument": argument}))
}

/// A path as it may be shown in a message: bounded and without control
/// characters.
pub fn shown(path: &str) -> String {
    let mut out: String = path
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '�' } else { c })
        .collect();
    if out.len() < path.len() {
        out.push('…');
    }
    out
}

/// Refuses what cannot be a local path: empty, NUL bytes, longer than
/// [`MAX_PATH_BYTES`], `~user/`, Windows drive or UNC paths, URLs.
pub fn check_syntax(argument: &str, path: &str) -> Result<(), GzError> {
    let bad = |why: &str| Err(invalid_path(argument, &shown(path), why));
    if path.trim().is_empty() {
        return bad("is empty");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid_path(
            argument,
            &shown(path),
            &format!("is longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if let Some(rest) = path.strip_prefix('~') {
        if !rest.is_empty() && !rest.starts_with('/') {
            return bad("names another user's home (`~user/`), which is not supported");
        }
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if drive || path.starts_with("\\\\") || path.contains('\\') {
        return bad("is a Windows-style path");
    }
    if let Some((scheme, _)) = path.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return bad("is a URL, not a file path (use http/request to fetch URLs)");
        }
    }
    Ok(())
}

/// `path` with `.` and `..` resolved by text alone (`/a/b/../c` → `/a/c`);
/// `..` above the root stays at the root. For paths that do not exist, where
/// the file system cannot resolve them.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether `path` is `root` or lies below it (by components, so `/srv/data2`
/// is not under `/srv/data`).
pub fn is_under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_refuses_what_is_not_a_local_path() {
        for (path, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("a\0b", "NUL"),
            ("~root/.ssh/id_rsa", "another user's home"),
            ("C:\\Windows\\win.ini", "Windows"),
            ("c:/boot.ini", "Windows"),
            ("\\\\server\\share\\x", "Windows"),
            ("file:///etc/passwd", "URL"),
            ("http://169.254.169.254/latest", "URL"),
        ] {
            let error = check_syntax("path", path).unwrap_err();
            assert_eq!(error.code, ErrorCode::PathInvalid, "{path:?}");
            assert!(error.message.contains(why), "{path:?}: {}", error.message);
        }
        let long = "a/".repeat(MAX_PATH_BYTES);
        let error = check_syntax("path", &long).unwrap_err();
        assert!(error.message.contains("longer than"), "{}", error.message);
        assert!(error.message.len() < 400, "the path is shown shortened");
        for fine in ["notes.txt", "./a/../b.csv", "/srv/data/x.json", "~/x", "~"] {
            assert!(check_syntax("path", fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn normalize_and_is_under_work_by_components() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/../../etc")), Path::new("/etc"));
        assert!(is_under(Path::new("/srv/data/x"), Path::new("/srv/data")));
        assert!(is_under(Path::new("/srv/data"), Path::new("/srv/data")));
        assert!(!is_under(Path::new("/srv/data2/x"), Path::new("/srv/data")));
    }
}
