//! The relay's state directory: its key and the persisted state, written atomically.

use overlay_core::identity::key;
use overlay_core::relay::state::{RelayState, StateFile};
use overlay_sys::statefile::{self, StateFileError};
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
    /// The key is missing, unreadable or damaged while the state holds peers or tokens made
    /// for it: a new key would silently cut all of them off.
    #[error("{problem} but {state} holds {nodes} and {tokens} made for it: restore {key} from your backup, or start with --new-key to make a new key (every node must then join again with a new token)")]
    KeyLost {
        /// What is wrong with the key file, starting with its path.
        problem: String,
        /// The state file.
        state: PathBuf,
        /// "N nodes".
        nodes: Plural,
        /// "N tokens".
        tokens: Plural,
        /// The key file.
        key: PathBuf,
    },
    /// The key file is unreadable or damaged while the state is empty.
    #[error("{problem}: restore it from your backup, or start with --new-key to make a new key")]
    KeyDamaged {
        /// What is wrong with the key file, starting with its path.
        problem: String,
    },
}

/// A count with its noun, singular or plural ("1 node", "3 nodes").
#[derive(Debug)]
pub struct Plural(pub usize, pub &'static str);

impl std::fmt::Display for Plural {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
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

    /// Loads the relay's private key. A new key is made on first start (no peers or tokens in
    /// `state`), or when `new_key` is set and the key is missing, unreadable or damaged; a damaged
    /// file is kept beside it as `private.key.damaged`. Otherwise a lost key is an error: a new
    /// one would cut off every node and token made for the old one. `new_key` never replaces a
    /// good key, so a leftover `OVERLAY_RELAY_NEW_KEY` does no harm.
    pub fn load_key(&self, state: &RelayState, new_key: bool) -> Result<[u8; 32], StateError> {
        let path = self.dir.join("private.key");
        let problem = match statefile::read_optional(&path) {
            Ok(Some(bytes)) => match key::decode(&String::from_utf8_lossy(&bytes)) {
                Ok(k) => {
                    if new_key {
                        tracing::warn!(key = %path.display(), "--new-key ignored: the key is present and good");
                    }
                    return Ok(k);
                }
                Err(e) => Some(format!("{} is damaged ({e})", path.display())),
            },
            Ok(None) => None,
            Err(e) => Some(format!("{} cannot be read ({})", path.display(), e.io())),
        };
        let in_use = !state.peers.is_empty() || !state.tokens.is_empty();
        if !new_key {
            match (problem, in_use) {
                (None, false) => {}
                (Some(problem), false) => return Err(StateError::KeyDamaged { problem }),
                (problem, true) => {
                    return Err(StateError::KeyLost {
                        problem: problem
                            .unwrap_or_else(|| format!("{} is missing", path.display())),
                        state: self.state_file(),
                        nodes: Plural(state.peers.len(), "node"),
                        tokens: Plural(state.tokens.len(), "token"),
                        key: path,
                    })
                }
            }
        } else {
            if problem.is_some() {
                let aside = self.dir.join("private.key.damaged");
                if let Err(e) = std::fs::rename(&path, &aside) {
                    tracing::warn!(key = %path.display(), "cannot move the damaged key aside ({e}); it is replaced");
                }
            }
            if in_use {
                tracing::warn!(
                    nodes = state.peers.len(),
                    tokens = state.tokens.len(),
                    "--new-key: making a new relay key; the nodes and tokens in the state were made for the old key and cannot connect or join: every node must join again with a new token"
                );
            }
        }
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let bytes = secret.to_bytes();
        statefile::write_atomic(
            &path,
            format!("{}\n", key::encode(&bytes)).as_bytes(),
            0o600,
        )?;
        tracing::info!(key = %path.display(), "made a new relay key");
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

impl StateDir {
    /// Writes `state` atomically (temporary file, fsync, rename; mode 0600).
    pub fn save(&self, state: RelayState) -> Result<(), String> {
        let mut bytes =
            serde_json::to_vec_pretty(&StateFile::V1(state)).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        statefile::write_atomic(&self.state_file(), &bytes, 0o600).map_err(|e| e.to_string())
    }
}

/// What the persister reports back to the hub thread.
#[derive(Debug)]
pub enum Persisted {
    /// This version is durable.
    Done(u64),
    /// This version could not be written, for this reason.
    Failed(u64, String),
}

/// Writes the hub's state on a thread of its own, so forwarding never waits for the disk.
///
/// The hub asks for at most one write at a time (`Event::Persist`) and coalesces the changes
/// made meanwhile into the next one, so the queue holds one state at most, and serializing and
/// fsyncing happen here.
pub struct Persister {
    tx: Option<std::sync::mpsc::SyncSender<(u64, Box<RelayState>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    /// Starts the thread; it reports each write on the receiver and wakes the hub.
    pub fn start(
        dir: StateDir,
        wake: std::sync::Arc<overlay_sys::wake::Wake>,
    ) -> anyhow::Result<(Persister, std::sync::mpsc::Receiver<Persisted>)> {
        // One in progress and one waiting at most (the hub never asks for more).
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Box<RelayState>)>(2);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || {
                for (version, state) in rx {
                    let r = match dir.save(*state) {
                        Ok(()) => Persisted::Done(version),
                        Err(e) => Persisted::Failed(version, e),
                    };
                    if done_tx.send(r).is_err() {
                        break;
                    }
                    wake.wake();
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the persister thread: {e}"))?;
        Ok((
            Persister {
                tx: Some(tx),
                thread: Some(thread),
            },
            done_rx,
        ))
    }

    /// Hands `state` (version `version`) to the thread.
    pub fn write(&self, version: u64, state: Box<RelayState>) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("the persister has stopped")?;
        tx.try_send((version, state))
            .map_err(|e| format!("the persister cannot take the state: {e}"))
    }

    /// Lets the write in progress finish and stops the thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
