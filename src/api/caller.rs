//! Who is calling: a session cookie or an API token, resolved the same way for the REST API
//! and for server functions; plus log-in, sign-up and log-out, which both front ends share.

use super::ApiError;
use super::session::{SessionBackend, SessionUser};
use crate::platform::Platform;
use crate::platform::auth::{Credentials, Principal};
use crate::platform::model::UserInfo;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The session layer's view of the caller.
pub type AuthSession = axum_login::AuthSession<SessionBackend>;

/// The name of kubefn's session cookie.
pub const SESSION_COOKIE: &str = "kubefn_session";

/// Whether the request carries kubefn's session cookie: without it no session can name a user,
/// so the session layers have nothing to load (invocations skip them, see
/// [`super::gateway::past_the_session_layers`]).
pub fn carries_session_cookie(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .any(|pair| pair.trim_start().split_once('=').is_some_and(|(name, _)| name.trim() == SESSION_COOKIE))
}

/// The authenticated caller; rejects with 401 when there is none.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl<S> FromRequestParts<S> for Caller
where
    Platform: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let platform = Platform::from_ref(state);
        principal_from_parts(parts, &platform).await?.map(Caller).ok_or_else(ApiError::unauthenticated)
    }
}

/// The caller behind a bearer token or the session, `None` when anonymous.
/// A bearer token that is present but wrong is an error, never a fall-back to the session.
pub async fn principal_from_parts(parts: &mut Parts, platform: &Platform) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let secret = value
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::new(401, "the Authorization header must be \"Bearer <token>\""))?;
        let user = platform.accounts.user_for_token(secret.trim()).await?;
        return match user {
            Some(user) => Ok(Some(Principal::from(&user))),
            None => Err(ApiError::new(401, "the API token is invalid or revoked; create a new one")),
        };
    }
    let session = session_from_parts(parts).await?;
    Ok(session.user.as_ref().map(|user| Principal::from(&user.0)))
}

/// The session of the request (the session layers must be installed).
pub async fn session_from_parts(parts: &mut Parts) -> Result<AuthSession, ApiError> {
    AuthSession::from_request_parts(parts, &())
        .await
        .map_err(|(_, message)| ApiError::internal(&std::io::Error::other(format!("session layer missing: {message}"))))
}

/// The client's address, when the server recorded it.
pub fn client_address(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
}

/// Checks the credentials (rate-limited per name and client) and starts a session.
pub async fn log_in(
    platform: &Platform,
    session: &mut AuthSession,
    client: Option<IpAddr>,
    name: String,
    password: String,
) -> Result<UserInfo, ApiError> {
    let user = platform
        .accounts
        .log_in(Credentials { name, password }, client)
        .await?
        .ok_or_else(|| ApiError::new(401, "wrong user name or password"))?;
    start_session(session, &user).await?;
    Ok(Principal::from(&user).info())
}

/// Creates an account (rate-limited per client) and starts its session.
pub async fn sign_up(
    platform: &Platform,
    session: &mut AuthSession,
    client: Option<IpAddr>,
    name: String,
    password: String,
) -> Result<UserInfo, ApiError> {
    let user = platform.accounts.sign_up(name.trim(), &password, client).await?;
    start_session(session, &user).await?;
    Ok(Principal::from(&user).info())
}

/// Logs `user` in under a fresh session id. axum-login cycles the id only when nobody was logged
/// in, so a session id someone else planted (or knew from their own log-in in that browser) would
/// otherwise become the new user's session.
async fn start_session(session: &mut AuthSession, user: &crate::platform::store::UserRecord) -> Result<(), ApiError> {
    session.session.cycle_id().await.map_err(|e| ApiError::internal(&e))?;
    session.login(&SessionUser(user.clone())).await.map_err(|e| ApiError::internal(&e))
}

/// Ends the session (a no-op when there is none).
pub async fn log_out(session: &mut AuthSession) -> Result<(), ApiError> {
    session.logout().await.map_err(|e| ApiError::internal(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::carries_session_cookie;
    use http::{HeaderMap, HeaderValue};

    fn cookies(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(http::header::COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_kubefns_own_cookie_counts_as_a_session() {
        assert!(carries_session_cookie(&cookies(&["kubefn_session=abc"])));
        assert!(carries_session_cookie(&cookies(&["theme=dark; kubefn_session=abc"])));
        assert!(carries_session_cookie(&cookies(&["theme=dark", "kubefn_session=abc"])));
        assert!(!carries_session_cookie(&cookies(&[])));
        assert!(!carries_session_cookie(&cookies(&["not_kubefn_session=abc; kubefn_session_x=1"])));
        assert!(!carries_session_cookie(&cookies(&["theme=kubefn_session=abc"])));
    }
}
