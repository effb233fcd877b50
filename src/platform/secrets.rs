//! Per-user secrets: named values a user's functions read as files (and optionally as env),
//! never shown back to anyone.
//!
//! Values are sealed at rest with the installation's key (ChaCha20-Poly1305 from ring, which
//! kubefn already links for TLS): a random 96-bit nonce per value, and the owner's id with the
//! secret's name as associated data, so a sealed value copied to another row or user does not
//! open. The key comes from configuration (`--secrets-key`, 64 hex digits) or from a key file
//! kubefn creates in its data directory on first start (mode 0600) — the latter protects a
//! copied database or backup, not a copied data directory.
//!
//! Secrets resolve from the *instance's* user, never from the function's owner: a public
//! function that names `db-password` gets, in alice's instance, alice's `db-password`.

use super::model::{FieldError, FunctionSpec, SecretUse};
use super::runtime::SecretValue;
use super::store::{Store, StoreError};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// The longest secret name (a Kubernetes Secret key and a file name).
pub const MAX_SECRET_NAME: usize = 63;
/// The largest secret value, in bytes (a Kubernetes Secret holds 1 MiB in all).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Secrets one user may keep.
pub const MAX_SECRETS_PER_USER: usize = 100;

/// Why a secret operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The name or value is not acceptable; the field error says why.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The user has no secret of that name.
    #[error("you have no secret named {name:?}; create it first")]
    NotFound { name: String },
    /// An instance of the user's reads it.
    #[error(
        "your instances of {functions} read the secret {name:?}; delete those instances (or change the functions) first"
    )]
    InUse { name: String, functions: String },
    /// The user keeps as many secrets as allowed.
    #[error("you keep {MAX_SECRETS_PER_USER} secrets already; delete one first")]
    TooMany,
    /// An environment variable was asked for a value that is not text.
    #[error(
        "the secret {name:?} is not UTF-8 text, so it cannot be the environment variable {env}; read it from its file instead"
    )]
    NotText { name: String, env: String },
    /// The secret named as registry credentials is not a Docker config.
    #[error(
        "the secret {name:?} is not registry credentials: store a Docker config.json (`{{\"auths\": {{…}}}}`, as `docker login` writes it)"
    )]
    NotRegistryCredentials { name: String },
    /// A stored value does not open with this key: the key changed, or the row was altered.
    #[error("the secret {name:?} cannot be opened with kubefn's key (was the key changed?); set it again")]
    Unreadable { name: String },
    /// The key is missing or malformed.
    #[error("the secrets key {what}: give 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`")]
    Key { what: String },
    /// The key file could not be read or written.
    #[error("cannot use the secrets key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("the system's random source failed; retry")]
    Random,
    /// The database failed.
    #[error("cannot read or store secrets")]
    Store(#[from] StoreError),
}

/// The installation's sealing key.
pub struct SecretKey(LessSafeKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// A key from 64 hex digits.
    pub fn from_hex(text: &str) -> Result<SecretKey, SecretsError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretsError::Key { what: "is not 64 hex digits".into() });
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| SecretsError::Key { what: "is not 64 hex digits".into() })?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| SecretsError::Key { what: "was refused by the cipher".into() })?;
        Ok(SecretKey(LessSafeKey::new(key)))
    }

    /// The configured key (`hex`), or else the one in `data_dir`'s `secrets.key`, made there on
    /// first start.
    pub fn configured(hex: Option<&str>, data_dir: &Path) -> Result<SecretKey, SecretsError> {
        match hex {
            Some(hex) => SecretKey::from_hex(hex),
            None => SecretKey::load_or_create(&data_dir.join("secrets.key")),
        }
    }

    /// The key in `path`, or a new random one written there (mode 0600) when the file is missing.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretsError> {
        let file_error = |source| SecretsError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::from_hex(&text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new().fill(&mut bytes).map_err(|_| SecretsError::Random)?;
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_0600()
                    .open(path)
                    .map_err(file_error)?;
                std::io::Write::write_all(&mut file, text.as_bytes()).map_err(file_error)?;
                SecretKey::from_hex(&text)
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// Seals `value` for `user_id`'s secret `name`: the nonce and the sealed bytes (with tag).
    fn seal(&self, user_id: i64, name: &str, value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretsError::Random)?;
        let mut sealed = value.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(user_id, name)),
                &mut sealed,
            )
            .map_err(|_| SecretsError::Random)?;
        Ok((nonce.to_vec(), sealed))
    }

    /// Opens what [`SecretKey::seal`] sealed for the same user and name.
    fn open(&self, user_id: i64, name: &str, nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let unreadable = || SecretsError::Unreadable { name: name.to_string() };
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut buffer = sealed.to_vec();
        let plain =
            self.0.open_in_place(nonce, Aad::from(associated(user_id, name)), &mut buffer).map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

/// The associated data of a sealed value: what it belongs to.
fn associated(user_id: i64, name: &str) -> Vec<u8> {
    format!("kubefn-secret\0{user_id}\0{name}").into_bytes()
}

/// `OpenOptions` that create files readable by their owner only.
trait OwnerOnly {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Whether `name` may name a secret: a lowercase DNS-1123 label (letters, digits, `-`) of at
/// most [`MAX_SECRET_NAME`] characters, so it is a file name, a Secret key and an env-safe word.
pub fn check_secret_name(name: &str) -> Result<(), FieldError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            format!(
                "a secret's name is lowercase letters, digits and '-', at most {MAX_SECRET_NAME} characters, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Per-user secrets over the store; cheap to clone (the key is shared).
#[derive(Clone, Debug)]
pub struct Secrets {
    store: Store,
    key: std::sync::Arc<SecretKey>,
}

impl Secrets {
    /// Secrets in `store`, sealed with `key`.
    pub fn new(store: Store, key: SecretKey) -> Secrets {
        Secrets { store, key: std::sync::Arc::new(key) }
    }

    /// Creates or replaces `user_id`'s secret `name`; whether it was new.
    pub async fn put(&self, user_id: i64, name: &str, value: &[u8]) -> Result<bool, SecretsError> {
        check_secret_name(name).map_err(SecretsError::Invalid)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretsError::Invalid(FieldError::new(
                "value",
                format!("a secret's value is at most {MAX_SECRET_BYTES} bytes (this one has {})", value.len()),
            )));
        }
        let (nonce, sealed) = self.key.seal(user_id, name, value)?;
        let created = self.store.put_secret(user_id, name, &nonce, &sealed, MAX_SECRETS_PER_USER).await?;
        created.ok_or(SecretsError::TooMany)
    }

    /// `user_id`'s secrets: names and dates, never values.
    pub async fn list(&self, user_id: i64) -> Result<Vec<super::model::SecretInfo>, SecretsError> {
        Ok(self.store.secrets_of(user_id).await?)
    }

    /// Deletes `user_id`'s secret `name`, unless one of their instances reads it (it could not
    /// restart): those functions are named.
    pub async fn delete(&self, user_id: i64, name: &str) -> Result<(), SecretsError> {
        let mut readers: Vec<String> = self
            .store
            .instance_specs(Some(user_id))
            .await?
            .into_values()
            .filter(|spec| {
                spec.secrets.iter().any(|secret| secret.name == name) || spec.registry_secret.as_deref() == Some(name)
            })
            .map(|spec| spec.name)
            .collect();
        if !readers.is_empty() {
            readers.sort();
            readers.dedup();
            return Err(SecretsError::InUse { name: name.to_string(), functions: readers.join(", ") });
        }
        if self.store.delete_secret(user_id, name).await? {
            Ok(())
        } else {
            Err(SecretsError::NotFound { name: name.to_string() })
        }
    }

    /// What an instance of `spec` gets from `user_id`'s secrets: the values of those it names,
    /// and the registry credentials it pulls its image with.
    pub async fn for_instance(
        &self,
        user_id: i64,
        spec: &FunctionSpec,
    ) -> Result<(Vec<SecretValue>, Option<SecretValue>), SecretsError> {
        let values = self.values(user_id, &spec.secrets).await?;
        let registry = match &spec.registry_secret {
            Some(name) => {
                let secret = SecretUse { name: name.clone(), env: None };
                let credentials = self.values(user_id, std::slice::from_ref(&secret)).await?.remove(0);
                let auths = serde_json::from_slice::<serde_json::Value>(&credentials.value)
                    .ok()
                    .is_some_and(|config| config.get("auths").is_some_and(serde_json::Value::is_object));
                if !auths {
                    return Err(SecretsError::NotRegistryCredentials { name: name.clone() });
                }
                Some(credentials)
            }
            None => None,
        };
        Ok((values, registry))
    }

    /// The values of `user_id`'s secrets that `uses` names, for an instance's replicas; a
    /// missing one is an error that names it.
    pub async fn values(&self, user_id: i64, uses: &[SecretUse]) -> Result<Vec<SecretValue>, SecretsError> {
        let mut values = Vec::with_capacity(uses.len());
        for secret in uses {
            let name = &secret.name;
            let (nonce, sealed) = self
                .store
                .sealed_secret(user_id, name)
                .await?
                .ok_or_else(|| SecretsError::NotFound { name: name.clone() })?;
            let value = self.key.open(user_id, name, &nonce, &sealed)?;
            if let Some(env) = &secret.env
                && std::str::from_utf8(&value).is_err()
            {
                return Err(SecretsError::NotText { name: name.clone(), env: env.clone() });
            }
            values.push(SecretValue { name: name.clone(), env: secret.env.clone(), value });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_hex(&"ab".repeat(32)).expect("a key")
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_user_and_name_with_its_key() {
        let key = key();
        let (nonce, sealed) = key.seal(7, "db-password", b"hunter2").expect("sealed");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not in the clear");
        assert_eq!(key.open(7, "db-password", &nonce, &sealed).expect("opens"), b"hunter2");
        assert!(key.open(8, "db-password", &nonce, &sealed).is_err(), "another user's row");
        assert!(key.open(7, "api-key", &nonce, &sealed).is_err(), "another name");
        let other = SecretKey::from_hex(&"cd".repeat(32)).expect("a key");
        assert!(other.open(7, "db-password", &nonce, &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(key.open(7, "db-password", &nonce, &tampered).is_err(), "an altered value");
        let (again, _) = key.seal(7, "db-password", b"hunter2").expect("sealed");
        assert_ne!(nonce, again, "a fresh nonce each time");
    }

    #[test]
    fn keys_are_64_hex_digits_and_a_missing_key_file_is_created_owner_only() {
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secrets.key");
        let first = SecretKey::load_or_create(&path).expect("created");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).expect("file").permissions());
        assert_eq!(mode & 0o777, 0o600);
        let (nonce, sealed) = first.seal(1, "x", b"v").expect("sealed");
        let second = SecretKey::load_or_create(&path).expect("read back");
        assert_eq!(second.open(1, "x", &nonce, &sealed).expect("the same key"), b"v");
    }

    #[test]
    fn secret_names_are_lowercase_labels() {
        for good in ["db", "db-password", "a1", &"a".repeat(63)] {
            assert!(check_secret_name(good).is_ok(), "{good}");
        }
        for bad in ["", "DB", "-db", "db-", "db_password", "../etc", "a.b", &"a".repeat(64)] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
    }
}
