//! The secrets a function names: valid, unique names, and variables that collide with neither
//! its own env nor kubefn's; registry credentials only for image functions.

use super::{RESERVED_ENV, RESERVED_ENV_PREFIX, is_env_name};
use crate::platform::model::{FieldError, FunctionSpec, Language};

/// Secrets one function may read.
pub const MAX_SECRETS_PER_FUNCTION: usize = 20;

pub(super) fn check_secrets(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    if spec.secrets.len() > MAX_SECRETS_PER_FUNCTION {
        errors.push(FieldError::new(
            "secrets",
            format!("a function may read at most {MAX_SECRETS_PER_FUNCTION} secrets"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, secret) in spec.secrets.iter().enumerate() {
        let field = format!("secrets[{index}]");
        if let Err(error) = crate::platform::secrets::check_secret_name(&secret.name) {
            errors.push(FieldError::new(format!("{field}.name"), error.message));
        } else if !seen.insert(secret.name.as_str()) {
            errors.push(FieldError::new(format!("{field}.name"), format!("secret {} is listed twice", secret.name)));
        }
        let Some(env) = &secret.env else { continue };
        let problem = if !is_env_name(env) {
            Some(format!(
                "environment variable name {env:?} must be letters, digits and '_', not starting with a digit"
            ))
        } else if RESERVED_ENV.contains(&env.as_str()) || env.starts_with(RESERVED_ENV_PREFIX) {
            Some(format!("environment variable {env} is set by kubefn itself and cannot be overridden"))
        } else if spec.env.contains_key(env) {
            Some(format!("environment variable {env} is also in env; give it one source"))
        } else {
            None
        };
        if let Some(message) = problem {
            errors.push(FieldError::new(format!("{field}.env"), message));
        }
    }
    if let Some(name) = &spec.registry_secret {
        if spec.runtime != Language::Image {
            errors.push(FieldError::new(
                "registry_secret",
                "registry credentials are for image functions; Python and Node functions run on kubefn's own images",
            ));
        } else if let Err(error) = crate::platform::secrets::check_secret_name(name) {
            errors.push(FieldError::new("registry_secret", error.message));
        }
    }
}
