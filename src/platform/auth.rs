//! Users, passwords, API tokens, roles and the log-in rate limit.
//!
//! [`Accounts`] is the axum-login backend (session log-in) and also answers API tokens, so
//! the REST API and the pages resolve the same [`Principal`].

use super::model::{FieldError, NewToken, Role, TokenInfo, UserInfo};
use super::store::{Store, StoreError, UserRecord};
use super::validation::{check_name, check_password, MAX_USER_NAME};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Failed log-ins allowed per user name within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_USER: usize = 5;
/// Failed log-ins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_CLIENT: usize = 20;
/// How long a failed log-in counts against its user name and client.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "kfn_";

/// Who is calling: the user behind a session or an API token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub id: i64,
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Principal {
    /// Whether the caller may see and manage everything.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The caller as pages and the API show it.
    pub fn info(&self) -> UserInfo {
        UserInfo { name: self.name.clone(), role: self.role }
    }
}

impl From<&UserRecord> for Principal {
    fn from(user: &UserRecord) -> Self {
        Principal { id: user.id, name: user.name.clone(), role: user.role }
    }
}

impl axum_login::AuthUser for UserRecord {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    /// Sessions are bound to the password hash, so changing a password ends every other session.
    fn session_auth_hash(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

/// A user name and password as typed at log-in.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub name: String,
    /// Password in clear; never logged (see the `Debug` impl).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("name", &self.name).field("password", &"<redacted>").finish()
    }
}

/// Whether anyone may create an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupPolicy {
    /// Anyone who reaches kubefn may sign up.
    #[default]
    Open,
    /// Only accounts made by an admin (or `--admin`) exist.
    Closed,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A field of the request is invalid.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The user name is taken.
    #[error("the user name {name:?} is taken; pick another")]
    NameTaken {
        /// The requested name.
        name: String,
    },
    /// Sign-up is closed.
    #[error("sign-up is closed on this kubefn; ask an admin for an account")]
    SignupClosed,
    /// Too many failed log-ins.
    #[error("too many failed log-ins; try again in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the next attempt is accepted.
        retry_after_s: u64,
    },
    /// The token does not exist or belongs to someone else.
    #[error("no API token {id} of yours exists")]
    NoSuchToken {
        /// The token id asked for.
        id: i64,
    },
    /// Hashing ran on a blocking thread that failed.
    #[error("password hashing failed")]
    Hashing(#[source] tokio::task::JoinError),
    /// The store failed.
    #[error("the user store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for AuthError {
    fn from(source: StoreError) -> Self {
        AuthError::Store(source)
    }
}

/// Users and tokens, with the log-in rate limit; cheap to clone.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: Store,
    signup: SignupPolicy,
    limiter: Arc<LoginLimiter>,
}

impl Accounts {
    /// Accounts over `store` with the given sign-up policy.
    pub fn new(store: Store, signup: SignupPolicy) -> Accounts {
        Accounts { store, signup, limiter: Arc::new(LoginLimiter::default()) }
    }

    /// Creates a user account (role `user`) if sign-up is open.
    pub async fn sign_up(&self, name: &str, password: &str) -> Result<UserRecord, AuthError> {
        if self.signup == SignupPolicy::Closed {
            return Err(AuthError::SignupClosed);
        }
        check_name("name", name, MAX_USER_NAME).map_err(AuthError::Invalid)?;
        check_password(password).map_err(AuthError::Invalid)?;
        let hash = hash_password(password).await?;
        match self.store.insert_user(name, &hash, Role::User).await {
            Err(StoreError::Duplicate { .. }) => Err(AuthError::NameTaken { name: name.to_string() }),
            other => Ok(other?),
        }
    }

    /// Makes sure an admin with this name and password exists (the `--admin` flag).
    pub async fn ensure_admin(&self, name: &str, password: &str) -> Result<UserRecord, AuthError> {
        check_name("name", name, MAX_USER_NAME).map_err(AuthError::Invalid)?;
        check_password(password).map_err(AuthError::Invalid)?;
        if let Some(existing) = self.store.user_by_name(name).await?
            && existing.role == Role::Admin && verify_password(password, &existing.password_hash).await? {
                return Ok(existing);
            }
        let hash = hash_password(password).await?;
        Ok(self.store.upsert_user(name, &hash, Role::Admin).await?)
    }

    /// Checks a log-in attempt from `client` against the rate limit and the stored hash.
    /// `Ok(None)` is a wrong name or password; every failure counts against the name and the client.
    pub async fn log_in(&self, credentials: Credentials, client: Option<IpAddr>) -> Result<Option<UserRecord>, AuthError> {
        let keys = LoginLimiter::keys(&credentials.name, client);
        if let Some(wait) = self.limiter.blocked_for(&keys, Instant::now()) {
            return Err(AuthError::RateLimited { retry_after_s: wait.as_secs().max(1) });
        }
        let user = self.check_credentials(credentials).await?;
        match &user {
            Some(_) => self.limiter.forget(&keys[..1]),
            None => self.limiter.record_failure(&keys, Instant::now()),
        }
        Ok(user)
    }

    async fn check_credentials(&self, credentials: Credentials) -> Result<Option<UserRecord>, AuthError> {
        let user = self.store.user_by_name(&credentials.name).await?;
        // Unknown names are checked against a dummy hash so timing does not reveal which names exist.
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => dummy_hash().await?,
        };
        let matches = verify_password(&credentials.password, &hash).await?;
        Ok(user.filter(|_| matches))
    }

    /// The user behind an API token secret, if the token exists.
    pub async fn user_for_token(&self, secret: &str) -> Result<Option<UserRecord>, AuthError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self.store.user_by_token_hash(&token_hash(secret)).await?)
    }

    /// Creates an API token for the caller; the secret is returned once and only its hash kept.
    pub async fn create_token(&self, owner: &Principal, name: &str) -> Result<NewToken, AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(AuthError::Invalid(FieldError::new("name", "name must be 1 to 100 characters, e.g. \"ci\" or \"laptop\"")));
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| AuthError::Invalid(FieldError::new("name", format!("no randomness available: {e}"))))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex(&random));
        let info = self.store.insert_token(owner.id, name, &token_hash(&secret)).await?;
        Ok(NewToken { info, token: secret })
    }

    /// The caller's tokens.
    pub async fn tokens(&self, owner: &Principal) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(self.store.tokens_of(owner.id).await?)
    }

    /// Revokes one of the caller's tokens.
    pub async fn revoke_token(&self, owner: &Principal, id: i64) -> Result<(), AuthError> {
        if self.store.delete_token(owner.id, id).await? {
            Ok(())
        } else {
            Err(AuthError::NoSuchToken { id })
        }
    }
}

impl axum_login::AuthnBackend for Accounts {
    type User = UserRecord;
    type Credentials = Credentials;
    type Error = AuthError;

    /// Plain credential check; rate limiting happens in [`Accounts::log_in`], which knows the client.
    async fn authenticate(&self, credentials: Credentials) -> Result<Option<UserRecord>, AuthError> {
        self.check_credentials(credentials).await
    }

    async fn get_user(&self, id: &i64) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.store.user_by_id(*id).await?)
    }
}

async fn hash_password(password: &str) -> Result<String, AuthError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || password_auth::generate_hash(password)).await.map_err(AuthError::Hashing)
}

async fn verify_password(password: &str, hash: &str) -> Result<bool, AuthError> {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || password_auth::verify_password(password, &hash).is_ok())
        .await
        .map_err(AuthError::Hashing)
}

async fn dummy_hash() -> Result<String, AuthError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash.clone());
    }
    let hash = hash_password("kubefn-dummy-password").await?;
    Ok(DUMMY.get_or_init(|| hash).clone())
}

fn token_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts failed log-ins per user name and per client in a sliding window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// The keys an attempt counts against: the user name first, then the client address.
    fn keys(name: &str, client: Option<IpAddr>) -> Vec<String> {
        let mut keys = vec![format!("user:{name}")];
        if let Some(client) = client {
            keys.push(format!("client:{client}"));
        }
        keys
    }

    fn limit(key: &str) -> usize {
        if key.starts_with("user:") { MAX_FAILURES_PER_USER } else { MAX_FAILURES_PER_CLIENT }
    }

    /// How long until an attempt on these keys is accepted, or `None` when it is now.
    pub fn blocked_for(&self, keys: &[String], now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter()
            .filter_map(|key| {
                let times = failures.get_mut(key)?;
                while times.front().is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW) {
                    times.pop_front();
                }
                let excess = times.len().checked_sub(Self::limit(key))?;
                // Blocked until enough of the oldest failures leave the window.
                times.get(excess).map(|t| FAILURE_WINDOW.saturating_sub(now.duration_since(*t)))
            })
            .max()
    }

    /// Counts a failed attempt against every key.
    pub fn record_failure(&self, keys: &[String], now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bound memory under a flood of distinct names: drop entries whose window has passed.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
        for key in keys {
            failures.entry(key.clone()).or_default().push_back(now);
        }
    }

    /// Clears the failures of these keys after a successful log-in.
    pub fn forget(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_failure_within_the_window_is_blocked_until_the_first_expires() {
        let limiter = LoginLimiter::default();
        let keys = LoginLimiter::keys("alice", None);
        let start = Instant::now();
        for i in 0..MAX_FAILURES_PER_USER {
            assert_eq!(limiter.blocked_for(&keys, start), None, "attempt {i}");
            limiter.record_failure(&keys, start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(10);
        assert_eq!(limiter.blocked_for(&keys, now), Some(FAILURE_WINDOW - Duration::from_secs(10)));
        assert_eq!(limiter.blocked_for(&keys, start + FAILURE_WINDOW), None);
    }

    #[test]
    fn clients_are_limited_across_names() {
        let limiter = LoginLimiter::default();
        let client = Some(IpAddr::from([127, 0, 0, 9]));
        let now = Instant::now();
        for i in 0..MAX_FAILURES_PER_CLIENT {
            limiter.record_failure(&LoginLimiter::keys(&format!("user{i}"), client), now);
        }
        assert!(limiter.blocked_for(&LoginLimiter::keys("someone-new", client), now).is_some());
        assert!(limiter.blocked_for(&LoginLimiter::keys("someone-new", None), now).is_none());
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials { name: "bob".into(), password: "hunter2-secret".into() };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }

    #[test]
    fn token_hashes_are_hex_sha256() {
        assert_eq!(token_hash("kfn_x").len(), 64);
        assert_ne!(token_hash("kfn_x"), token_hash("kfn_y"));
    }
}
