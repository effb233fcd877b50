//! The session layer's side of accounts: axum-login's traits over the platform's
//! [`Accounts`], kept here so the core names no web framework.

use crate::platform::auth::{Accounts, AuthError, Credentials};
use crate::platform::store::{DatabasePool, UserRecord};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// A signed-in user as the session layer holds it.
#[derive(Clone, Debug)]
pub struct SessionUser(pub UserRecord);

impl axum_login::AuthUser for SessionUser {
    type Id = i64;

    fn id(&self) -> i64 {
        self.0.id
    }

    /// Sessions are bound to the password hash, so changing a password ends every other session.
    fn session_auth_hash(&self) -> &[u8] {
        self.0.password_hash.as_bytes()
    }
}

/// axum-login's backend: the platform's accounts.
#[derive(Clone, Debug)]
pub struct SessionBackend(pub Accounts);

impl axum_login::AuthnBackend for SessionBackend {
    type User = SessionUser;
    type Credentials = Credentials;
    type Error = AuthError;

    /// Plain credential check; rate limiting happens in [`Accounts::log_in`], which knows the
    /// client (kubefn logs users in with it and then hands the user to the session).
    async fn authenticate(&self, credentials: Credentials) -> Result<Option<SessionUser>, AuthError> {
        Ok(self.0.check_credentials(credentials).await?.map(SessionUser))
    }

    async fn get_user(&self, id: &i64) -> Result<Option<SessionUser>, AuthError> {
        Ok(self.0.user_by_id(*id).await?.map(SessionUser))
    }
}

/// Where sessions are kept: the same database as everything else, so any kubefn process on it
/// can answer any signed-in request. tower-sessions' sqlx stores are one type per database; this
/// is whichever the platform's store runs on.
#[derive(Clone, Debug)]
pub enum SessionRecords {
    /// Sessions in the SQLite file.
    Sqlite(tower_sessions_sqlx_store::SqliteStore),
    /// Sessions in PostgreSQL (schema `tower_sessions`).
    Postgres(tower_sessions_sqlx_store::PostgresStore),
}

impl SessionRecords {
    /// The session store on `pool`'s database, its table created when missing.
    pub async fn open(pool: &DatabasePool) -> Result<SessionRecords, sqlx::Error> {
        Ok(match pool {
            DatabasePool::Sqlite(pool) => {
                let store = tower_sessions_sqlx_store::SqliteStore::new(pool.clone());
                store.migrate().await?;
                SessionRecords::Sqlite(store)
            }
            DatabasePool::Postgres(pool) => {
                let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
                store.migrate().await?;
                SessionRecords::Postgres(store)
            }
        })
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionRecords {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            SessionRecords::Sqlite(store) => store.create(record).await,
            SessionRecords::Postgres(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            SessionRecords::Sqlite(store) => store.save(record).await,
            SessionRecords::Postgres(store) => store.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            SessionRecords::Sqlite(store) => store.load(id).await,
            SessionRecords::Postgres(store) => store.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            SessionRecords::Sqlite(store) => store.delete(id).await,
            SessionRecords::Postgres(store) => store.delete(id).await,
        }
    }
}
