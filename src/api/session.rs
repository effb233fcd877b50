//! The session layer's side of accounts: axum-login's traits over the platform's
//! [`Accounts`], kept here so the core names no web framework.

use crate::platform::auth::{Accounts, AuthError, Credentials};
use crate::platform::store::UserRecord;

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
