//! The one place where a task opens a file on the machine that runs it. Every
//! method that takes a path (the file functions here, the LLM provider's
//! `files:` and `images:`, Python's `file` and `module`) asks a [`FileGuard`],
//! built per call from the workflow's grant ([`FileAccess`]) and the running
//! process's [`FilePolicy`].
//!
//! A path is checked twice: resolved (`~`, relative to the base directory,
//! symlinks) before it is opened, so nothing outside the roots is ever opened
//! or even stat-ed on a task's behalf, and again on the real path of the open
//! file descriptor, so a symlink swapped in between the two does not help.
//! Protected files are also matched by device and inode, so a hard link to
//! the database inside a root is refused too.

use gleitzeit_core::access::{self, FileAccess, FilePolicy};
use gleitzeit_core::{ErrorCode, GzError};
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

/// Files tasks may read and the files they never may, for one call.
#[derive(Debug, Clone)]
pub struct FileGuard {
    roots: Vec<PathBuf>,
    cap: Option<Vec<PathBuf>>,
    protected: Vec<Protected>,
    base: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Protected {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

/// An open file the guard allowed, with its real path.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub path: PathBuf,
    pub metadata: Metadata,
}

/// Why a path was not opened: the policy said no, or the file system did
/// (only for paths the policy allows, so errors never tell anything about
/// files outside the roots).
#[derive(Debug)]
pub enum OpenError {
    Refused(GzError),
    Io(std::io::Error),
}

impl From<GzError> for OpenError {
    fn from(error: GzError) -> OpenError {
        OpenError::Refused(error)
    }
}

fn identity(metadata: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// Canonical when it exists (so symlinked roots compare by their target),
/// else normalised by text.
fn canonical_or_normal(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| access::normalize(path))
}

impl FileGuard {
    pub fn new(grant: &FileAccess, policy: &FilePolicy) -> FileGuard {
        let absolute = |p: &PathBuf| {
            let expanded = expand_home(p);
            let expanded = if expanded.is_relative() {
                std::env::current_dir()
                    .map(|d| d.join(&expanded))
                    .unwrap_or(expanded)
            } else {
                expanded
            };
            canonical_or_normal(&expanded)
        };
        FileGuard {
            roots: grant.roots.iter().map(absolute).collect(),
            cap: policy
                .cap
                .as_ref()
                .map(|cap| cap.iter().map(absolute).collect()),
            protected: policy
                .protected
                .iter()
                .map(|p| {
                    let path = absolute(p);
                    let identity = std::fs::metadata(&path).ok().map(|m| identity(&m));
                    Protected { path, identity }
                })
                .collect(),
            base: None,
        }
    }

    /// A guard allowing reads under `roots` and protecting nothing: for
    /// tests and tools that name their own directories.
    pub fn under(roots: &[PathBuf]) -> FileGuard {
        FileGuard::new(&FileAccess::under(roots.to_vec()), &FilePolicy::default())
    }

    /// Relative paths are resolved from `dir` instead of the process's
    /// working directory (Python's `working_dir`).
    pub fn relative_to(mut self, dir: &Path) -> FileGuard {
        self.base = Some(dir.to_path_buf());
        self
    }

    /// The directories this guard allows, as they are compared.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn allowed(&self, real: &Path) -> bool {
        self.roots.iter().any(|r| access::is_under(real, r))
            && self
                .cap
                .as_ref()
                .is_none_or(|cap| cap.iter().any(|r| access::is_under(real, r)))
    }

    fn protected(&self, real: &Path, metadata: Option<&Metadata>) -> bool {
        let id = metadata.map(identity);
        self.protected
            .iter()
            .any(|p| p.path == real || (id.is_some() && p.identity == id))
    }

    fn outside(&self, argument: &str, raw: &str) -> GzError {
        let hint = if self.roots.is_empty() {
            "This workflow may read no files. On a server, name directories in `files.roots` (or per role in `files.roles`) of its config; worker nodes also need them in their own `files.roots`.".to_string()
        } else {
            let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            format!(
                "It may read files under {}. Add a directory to `files.roots` (or `files.roles.ROLE` for workflows submitted over the API) in the config of the machine that runs the task.",
                roots.join(", ")
            )
        };
        GzError::new(
            ErrorCode::FileAccessDenied,
            format!(
                "`{argument}`: {} is outside the directories this task may read",
                access::shown(raw)
            ),
        )
        .with_hint(hint)
        .with_details(serde_json::json!({"argument": argument, "setting": "files.roots"}))
    }

    fn refused_protected(&self, argument: &str, raw: &str) -> GzError {
        GzError::new(
            ErrorCode::FileAccessDenied,
            format!(
                "`{argument}`: {} is a protected file (the store's database, the config file or saved credentials); tasks never read it",
                access::shown(raw)
            ),
        )
        .with_hint("No setting allows this: copy what the task needs to a file under `files.roots`.")
        .with_details(serde_json::json!({"argument": argument, "setting": "files.roots"}))
    }

    /// The absolute, text-normalised path `raw` names (no file system access).
    fn resolve(&self, argument: &str, raw: &str) -> Result<PathBuf, GzError> {
        access::check_syntax(argument, raw)?;
        let expanded = expand_home(Path::new(raw));
        if expanded.starts_with("~") {
            return Err(access::invalid_path(
                argument,
                &access::shown(raw),
                "starts with `~` but HOME is not set",
            ));
        }
        let absolute = if expanded.is_relative() {
            let base = match &self.base {
                Some(base) => base.clone(),
                None => std::env::current_dir().map_err(|e| {
                    GzError::new(
                        ErrorCode::FileUnreadable,
                        format!(
                            "cannot resolve {}: no working directory ({e})",
                            access::shown(raw)
                        ),
                    )
                })?,
            };
            base.join(expanded)
        } else {
            expanded
        };
        Ok(access::normalize(&absolute))
    }

    /// Resolves symlinks and checks the result; a path that does not resolve
    /// is reported as missing only when it would lie inside the roots.
    fn precheck(&self, argument: &str, raw: &str) -> Result<PathBuf, OpenError> {
        let lexical = self.resolve(argument, raw)?;
        match std::fs::canonicalize(&lexical) {
            Ok(real) => {
                if self.protected(&real, std::fs::metadata(&real).ok().as_ref()) {
                    return Err(self.refused_protected(argument, raw).into());
                }
                if !self.allowed(&real) {
                    return Err(self.outside(argument, raw).into());
                }
                Ok(real)
            }
            Err(e) => {
                // A journal file that does not exist right now is still the
                // store's: refused, not "missing".
                if self.protected(&lexical, None) {
                    return Err(self.refused_protected(argument, raw).into());
                }
                if !self.allowed(&lexical) {
                    return Err(self.outside(argument, raw).into());
                }
                Err(OpenError::Io(e))
            }
        }
    }

    /// Checks what was actually opened.
    fn verify(
        &self,
        argument: &str,
        raw: &str,
        file: &File,
    ) -> Result<(PathBuf, Metadata), OpenError> {
        let metadata = file.metadata().map_err(OpenError::Io)?;
        let real = fd_path(file).map_err(OpenError::Io)?;
        if self.protected(&real, Some(&metadata)) {
            return Err(self.refused_protected(argument, raw).into());
        }
        if !self.allowed(&real) {
            return Err(self.outside(argument, raw).into());
        }
        Ok((real, metadata))
    }

    /// Opens `raw` (given as `argument`) for reading.
    pub fn open(&self, argument: &str, raw: &str) -> Result<Opened, OpenError> {
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.precheck(argument, raw)?;
        // Non-blocking: a FIFO inside a root must not hang the task at open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&real)
            .map_err(OpenError::Io)?;
        let (path, metadata) = self.verify(argument, raw, &file)?;
        Ok(Opened {
            file,
            path,
            metadata,
        })
    }

    /// The metadata of `raw` without reading it; `Ok(None)` when it does not
    /// exist (said only of paths inside the roots).
    pub fn inspect(
        &self,
        argument: &str,
        raw: &str,
    ) -> Result<Option<(PathBuf, Metadata)>, OpenError> {
        let real = match self.precheck(argument, raw) {
            Ok(real) => real,
            Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = open_path_only(&real).map_err(OpenError::Io)?;
        self.verify(argument, raw, &file).map(Some)
    }

    /// The real path of an existing regular file another process will open
    /// (a Python module): checked like [`FileGuard::open`].
    pub fn check_file(&self, argument: &str, raw: &str) -> Result<PathBuf, OpenError> {
        let real = self.precheck(argument, raw)?;
        let file = open_path_only(&real).map_err(OpenError::Io)?;
        let (path, metadata) = self.verify(argument, raw, &file)?;
        if !metadata.is_file() {
            return Err(OpenError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a regular file",
            )));
        }
        Ok(path)
    }
}

fn expand_home(path: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// Opens without reading rights being used (`O_PATH`): enough to learn what
/// the path is, and it never blocks or triggers a device's open.
#[cfg(target_os = "linux")]
fn open_path_only(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_path_only(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// The path the kernel has for an open file.
#[cfg(target_os = "linux")]
fn fd_path(file: &File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(not(target_os = "linux"))]
#[allow(unsafe_code)]
fn fd_path(file: &File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: F_GETPATH writes at most PATH_MAX bytes into the buffer we own.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPATH, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        guard: FileGuard,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("ok.txt"), "fine").unwrap();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        std::fs::write(root.join("store.db"), "db").unwrap();
        let policy = FilePolicy {
            protected: vec![root.join("store.db"), root.join("store.db-wal")],
            cap: None,
        };
        let guard = FileGuard::new(&FileAccess::under(vec![root.clone()]), &policy);
        Fixture {
            _dir: dir,
            root,
            outside,
            guard,
        }
    }

    fn refused(result: Result<Opened, OpenError>) -> GzError {
        match result {
            Err(OpenError::Refused(e)) => e,
            Err(OpenError::Io(e)) => panic!("expected a refusal, got I/O error {e}"),
            Ok(opened) => panic!("expected a refusal, opened {}", opened.path.display()),
        }
    }

    #[test]
    fn reads_inside_and_refuses_outside() {
        let f = fixture();
        let mut opened = f
            .guard
            .open("path", &f.root.join("ok.txt").display().to_string())
            .unwrap();
        let mut text = String::new();
        opened.file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "fine");
        let escape = format!("{}/sub/../../outside/secret.txt", f.root.display());
        let error = refused(f.guard.open("path", &escape));
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
        assert!(
            error.hint_text().contains(&f.root.display().to_string()),
            "{}",
            error.hint_text()
        );
        let error = refused(f.guard.open("path", "/etc/shadow"));
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
    }

    #[test]
    fn missing_files_outside_are_refused_not_reported_missing() {
        let f = fixture();
        let outside = f.outside.join("nope.txt").display().to_string();
        assert!(matches!(
            f.guard.open("path", &outside),
            Err(OpenError::Refused(_))
        ));
        assert!(matches!(
            f.guard.inspect("path", &outside),
            Err(OpenError::Refused(_))
        ));
        let inside = f.root.join("nope.txt").display().to_string();
        assert!(
            matches!(f.guard.open("path", &inside), Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(f.guard.inspect("path", &inside).unwrap().is_none());
    }

    #[test]
    fn symlinks_and_hard_links_out_of_a_root_are_refused() {
        let f = fixture();
        std::os::unix::fs::symlink(f.outside.join("secret.txt"), f.root.join("link")).unwrap();
        let error = refused(
            f.guard
                .open("path", &f.root.join("link").display().to_string()),
        );
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
        assert!(
            !error.message.contains("outside/secret"),
            "the target is not revealed: {}",
            error.message
        );
        std::fs::hard_link(f.root.join("store.db"), f.root.join("sub/copy")).unwrap();
        let error = refused(
            f.guard
                .open("path", &f.root.join("sub/copy").display().to_string()),
        );
        assert!(error.message.contains("protected"), "{}", error.message);
        let error = refused(
            f.guard
                .open("path", &f.root.join("store.db").display().to_string()),
        );
        assert!(error.message.contains("protected"), "{}", error.message);
    }

    #[test]
    fn a_protected_file_that_does_not_exist_yet_is_refused_not_missing() {
        let f = fixture();
        let wal = f.root.join("store.db-wal").display().to_string();
        let error = refused(f.guard.open("path", &wal));
        assert!(error.message.contains("protected"), "{}", error.message);
        assert!(matches!(
            f.guard.inspect("path", &wal),
            Err(OpenError::Refused(_))
        ));
    }

    #[test]
    fn a_symlinked_root_compares_by_its_target() {
        let f = fixture();
        let alias = f.root.parent().unwrap().join("alias");
        std::os::unix::fs::symlink(&f.root, &alias).unwrap();
        let guard = FileGuard::under(std::slice::from_ref(&alias));
        assert!(guard
            .open("path", &f.root.join("ok.txt").display().to_string())
            .is_ok());
        assert!(guard
            .open("path", &alias.join("ok.txt").display().to_string())
            .is_ok());
    }

    #[test]
    fn relative_paths_resolve_from_the_base_and_cannot_climb_out() {
        let f = fixture();
        let guard = f.guard.clone().relative_to(&f.root.join("sub"));
        assert!(guard.open("path", "../ok.txt").is_ok());
        let error = refused(guard.open("path", "../../outside/secret.txt"));
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
    }

    #[test]
    fn a_cap_narrows_every_grant() {
        let f = fixture();
        let policy = FilePolicy {
            protected: Vec::new(),
            cap: Some(vec![f.root.join("sub")]),
        };
        let guard = FileGuard::new(&FileAccess::under(vec![f.root.clone()]), &policy);
        let error = refused(guard.open("path", &f.root.join("ok.txt").display().to_string()));
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
        let no_grant = FileGuard::new(&FileAccess::none(), &FilePolicy::default());
        let error = refused(no_grant.open("path", &f.root.join("ok.txt").display().to_string()));
        assert!(
            error.hint_text().contains("files.roots"),
            "{}",
            error.hint_text()
        );
    }

    #[test]
    fn malformed_paths_are_gz6011_before_any_file_system_access() {
        let f = fixture();
        for raw in ["", "a\0b", "~nobody/x", "C:\\x", "file:///etc/passwd"] {
            let error = refused(f.guard.open("path", raw));
            assert_eq!(error.code, ErrorCode::PathInvalid, "{raw:?}");
        }
    }

    #[test]
    fn check_file_gives_the_real_path_of_regular_files_only() {
        let f = fixture();
        let real = f
            .guard
            .check_file(
                "module",
                &f.root.join("sub/../ok.txt").display().to_string(),
            )
            .unwrap();
        assert_eq!(real, f.root.join("ok.txt"));
        assert!(matches!(
            f.guard
                .check_file("module", &f.root.join("sub").display().to_string()),
            Err(OpenError::Io(_))
        ));
    }
}
