//! Crash-safe state files: write to a temporary file, fsync, rename, fsync the directory.
//!
//! This is the one piece of file I/O in core, shared by relay and node so that both get it right.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A failed state-file operation, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct StateFileError {
    action: &'static str,
    path: PathBuf,
    // Not a `#[source]`: the message already carries it, and error chains would repeat it.
    source: std::io::Error,
}

impl StateFileError {
    fn new(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StateFileError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The underlying I/O error.
    pub fn io(&self) -> &std::io::Error {
        &self.source
    }
}

/// Replaces `path` with `contents` atomically; the file gets `mode`. On any error the old file
/// is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| StateFileError::new("cannot create", &tmp, e))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| StateFileError::new("cannot set permissions on", &tmp, e))?;
        f.write_all(contents)
            .map_err(|e| StateFileError::new("cannot write", &tmp, e))?;
        f.sync_all()
            .map_err(|e| StateFileError::new("cannot sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StateFileError::new("cannot replace", path, e))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateFileError::new("cannot read", path, e)),
    }
}

/// Creates a directory (and parents) with `mode` if it is missing.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), StateFileError> {
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path)
        .map_err(|e| StateFileError::new("cannot create directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StateFileError::new("cannot set permissions on", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_sets_mode() {
        let dir = std::env::temp_dir().join(format!("ovl-statefile-{}", std::process::id()));
        ensure_dir(&dir, 0o700).unwrap();
        let p = dir.join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(read_optional(&p).unwrap().unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read_optional(&dir.join("missing")).unwrap().is_none());
        // A failed write leaves the old file alone.
        assert!(write_atomic(&dir.join("no/such/dir/f"), b"x", 0o600).is_err());
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
