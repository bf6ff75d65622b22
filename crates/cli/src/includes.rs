//! Sub-workflow files for `parse::load_with`: paths are relative to the file
//! that names them and are known by their canonical path, so two spellings of
//! one file are one file when cycles are looked for.

use gleitzeit_core::parse::Includes;
use gleitzeit_core::GzError;
use std::path::{Path, PathBuf};

pub struct FsIncludes;

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Includes for FsIncludes {
    fn read(&self, from: &str, path: &str) -> Result<(String, String), GzError> {
        let base = Path::new(from).parent().unwrap_or(Path::new("."));
        let full = base.join(path);
        let text = crate::commands::read_user_file(&full)?;
        Ok((text, canonical(&full).display().to_string()))
    }

    fn identity(&self, file: &str) -> String {
        canonical(Path::new(file)).display().to_string()
    }
}
