//! The signed-in user, shared by every page through context (the app provides it).

use crate::api::ApiError;
use crate::api::functions::{LogIn, LogOut, SignUp};
use crate::platform::model::UserInfo;
use leptos::prelude::*;

/// The signed-in user and the actions that change it, shared by every page through context.
#[derive(Clone, Copy)]
pub struct Session {
    /// The current user (`None` when logged out), refetched after log-in, sign-up and log-out.
    pub user: Resource<Result<Option<UserInfo>, ApiError>>,
    /// Log-in.
    pub log_in: ServerAction<LogIn>,
    /// Sign-up.
    pub sign_up: ServerAction<SignUp>,
    /// Log-out.
    pub log_out: ServerAction<LogOut>,
}
