//! Per-user quotas: how many functions, versions, instances and replicas a user may have, and
//! how much CPU and memory their instances may claim. Admins set them per user; until then
//! [`Quota::DEFAULT`] applies. Every change that would take a user past one is refused with the
//! limit named, before anything is recorded or started.
//!
//! Instances are counted at their most: each replica its autoscaler may start (or the count it
//! was scaled to, if higher), at its CPU and memory *limits*, so what a user holds never
//! outgrows the quota while the autoscaler works.

use super::auth::Principal;
use super::model::{FieldError, FunctionSpec, Quota, QuotaReport, QuotaSettings};
use super::store::{Store, StoreError, UserRecord};
use super::validation::{parse_cpu_millis, parse_memory_bytes};

/// Why a quota check or change failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The change would take the user past a limit.
    #[error(
        "this would make {would_be} {limit} for {user}, over the quota of {quota}; delete something first, or ask an admin to raise the quota"
    )]
    Exceeded {
        /// The user whose quota it is.
        user: String,
        /// Which limit: `functions`, `versions`, `instances`, `replicas`, `cpu`, `memory`.
        limit: &'static str,
        /// The limit, in words (`8 cores`).
        quota: String,
        /// What the user would have.
        would_be: String,
    },
    /// Only admins set quotas or read other users'.
    #[error("only admins may see or set another user's quota")]
    AdminOnly,
    /// No such user.
    #[error("no user named {name:?} exists")]
    NoSuchUser {
        /// The name asked for.
        name: String,
    },
    /// A setting is out of range.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The store failed.
    #[error("the quota store failed")]
    Store(#[from] StoreError),
}

/// The replicas, CPU and memory one instance claims at its most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Replicas.
    pub replicas: u32,
    /// CPU at the limits, in millicores.
    pub cpu_millicores: u64,
    /// Memory at the limits, in bytes.
    pub memory_bytes: u64,
}

impl Footprint {
    /// An instance of `spec` scaled to `replicas`: the larger of that and its autoscaler's
    /// maximum, each replica at the spec's limits.
    pub fn of(spec: &FunctionSpec, replicas: u32) -> Footprint {
        let replicas = replicas.max(spec.scaling.max).max(spec.scaling.min);
        let cpu = parse_cpu_millis(&spec.resources.cpu_limit).unwrap_or(0);
        let memory = parse_memory_bytes(&spec.resources.memory_limit).unwrap_or(0);
        Footprint {
            replicas,
            cpu_millicores: cpu.saturating_mul(u64::from(replicas)),
            memory_bytes: memory.saturating_mul(u64::from(replicas)),
        }
    }
}

/// The quota service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Quotas {
    store: Store,
}

impl Quotas {
    /// Quotas over `store`.
    pub fn new(store: Store) -> Quotas {
        Quotas { store }
    }

    /// The limits in force for a user.
    pub async fn quota_of(&self, user_id: i64) -> Result<Quota, QuotaError> {
        Ok(Quota::from_settings(&self.store.quota_settings(user_id).await?))
    }

    /// Refuses a new function (and so its first version) past the owner's quota.
    pub async fn check_new_function(&self, owner_id: i64) -> Result<(), QuotaError> {
        let quota = self.quota_of(owner_id).await?;
        let (functions, versions) = self.store.owned_counts(owner_id).await?;
        self.within(owner_id, "functions", u64::from(functions) + 1, u64::from(quota.functions), plain).await?;
        self.within(owner_id, "versions", u64::from(versions) + 1, u64::from(quota.versions), plain).await
    }

    /// Refuses a new version past the owner's quota.
    pub async fn check_new_version(&self, owner_id: i64) -> Result<(), QuotaError> {
        let quota = self.quota_of(owner_id).await?;
        let (_, versions) = self.store.owned_counts(owner_id).await?;
        self.within(owner_id, "versions", u64::from(versions) + 1, u64::from(quota.versions), plain).await
    }

    /// Refuses a set of instances (what the user would run after a change) past their quota.
    pub async fn check_instances(&self, user_id: i64, instances: &[Footprint]) -> Result<(), QuotaError> {
        let quota = self.quota_of(user_id).await?;
        let total = total(instances);
        self.within(user_id, "instances", u64::from(total.instances), u64::from(quota.instances), plain).await?;
        self.within(user_id, "replicas", u64::from(total.replicas), u64::from(quota.replicas), plain).await?;
        self.within(user_id, "cpu", total.cpu_millicores, quota.cpu_millicores, cores).await?;
        self.within(user_id, "memory", total.memory_bytes, quota.memory_bytes, gibibytes).await
    }

    /// `user`'s quota and use (`instances`: their instances' footprints).
    pub async fn report(&self, user: &UserRecord, instances: &[Footprint]) -> Result<QuotaReport, QuotaError> {
        let settings = self.store.quota_settings(user.id).await?;
        let (functions, versions) = self.store.owned_counts(user.id).await?;
        let used = Quota { functions, versions, ..total(instances) };
        Ok(QuotaReport { user: user.name.clone(), quota: Quota::from_settings(&settings), settings, used })
    }

    /// Sets a user's quota (admins only). Lowering it below what the user has is allowed: it
    /// refuses their next addition, and takes nothing away.
    pub async fn set(&self, caller: &Principal, name: &str, settings: &QuotaSettings) -> Result<(), QuotaError> {
        if !caller.is_admin() {
            return Err(QuotaError::AdminOnly);
        }
        let user = self.user(caller, name).await?;
        let too_big = [("cpu_millicores", settings.cpu_millicores), ("memory_bytes", settings.memory_bytes)]
            .into_iter()
            .find(|(_, value)| value.is_some_and(|v| i64::try_from(v).is_err()));
        if let Some((field, _)) = too_big {
            return Err(QuotaError::Invalid(FieldError::new(field, format!("{field} must be at most {}", i64::MAX))));
        }
        Ok(self.store.set_quota_settings(user.id, settings).await?)
    }

    /// The user `name`, if the caller may see their quota (their own, or anyone's for an admin).
    pub async fn user(&self, caller: &Principal, name: &str) -> Result<UserRecord, QuotaError> {
        if caller.name != name && !caller.is_admin() {
            return Err(QuotaError::AdminOnly);
        }
        self.store.user_by_name(name).await?.ok_or_else(|| QuotaError::NoSuchUser { name: name.to_string() })
    }

    async fn within(
        &self,
        user_id: i64,
        limit: &'static str,
        would_be: u64,
        quota: u64,
        words: fn(u64) -> String,
    ) -> Result<(), QuotaError> {
        if would_be <= quota {
            return Ok(());
        }
        let user = self.store.user_by_id(user_id).await?.map_or_else(|| "this user".to_string(), |u| u.name);
        Err(QuotaError::Exceeded { user, limit, quota: words(quota), would_be: words(would_be) })
    }
}

/// The instances together, as a [`Quota`] of use (functions and versions left at zero).
fn total(instances: &[Footprint]) -> Quota {
    instances.iter().fold(
        Quota { instances: u32::try_from(instances.len()).unwrap_or(u32::MAX), ..Quota::default() },
        |sum, f| Quota {
            replicas: sum.replicas.saturating_add(f.replicas),
            cpu_millicores: sum.cpu_millicores.saturating_add(f.cpu_millicores),
            memory_bytes: sum.memory_bytes.saturating_add(f.memory_bytes),
            ..sum
        },
    )
}

fn plain(value: u64) -> String {
    value.to_string()
}

fn cores(millicores: u64) -> String {
    format!("{} cores", millicores as f64 / 1000.0)
}

fn gibibytes(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_counts_at_its_most_replicas_and_its_limits() {
        let mut spec: FunctionSpec =
            serde_json::from_value(serde_json::json!({"name": "f", "runtime": "python"})).expect("spec");
        spec.scaling.min = 1;
        spec.scaling.max = 4;
        spec.resources.cpu_limit = "500m".into();
        spec.resources.memory_limit = "256Mi".into();
        assert_eq!(
            Footprint::of(&spec, 1),
            Footprint { replicas: 4, cpu_millicores: 2000, memory_bytes: (4 * 256) << 20 }
        );
        assert_eq!(Footprint::of(&spec, 6).replicas, 6, "scaled by hand past the maximum");
        let sum = total(&[Footprint::of(&spec, 1), Footprint::of(&spec, 6)]);
        assert_eq!((sum.instances, sum.replicas, sum.cpu_millicores), (2, 10, 5000));
    }

    #[test]
    fn limits_read_in_words() {
        assert_eq!(cores(1500), "1.5 cores");
        assert_eq!(gibibytes(3 << 29), "1.50 GiB");
    }
}
