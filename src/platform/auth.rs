//! Users, passwords, API tokens, roles and the log-in and sign-up rate limits (counted by
//! [`super::rate_limits`]).
//!
//! [`Accounts`] backs the session layer (the API layer adapts it to axum-login, see
//! `api/session.rs`) and also answers API tokens, so the REST API and the pages resolve the
//! same [`Principal`].

use super::model::{FieldError, NewToken, Role, TokenInfo, UserInfo};
#[cfg(test)]
use super::rate_limits::AttemptCounter;
use super::rate_limits::AttemptLimit;
use super::store::{Store, StoreError, UserRecord};
use super::validation::{MAX_USER_NAME, check_name, check_password};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Failed log-ins allowed per user name from one client within [`FAILURE_WINDOW`]. Keyed on
/// both, so nobody can lock a named user out from elsewhere.
pub const MAX_FAILURES_PER_USER: usize = 5;
/// Failed log-ins allowed per client address within [`FAILURE_WINDOW`], whatever the names.
pub const MAX_FAILURES_PER_CLIENT: usize = 20;
/// How long a failed log-in counts against its user name and client.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Sign-ups one client address may attempt within [`SIGNUP_WINDOW`].
pub const MAX_SIGNUPS_PER_CLIENT: usize = 20;
/// How long a sign-up counts against its client.
pub const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);
/// Password hashes waiting for a thread at most; more are refused with a retry hint rather
/// than queued without bound (each one is deliberately expensive).
pub const MAX_WAITING_HASHES: usize = 64;
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
    /// Too many sign-ups from this client.
    #[error("too many sign-ups from your address; try again in {retry_after_s} s")]
    SignupsLimited {
        /// Seconds until the next sign-up is accepted.
        retry_after_s: u64,
    },
    /// Too many passwords are being checked at once.
    #[error("kubefn is checking too many passwords at once; try again in a second")]
    HashingBusy,
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

/// Users and tokens, with the log-in and sign-up rate limits and the bound on password
/// hashing; cheap to clone.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: Store,
    signup: SignupPolicy,
    failed_log_ins: Arc<AttemptLimit>,
    sign_ups: Arc<AttemptLimit>,
}

impl Accounts {
    /// Accounts over `store` with the given sign-up policy.
    pub fn new(store: Store, signup: SignupPolicy) -> Accounts {
        Accounts {
            failed_log_ins: Arc::new(AttemptLimit::for_store(&store, "failed-log-in", FAILURE_WINDOW)),
            sign_ups: Arc::new(AttemptLimit::for_store(&store, "sign-up", SIGNUP_WINDOW)),
            store,
            signup,
        }
    }

    /// Creates a user account (role `user`) if sign-up is open; `client` may attempt
    /// [`MAX_SIGNUPS_PER_CLIENT`] within [`SIGNUP_WINDOW`].
    pub async fn sign_up(&self, name: &str, password: &str, client: Option<IpAddr>) -> Result<UserRecord, AuthError> {
        if self.signup == SignupPolicy::Closed {
            return Err(AuthError::SignupClosed);
        }
        check_name("name", name, MAX_USER_NAME).map_err(AuthError::Invalid)?;
        check_password(password).map_err(AuthError::Invalid)?;
        let keys = [(format!("signup:{}", client_key(client)), MAX_SIGNUPS_PER_CLIENT)];
        if let Some(wait) = self.sign_ups.blocked_for(&keys).await? {
            return Err(AuthError::SignupsLimited { retry_after_s: wait.as_secs().max(1) });
        }
        self.sign_ups.record(&keys).await?;
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
            && existing.role == Role::Admin
            && verify_password(password, &existing.password_hash).await?
        {
            return Ok(existing);
        }
        let hash = hash_password(password).await?;
        Ok(self.store.upsert_user(name, &hash, Role::Admin).await?)
    }

    /// Checks a log-in attempt from `client` against the rate limit and the stored hash.
    /// `Ok(None)` is a wrong name or password; every failure counts against the name from this
    /// client and against the client.
    pub async fn log_in(
        &self,
        credentials: Credentials,
        client: Option<IpAddr>,
    ) -> Result<Option<UserRecord>, AuthError> {
        let keys = log_in_keys(&credentials.name, client);
        if let Some(wait) = self.failed_log_ins.blocked_for(&keys).await? {
            return Err(AuthError::RateLimited { retry_after_s: wait.as_secs().max(1) });
        }
        let user = self.check_credentials(credentials).await?;
        match &user {
            Some(_) => self.failed_log_ins.forget(&keys[..1]).await?,
            None => self.failed_log_ins.record(&keys).await?,
        }
        Ok(user)
    }

    /// The user whose credentials these are, without the rate limits of [`Accounts::log_in`]
    /// (which knows the client): only for checks that follow one.
    pub async fn check_credentials(&self, credentials: Credentials) -> Result<Option<UserRecord>, AuthError> {
        let user = self.store.user_by_name(&credentials.name).await?;
        // Unknown names are checked against a dummy hash so timing does not reveal which names exist.
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => dummy_hash().await?,
        };
        let matches = verify_password(&credentials.password, &hash).await?;
        Ok(user.filter(|_| matches))
    }

    /// The user with this id, if there still is one (a session names its user by id).
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.store.user_by_id(id).await?)
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
            return Err(AuthError::Invalid(FieldError::new(
                "name",
                "name must be 1 to 100 characters, e.g. \"ci\" or \"laptop\"",
            )));
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| AuthError::Invalid(FieldError::new("name", format!("no randomness available: {e}"))))?;
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
        if self.store.delete_token(owner.id, id).await? { Ok(()) } else { Err(AuthError::NoSuchToken { id }) }
    }
}

/// Threads for password hashing: at most `running` hashes at once and `max_waiting` waiting for
/// one; past that, [`AuthError::HashingBusy`] (a 429) instead of an unbounded queue, since each
/// hash is deliberately expensive and a flood of log-ins or sign-ups would take every thread.
#[derive(Debug)]
struct HashingSlots {
    running: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

impl HashingSlots {
    fn new(running: usize, max_waiting: usize) -> HashingSlots {
        HashingSlots { running: tokio::sync::Semaphore::new(running), waiting: Default::default(), max_waiting }
    }

    /// kubefn's: one hash per core, [`MAX_WAITING_HASHES`] waiting.
    fn shared() -> &'static HashingSlots {
        static SLOTS: OnceLock<HashingSlots> = OnceLock::new();
        SLOTS.get_or_init(|| {
            HashingSlots::new(std::thread::available_parallelism().map_or(2, usize::from), MAX_WAITING_HASHES)
        })
    }

    /// Runs `work` on a blocking thread once a slot is free.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        use std::sync::atomic::Ordering;
        let permit = match self.running.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(AuthError::HashingBusy);
                }
                let acquired = self.running.acquire().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                acquired.map_err(|_| AuthError::HashingBusy)?
            }
        };
        let result = tokio::task::spawn_blocking(work).await.map_err(AuthError::Hashing);
        drop(permit);
        result
    }
}

async fn hash_password(password: &str) -> Result<String, AuthError> {
    let password = password.to_string();
    HashingSlots::shared().run(move || password_auth::generate_hash(password)).await
}

async fn verify_password(password: &str, hash: &str) -> Result<bool, AuthError> {
    let (password, hash) = (password.to_string(), hash.to_string());
    HashingSlots::shared().run(move || password_auth::verify_password(password, &hash).is_ok()).await
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

/// The keys a log-in attempt counts against, with their limits: the user name from this client
/// first, then the client whatever the name.
fn log_in_keys(name: &str, client: Option<IpAddr>) -> Vec<(String, usize)> {
    let client = client_key(client);
    vec![
        (format!("login:{name}@{client}"), MAX_FAILURES_PER_USER),
        (format!("client:{client}"), MAX_FAILURES_PER_CLIENT),
    ]
}

/// A client's address as a key; requests without one (built in-process) share `-`.
fn client_key(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "-".to_string(), |client| client.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::time::Instant;

    #[test]
    fn the_sixth_failure_within_the_window_is_blocked_until_the_first_expires() {
        let limiter = AttemptCounter::new(FAILURE_WINDOW);
        let keys = log_in_keys("alice", None);
        let start = Instant::now();
        for i in 0..MAX_FAILURES_PER_USER {
            assert_eq!(limiter.blocked_for(&keys, start), None, "attempt {i}");
            limiter.record(&keys, start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(10);
        assert_eq!(limiter.blocked_for(&keys, now), Some(FAILURE_WINDOW - Duration::from_secs(10)));
        assert_eq!(limiter.blocked_for(&keys, start + FAILURE_WINDOW), None);
    }

    #[test]
    fn clients_are_limited_across_names() {
        let limiter = AttemptCounter::new(FAILURE_WINDOW);
        let client = Some(IpAddr::from([127, 0, 0, 9]));
        let now = Instant::now();
        for i in 0..MAX_FAILURES_PER_CLIENT {
            limiter.record(&log_in_keys(&format!("user{i}"), client), now);
        }
        assert!(limiter.blocked_for(&log_in_keys("someone-new", client), now).is_some());
        assert!(limiter.blocked_for(&log_in_keys("someone-new", None), now).is_none());
    }

    #[test]
    fn failures_against_a_name_from_one_client_do_not_lock_it_out_elsewhere() {
        let limiter = AttemptCounter::new(FAILURE_WINDOW);
        let (attacker, owner) = (Some(IpAddr::from([10, 0, 0, 66])), Some(IpAddr::from([10, 0, 0, 7])));
        let now = Instant::now();
        for _ in 0..MAX_FAILURES_PER_USER {
            limiter.record(&log_in_keys("alice", attacker), now);
        }
        assert!(limiter.blocked_for(&log_in_keys("alice", attacker), now).is_some());
        assert!(limiter.blocked_for(&log_in_keys("alice", owner), now).is_none());
    }

    #[tokio::test]
    async fn hashes_past_the_running_and_waiting_slots_are_refused_not_queued() {
        let slots = Arc::new(HashingSlots::new(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let slow = |slots: Arc<HashingSlots>, hold: Arc<Mutex<std::sync::mpsc::Receiver<()>>>| {
            tokio::spawn(async move { slots.run(move || hold.lock().recv().is_ok()).await })
        };
        let running = slow(slots.clone(), hold.clone());
        while slots.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let waiting = slow(slots.clone(), hold.clone());
        while slots.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(slots.run(|| true).await, Err(AuthError::HashingBusy)), "a third is refused at once");
        release.send(()).expect("release the first");
        release.send(()).expect("release the second");
        assert!(running.await.expect("joined").expect("ran"));
        assert!(waiting.await.expect("joined").expect("ran after waiting"));
        assert!(slots.run(|| true).await.expect("free again"));
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
