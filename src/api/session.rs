//! The session layer's side of accounts: axum-login's traits over the platform's
//! [`Accounts`], kept here so the core names no web framework.

use crate::platform::auth::{Accounts, AuthError, Credentials};
use crate::platform::store::{DatabasePool, UserRecord};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

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

    /// Deletes expired sessions every `period` until aborted (an expired session is refused
    /// when it is loaded anyway; this keeps the table from growing with abandoned ones). Run by
    /// the process that leads.
    pub fn spawn_expiry_sweep(&self, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let sessions = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                if let Err(error) = sessions.delete_expired().await {
                    tracing::warn!(%error, "cannot delete expired sessions");
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for SessionRecords {
    async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            SessionRecords::Sqlite(store) => store.delete_expired().await,
            SessionRecords::Postgres(store) => store.delete_expired().await,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn rows(pool: &DatabasePool) -> i64 {
        let (count,): (i64,) = match pool {
            DatabasePool::Sqlite(pool) => sqlx::query_as("SELECT COUNT(*) FROM tower_sessions").fetch_one(pool).await,
            DatabasePool::Postgres(pool) => {
                sqlx::query_as("SELECT COUNT(*) FROM tower_sessions.session").fetch_one(pool).await
            }
        }
        .expect("count");
        count
    }

    #[tokio::test]
    async fn the_sweep_deletes_expired_sessions_and_keeps_live_ones() {
        for crate::platform::store::test_databases::TestStore { store, .. } in
            crate::platform::store::test_databases::test_stores().await
        {
            let sessions = SessionRecords::open(store.pool()).await.expect("the session table");
            let now = time::OffsetDateTime::now_utc();
            for expiry_date in [now - time::Duration::hours(1), now + time::Duration::days(7)] {
                let mut record = Record { id: Id::default(), data: Default::default(), expiry_date };
                sessions.create(&mut record).await.expect("stored");
            }
            assert_eq!(rows(store.pool()).await, 2);
            let sweep = sessions.spawn_expiry_sweep(std::time::Duration::from_secs(3600));
            for _ in 0..100 {
                if rows(store.pool()).await == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            sweep.abort();
            assert_eq!(rows(store.pool()).await, 1, "the expired one went at the first sweep, the live one stayed");
        }
    }
}
