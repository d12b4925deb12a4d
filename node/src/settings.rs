//! What `overlay join` saved: the node's identity and network settings, in the state directory.

use overlay_core::identity::key;
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_sys::statefile;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The persisted node settings, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum SettingsFile {
    /// Version 1.
    #[serde(rename = "1")]
    V1(Settings),
}

/// The node's settings as the relay gave them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// Node name.
    pub name: String,
    /// Node overlay address.
    pub address: Ipv4Addr,
    /// Node prefix.
    pub prefix: Ipv4Prefix,
    /// Overlay network.
    pub network: Ipv4Prefix,
    /// DNS domain.
    pub domain: String,
    /// The relay's overlay address.
    pub relay_address: Ipv4Addr,
    /// The relay's public key (base64).
    pub relay_key: String,
    /// The relay's endpoints.
    pub endpoints: Vec<String>,
    /// Inner MTU.
    pub mtu: u16,
    /// The user who joined (may use the control socket).
    #[serde(default)]
    pub owner_uid: Option<u32>,
    /// The relay's URL for the stream (from the token), where UDP cannot pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The transports `overlay join --transport` allowed.
    #[serde(default)]
    pub transport: overlay_core::transport::stream::transport::Mode,
}

/// Paths of the node's files.
pub struct NodeFiles {
    dir: PathBuf,
}

impl NodeFiles {
    /// Files under `dir`.
    pub fn new(dir: &Path) -> Self {
        NodeFiles {
            dir: dir.to_path_buf(),
        }
    }

    /// The settings file.
    pub fn settings(&self) -> PathBuf {
        self.dir.join("node.json")
    }

    /// The private key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("private.key")
    }

    /// The daemon log when it runs in the background.
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Whether the node has joined.
    pub fn joined(&self) -> bool {
        self.settings().exists()
    }

    /// Loads the private key, if there is one.
    pub fn load_key(&self) -> anyhow::Result<Option<[u8; 32]>> {
        match statefile::read_optional(&self.key())? {
            None => Ok(None),
            Some(b) => Ok(Some(key::decode(&String::from_utf8_lossy(&b)).map_err(
                |e| {
                    anyhow::anyhow!(
                        "{} is damaged ({e}); run `overlay leave` and join again",
                        self.key().display()
                    )
                },
            )?)),
        }
    }

    /// Saves the private key (mode 0600).
    pub fn save_key(&self, k: &[u8; 32]) -> anyhow::Result<()> {
        statefile::ensure_dir(&self.dir, 0o700)?;
        statefile::write_atomic(
            &self.key(),
            format!("{}\n", key::encode(k)).as_bytes(),
            0o600,
        )?;
        Ok(())
    }

    /// Loads the settings.
    pub fn load(&self) -> anyhow::Result<Settings> {
        let bytes = statefile::read_optional(&self.settings())?.ok_or_else(|| {
            anyhow::anyhow!(
                "this machine has not joined an overlay yet: run `sudo overlay join <token>`"
            )
        })?;
        match serde_json::from_slice::<SettingsFile>(&bytes) {
            Ok(SettingsFile::V1(s)) => Ok(s),
            Err(e) => anyhow::bail!(
                "{} is damaged ({e}); run `sudo overlay leave` and join again",
                self.settings().display()
            ),
        }
    }

    /// Saves the settings atomically.
    pub fn save(&self, s: &Settings) -> anyhow::Result<()> {
        statefile::ensure_dir(&self.dir, 0o700)?;
        let mut bytes = serde_json::to_vec_pretty(&SettingsFile::V1(s.clone()))?;
        bytes.push(b'\n');
        statefile::write_atomic(&self.settings(), &bytes, 0o600)?;
        Ok(())
    }

    /// Removes settings and key.
    pub fn remove(&self) -> anyhow::Result<()> {
        for p in [self.settings(), self.key()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("cannot remove {}: {e}", p.display()),
            }
        }
        Ok(())
    }
}
