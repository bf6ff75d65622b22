//! The API key client commands send: GLEITZEIT_API_KEY, else the file
//! GLEITZEIT_API_KEY_FILE names (a container secret), else the one saved by
//! `gleitzeit auth login --save` in `~/.gleitzeit/credentials` (mode 0600).
//! The key is never printed; only its public id is.

use gleitzeit_core::{ErrorCode, GzError};
use std::path::PathBuf;

pub fn path() -> PathBuf {
    crate::config::home_dir().join("credentials")
}

/// The key and where it came from.
pub fn api_key() -> Option<(String, &'static str)> {
    if let Some(key) = std::env::var("GLEITZEIT_API_KEY")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
    {
        return Some((key, "GLEITZEIT_API_KEY"));
    }
    // A Docker or Kubernetes secret arrives as a file (/run/secrets/…).
    if let Some(file) = std::env::var_os("GLEITZEIT_API_KEY_FILE").filter(|f| !f.is_empty()) {
        let file = PathBuf::from(file);
        match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => {
                return Some((text.trim().to_string(), "GLEITZEIT_API_KEY_FILE"))
            }
            Ok(_) => eprintln!(
                "warning: GLEITZEIT_API_KEY_FILE {} is empty; no API key from it",
                file.display()
            ),
            Err(e) => eprintln!(
                "warning: cannot read GLEITZEIT_API_KEY_FILE {}: {e}; no API key from it",
                file.display()
            ),
        }
    }
    let text = std::fs::read_to_string(path()).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["api_key"]
        .as_str()
        .map(|k| (k.to_string(), "saved credentials"))
}

pub fn save(key: &str) -> Result<PathBuf, GzError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_error(&path, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| write_error(&path, e))?;
    file.write_all(serde_json::json!({ "api_key": key }).to_string().as_bytes())
        .map_err(|e| write_error(&path, e))?;
    Ok(path)
}

/// True when there was something to remove.
pub fn remove() -> Result<bool, GzError> {
    let path = path();
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(write_error(&path, e)),
    }
}

fn write_error(path: &std::path::Path, e: std::io::Error) -> GzError {
    GzError::new(
        ErrorCode::FileWriteFailed,
        format!("cannot write {}: {e}", path.display()),
    )
}
