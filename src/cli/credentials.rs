//! Where `kubefn login` keeps what the other commands need: the kubefn's URL and an API token,
//! in `$XDG_CONFIG_HOME/kubefn/credentials.json` (or `~/.config/kubefn/…`), readable by the
//! user only. The password itself is never stored.

use super::CliError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// A kubefn and the token to call it with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// The kubefn's URL, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    /// The user the token belongs to.
    pub user: String,
    /// The API token (`kfn_…`).
    pub token: String,
}

/// The credentials file: `$XDG_CONFIG_HOME/kubefn/credentials.json`, else under `~/.config`.
pub fn path() -> Result<PathBuf, CliError> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").filter(|home| !home.is_empty()).map(|home| PathBuf::from(home).join(".config"))
        })
        .ok_or_else(|| CliError::usage("neither XDG_CONFIG_HOME nor HOME is set: kubefn cannot keep a login"))?;
    Ok(config.join("kubefn").join("credentials.json"))
}

/// The stored credentials, if `kubefn login` stored any.
pub fn load() -> Result<Option<Credentials>, CliError> {
    let path = path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            CliError::usage(format!("{} is not a kubefn login ({error}); run kubefn login again", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::Local { what: format!("cannot read {}", path.display()), source }),
    }
}

/// Stores `credentials`, replacing any earlier login; the file is the user's alone (0600).
pub fn save(credentials: &Credentials) -> Result<PathBuf, CliError> {
    let path = path()?;
    let local = |what: String| move |source| CliError::Local { what, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(local(format!("cannot create {}", dir.display())))?;
    }
    let text = serde_json::to_vec_pretty(credentials).map_err(|error| CliError::usage(error.to_string()))?;
    // Written beside and renamed over: a crash never leaves half a file, and the mode is set
    // before the token is in it.
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(local(format!("cannot write {}", partial.display())))?;
    file.write_all(&text).map_err(local(format!("cannot write {}", partial.display())))?;
    std::fs::rename(&partial, &path).map_err(local(format!("cannot write {}", path.display())))?;
    Ok(path)
}
