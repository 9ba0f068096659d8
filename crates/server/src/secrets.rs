//! Server secrets that the embedded default generates into its data directory.

use std::{fs, io::Write, path::Path};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use keyward_core::crypto::MasterKey;

use crate::config::{Config, MasterKeyConfig, StoreConfig};

const HASH_SECRET_FILE: &str = "hash_secret";
const MASTER_KEY_FILE: &str = "master_key";

/// The master key of RPC provider keys: KEYWARD_MASTER_KEY, KEYWARD_MASTER_KEY_FILE, or
/// on SQLite one generated into the data dir.
pub(crate) fn master_key(config: &MasterKeyConfig, store: &StoreConfig) -> anyhow::Result<MasterKey> {
    let (encoded, source) = match (&config.master_key, &config.master_key_file) {
        (Some(key), _) => (key.clone(), "KEYWARD_MASTER_KEY".to_owned()),
        (None, Some(path)) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read KEYWARD_MASTER_KEY_FILE {}", path.display()))?;
            (SecretString::from(text.trim().to_owned()), format!("KEYWARD_MASTER_KEY_FILE {}", path.display()))
        }
        (None, None) if store.is_postgres() => anyhow::bail!(
            "KEYWARD_MASTER_KEY or KEYWARD_MASTER_KEY_FILE is required with a PostgreSQL KEYWARD_DATABASE_URL: every replica must use the same one"
        ),
        (None, None) => {
            let path = store.data_dir.join(MASTER_KEY_FILE);
            (load_or_generate(&path, MasterKey::generate)?, path.display().to_string())
        }
    };
    MasterKey::from_base64(&encoded).map_err(|problem| anyhow::anyhow!("{source} {problem}"))
}

/// KEYWARD_HASH_SECRET, or on SQLite the data dir's generated one. PostgreSQL may be
/// shared by replicas, which must all hash alike, so there it must be configured.
pub(crate) fn hash_secret(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(secret) = &config.hash_secret {
        return Ok(secret.clone());
    }
    if config.store.is_postgres() {
        anyhow::bail!(
            "KEYWARD_HASH_SECRET is required with a PostgreSQL KEYWARD_DATABASE_URL: every replica must use the same one"
        );
    }
    load_or_generate(&config.store.data_dir.join(HASH_SECRET_FILE), || {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretString::from(STANDARD.encode(bytes))
    })
}

fn load_or_generate(path: &Path, generate: impl FnOnce() -> SecretString) -> anyhow::Result<SecretString> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(SecretString::from(text.trim().to_owned())),
        Ok(_) => anyhow::bail!(
            "{} is empty; delete it to generate a new secret (keys hashed with the old one will stop verifying)",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create KEYWARD_DATA_DIR {}", dir.display()))?;
    }
    let encoded = generate();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(encoded.expose_secret().as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new secret");
    Ok(encoded)
}
