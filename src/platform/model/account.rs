//! Accounts: roles, the signed-in user, API tokens and per-user quotas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A user's role.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Sees own and public functions and own instances.
    #[default]
    User,
    /// Sees and manages everything.
    Admin,
}

/// The signed-in user as the pages and the API show them.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name (a DNS-1123 label: it appears in gateway paths and object names).
    pub name: String,
    /// The user's role.
    pub role: Role,
}

/// A user's secret as listed: its name and dates, never its value.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name functions use for it (the file `/var/openfaas/secrets/NAME`).
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its value was last set.
    pub updated_at: DateTime<Utc>,
}

/// An API token as listed (the secret is shown only once, at creation).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Identifier used to revoke it.
    pub id: i64,
    /// The user's label for it.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used, if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A freshly created API token, secret included.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// The token's metadata.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret to send as `Authorization: Bearer …`; kubefn keeps only its hash.
    pub token: String,
}

/// Per-user limits an admin may set (`PUT /api/v1/admin/users/{name}/quota`); `None` means
/// kubefn's default ([`Quota::DEFAULT`]).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Functions the user may own.
    #[serde(default)]
    pub functions: Option<u32>,
    /// Versions of all their functions together.
    #[serde(default)]
    pub versions: Option<u32>,
    /// Instances the user may run.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Replicas of all their instances together, each counted at its most (its autoscaler's
    /// maximum, or the count it was scaled to).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// CPU of those replicas at their limits, in millicores.
    #[serde(default)]
    pub cpu_millicores: Option<u64>,
    /// Memory of those replicas at their limits, in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// Limits in force, or what a user uses of them.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Functions owned.
    pub functions: u32,
    /// Versions of all owned functions.
    pub versions: u32,
    /// Instances.
    pub instances: u32,
    /// Replicas of all instances, each at its most.
    pub replicas: u32,
    /// CPU of those replicas at their limits, in millicores.
    pub cpu_millicores: u64,
    /// Memory of those replicas at their limits, in bytes.
    pub memory_bytes: u64,
}

impl Quota {
    /// What every user may have until an admin says otherwise: room for real work on one
    /// account, not for one account to take a shared machine.
    pub const DEFAULT: Quota = Quota {
        functions: 100,
        versions: 2000,
        instances: 50,
        replicas: 100,
        cpu_millicores: 32_000,
        memory_bytes: 64 << 30,
    };

    /// The settings with kubefn's defaults where they are silent.
    pub fn from_settings(settings: &QuotaSettings) -> Quota {
        let d = Quota::DEFAULT;
        Quota {
            functions: settings.functions.unwrap_or(d.functions),
            versions: settings.versions.unwrap_or(d.versions),
            instances: settings.instances.unwrap_or(d.instances),
            replicas: settings.replicas.unwrap_or(d.replicas),
            cpu_millicores: settings.cpu_millicores.unwrap_or(d.cpu_millicores),
            memory_bytes: settings.memory_bytes.unwrap_or(d.memory_bytes),
        }
    }
}

/// A user's quota: what an admin set, what applies, and what they use.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// The user.
    pub user: String,
    /// What an admin set (`null`: the default).
    pub settings: QuotaSettings,
    /// The limits in force.
    pub quota: Quota,
    /// What the user uses now.
    pub used: Quota,
}
