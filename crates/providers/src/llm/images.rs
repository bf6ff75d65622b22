//! Images for vision calls: a file path, a `data:` URL or raw base64, checked for
//! size and type before anything is sent.

use super::wire::Image;
use base64::Engine;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_functions::{FileGuard, OpenError};
use std::io::Read;

fn mime_of(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        [b'B', b'M', ..] => Some("image/bmp"),
        _ => None,
    }
}

fn too_large(what: &str, size: usize, max: usize) -> GzError {
    GzError::new(
        ErrorCode::InvalidParameters,
        format!(
            "image {what} is {:.1} MiB, more than the {:.1} MiB allowed",
            size as f64 / 1048576.0,
            max as f64 / 1048576.0
        ),
    )
    .with_hint("Scale the image down, or raise `llm.max_image_mb` in the config.")
}

/// One image: a `data:` URL, base64 image bytes, or else a file path read
/// through the call's file guard.
pub fn load(guard: &FileGuard, item: &str, max_bytes: usize) -> Result<Image, GzError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let item = item.trim();
    let compact: String = item.chars().filter(|c| !c.is_whitespace()).collect();
    let (bytes, label) = if let Some(rest) = item.strip_prefix("data:") {
        let encoded = rest.split_once(',').map(|(_, data)| data).unwrap_or("");
        let bytes = engine.decode(encoded).map_err(|e| {
            GzError::new(
                ErrorCode::InvalidParameters,
                format!("image data URL is not valid base64: {e}"),
            )
        })?;
        (bytes, "data URL".to_string())
    } else if let Some(bytes) = engine
        .decode(&compact)
        .ok()
        .filter(|b| compact.len() >= 16 && mime_of(b).is_some())
    {
        (bytes, "base64 data".to_string())
    } else {
        let shown = gleitzeit_core::access::shown(item);
        let opened = guard.open("images", item).map_err(|e| match e {
            OpenError::Refused(e) => e.at(shown.clone()),
            OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => GzError::new(
                ErrorCode::FileNotFound,
                format!("image file {shown} does not exist"),
            )
            .at(shown.clone())
            .with_hint("Give an image file path, a data: URL or base64-encoded image bytes."),
            OpenError::Io(e) => GzError::new(
                ErrorCode::FileUnreadable,
                format!("cannot read image {shown}: {e}"),
            )
            .at(shown.clone()),
        })?;
        if !opened.metadata.is_file() {
            return Err(GzError::new(
                ErrorCode::FileUnreadable,
                format!("cannot read image {shown}: it is not a regular file"),
            )
            .at(shown));
        }
        let size = usize::try_from(opened.metadata.len()).unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(too_large(&shown, size, max_bytes).at(shown));
        }
        let mut bytes = Vec::with_capacity(size);
        opened
            .file
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                GzError::new(
                    ErrorCode::FileUnreadable,
                    format!("cannot read image {shown}: {e}"),
                )
                .at(shown.clone())
            })?;
        (bytes, shown)
    };
    if bytes.len() > max_bytes {
        return Err(too_large(&label, bytes.len(), max_bytes));
    }
    let mime = mime_of(&bytes).ok_or_else(|| {
        GzError::new(
            ErrorCode::InvalidParameters,
            format!("{label} is not a PNG, JPEG, GIF, WebP or BMP image"),
        )
    })?;
    Ok(Image {
        base64: engine.encode(&bytes),
        mime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(dir: &tempfile::TempDir) -> FileGuard {
        FileGuard::under(&[dir.path().to_path_buf()])
    }

    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R',
    ];

    #[test]
    fn paths_base64_and_data_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        std::fs::write(&path, PNG).unwrap();
        let guard = guard(&dir);
        let from_file = load(&guard, path.to_str().unwrap(), 1 << 20).unwrap();
        assert_eq!(from_file.mime, "image/png");
        let encoded = base64::engine::general_purpose::STANDARD.encode(PNG);
        assert_eq!(load(&guard, &encoded, 1 << 20).unwrap(), from_file);
        assert_eq!(
            load(&guard, &format!("data:image/png;base64,{encoded}"), 1 << 20).unwrap(),
            from_file
        );
    }

    #[test]
    fn missing_oversized_outside_and_non_images() {
        let dir = tempfile::tempdir().unwrap();
        let guard = guard(&dir);
        let missing = dir.path().join("photo.jpg").display().to_string();
        let error = load(&guard, &missing, 1 << 20).unwrap_err();
        assert_eq!(error.code, ErrorCode::FileNotFound);
        assert!(error.message.contains("photo.jpg"));
        let error = load(&guard, "/etc/hostname", 1 << 20).unwrap_err();
        assert_eq!(error.code, ErrorCode::FileAccessDenied);
        let big = dir.path().join("big.png");
        std::fs::write(&big, vec![0u8; 2048]).unwrap();
        assert_eq!(
            load(&guard, big.to_str().unwrap(), 1024).unwrap_err().code,
            ErrorCode::InvalidParameters
        );
        let text = dir.path().join("t.png");
        std::fs::write(&text, b"not an image at all").unwrap();
        assert!(load(&guard, text.to_str().unwrap(), 1 << 20)
            .unwrap_err()
            .message
            .contains("not a PNG"));
    }
}
