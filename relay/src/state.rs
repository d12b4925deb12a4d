//! The relay's state directory: its key and the persisted state, written atomically.

use overlay_core::key;
use overlay_core::relay::state::{RelayState, StateFile};
use overlay_core::relay::Store;
use overlay_core::statefile::{self, StateFileError};
use std::path::{Path, PathBuf};

/// Errors loading relay state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File I/O failed.
    #[error(transparent)]
    File(#[from] StateFileError),
    /// A file exists but does not parse: refuse to start rather than lose data.
    #[error("{path} is damaged ({reason}); move it aside to start with an empty state, or restore a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// The state directory and its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir`, created with mode 0700 when missing.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        statefile::ensure_dir(dir, 0o700)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The admin socket path.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Loads the relay's private key, creating one on first start.
    pub fn load_or_create_key(&self) -> Result<[u8; 32], StateError> {
        let path = self.dir.join("private.key");
        if let Some(bytes) = statefile::read_optional(&path)? {
            let text = String::from_utf8_lossy(&bytes);
            return key::decode(&text).map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            });
        }
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let bytes = secret.to_bytes();
        statefile::write_atomic(
            &path,
            format!("{}\n", key::encode(&bytes)).as_bytes(),
            0o600,
        )?;
        Ok(bytes)
    }

    /// Loads the state; an absent file is an empty state, a damaged one an error.
    pub fn load(&self) -> Result<RelayState, StateError> {
        let path = self.state_file();
        match statefile::read_optional(&path)? {
            None => Ok(RelayState::default()),
            Some(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(StateFile::V1(s)) => Ok(s),
                Err(e) => Err(StateError::Corrupt {
                    path,
                    reason: e.to_string(),
                }),
            },
        }
    }
}

impl Store for StateDir {
    fn save(&mut self, state: &RelayState) -> Result<(), String> {
        let mut bytes =
            serde_json::to_vec_pretty(&StateFile::V1(state.clone())).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        statefile::write_atomic(&self.state_file(), &bytes, 0o600).map_err(|e| e.to_string())
    }
}
