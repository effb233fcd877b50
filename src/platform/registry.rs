//! The function registry: register, edit (a new immutable version), list, show, roll back and
//! unregister, with the visibility and ownership rules in one place.
//!
//! Rules: a function is seen by its owner, by admins, and by everyone when public. Only the
//! owner or an admin changes it. A private function of someone else answers "not found", so
//! its existence does not leak through reads.

use super::auth::Principal;
use super::model::{
    FieldError, FunctionDetail, FunctionListPage, FunctionSpec, FunctionSummary, VersionDetail, Visibility,
};
use super::quotas::{QuotaError, Quotas};
use super::store::{FunctionRecord, Store, StoreError};
use super::validation::check_function_spec;
use std::sync::Arc;
use tokio::sync::Notify;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The spec has invalid fields (all of them are listed).
    #[error("{}", .0.first().map_or("invalid function", |e| e.message.as_str()))]
    Invalid(Vec<FieldError>),
    /// No function of that name is visible to the caller.
    #[error("no function named {name:?} exists (or it is private)")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// No such version.
    #[error("function {name:?} has no version {version}")]
    NoSuchVersion {
        /// The function.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// The caller may see the function but not change it.
    #[error("only the owner ({owner}) or an admin may {action} function {name:?}")]
    Forbidden {
        /// The function.
        name: String,
        /// Its owner.
        owner: String,
        /// What was attempted.
        action: &'static str,
    },
    /// The name is taken.
    #[error("a function named {name:?} exists already; pick another name or edit that one")]
    NameTaken {
        /// The requested name.
        name: String,
    },
    /// Instances still run.
    #[error("function {name:?} still has {instances} instance(s); delete them before unregistering it")]
    InUse {
        /// The function.
        name: String,
        /// How many instances exist.
        instances: u32,
    },
    /// The owner's quota allows no more.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The store failed.
    #[error("the function store failed")]
    Store(#[source] StoreError),
}

impl RegistryError {
    /// The invalid field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            RegistryError::Invalid(errors) => errors.first().map(|e| e.field.as_str()),
            RegistryError::NameTaken { .. } => Some("name"),
            RegistryError::NoSuchVersion { .. } => Some("version"),
            _ => None,
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(source: StoreError) -> Self {
        RegistryError::Store(source)
    }
}

type RegistryResult<T> = Result<T, RegistryError>;

/// The registry over the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    store: Store,
    quotas: Quotas,
    changed: Arc<Notify>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Registry {
        Registry { quotas: Quotas::new(store.clone()), store, changed: Arc::default() }
    }

    /// Signalled whenever a function's current version changes (an edit or a rollback), so
    /// instances can roll out the new one without waiting for the next periodic pass.
    pub fn current_version_changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Registers a new function owned by the caller, as version 1.
    pub async fn register(&self, caller: &Principal, spec: FunctionSpec) -> RegistryResult<FunctionDetail> {
        let spec = normalized(spec);
        invalid_unless_empty(check_function_spec(&spec))?;
        self.quotas.check_new_function(caller.id).await?;
        let record = match self.store.insert_function(caller.id, &spec).await {
            Err(StoreError::Duplicate { .. }) => return Err(RegistryError::NameTaken { name: spec.name }),
            other => other?,
        };
        self.detail(record).await
    }

    /// Records an edit as the next version and makes it current.
    pub async fn update(&self, caller: &Principal, name: &str, spec: FunctionSpec) -> RegistryResult<FunctionDetail> {
        let record = self.changeable(caller, name, "edit").await?;
        let spec = normalized(spec);
        if spec.name != record.name {
            return Err(RegistryError::Invalid(vec![FieldError::new(
                "name",
                format!("name must stay {:?}; functions cannot be renamed, register a new one instead", record.name),
            )]));
        }
        invalid_unless_empty(check_function_spec(&spec))?;
        // An admin's edit counts against the owner's quota: the versions are the owner's.
        self.quotas.check_new_version(record.owner_id).await?;
        self.store.add_version(record.id, &spec, caller.id).await?;
        self.changed.notify_one();
        self.detail_by_name(name).await
    }

    /// Points the function at an earlier (or later) existing version.
    pub async fn rollback(&self, caller: &Principal, name: &str, version: u32) -> RegistryResult<FunctionDetail> {
        let record = self.changeable(caller, name, "roll back").await?;
        if !self.store.set_current_version(record.id, version).await? {
            return Err(RegistryError::NoSuchVersion { name: name.to_string(), version });
        }
        self.changed.notify_one();
        self.detail_by_name(name).await
    }

    /// Removes a function and all its versions; refused while instances of it exist.
    pub async fn unregister(&self, caller: &Principal, name: &str) -> RegistryResult<()> {
        let record = self.changeable(caller, name, "unregister").await?;
        if self.store.delete_unused_function(record.id).await? {
            return Ok(());
        }
        let instances = self.store.instance_count(record.id).await?;
        Err(RegistryError::InUse { name: name.to_string(), instances })
    }

    /// The functions the caller may see: own and public ones (admins: all), by name.
    pub async fn list(&self, caller: &Principal) -> RegistryResult<Vec<FunctionSummary>> {
        let viewer = if caller.is_admin() { None } else { Some(caller.id) };
        let records = self.store.visible_functions(viewer).await?;
        Ok(records.into_iter().map(summary).collect())
    }

    /// Page `page` (from 1) of [`FUNCTIONS_PER_PAGE`] of the functions the caller may see whose
    /// names contain `filter`: what the catalog shows.
    pub async fn list_page(&self, caller: &Principal, filter: &str, page: u32) -> RegistryResult<FunctionListPage> {
        let viewer = if caller.is_admin() { None } else { Some(caller.id) };
        let filter = filter.trim();
        let page = page.max(1);
        let offset = (page - 1).saturating_mul(FUNCTIONS_PER_PAGE);
        let (records, total) = self.store.visible_functions_page(viewer, filter, FUNCTIONS_PER_PAGE, offset).await?;
        Ok(FunctionListPage {
            items: records.into_iter().map(summary).collect(),
            total,
            page,
            per_page: FUNCTIONS_PER_PAGE,
            filter: filter.to_string(),
        })
    }

    /// One function with its current spec and versions.
    pub async fn get(&self, caller: &Principal, name: &str) -> RegistryResult<FunctionDetail> {
        let record = self.find_visible(caller, name).await?;
        let owned = may_change(caller, &record);
        let mut detail = self.detail(record).await?;
        if !owned {
            hide_env(&mut detail.spec);
        }
        Ok(detail)
    }

    /// One version of a function with its whole spec.
    pub async fn version(&self, caller: &Principal, name: &str, version: u32) -> RegistryResult<VersionDetail> {
        let record = self.find_visible(caller, name).await?;
        let (info, spec) = self
            .store
            .version_spec(record.id, version)
            .await?
            .ok_or_else(|| RegistryError::NoSuchVersion { name: name.to_string(), version })?;
        let mut spec = spec;
        if !may_change(caller, &record) {
            hide_env(&mut spec);
        }
        Ok(VersionDetail { function: record.name, info, spec })
    }

    /// The function's record if the caller may see it; [`RegistryError::NotFound`] otherwise.
    pub async fn find_visible(&self, caller: &Principal, name: &str) -> RegistryResult<FunctionRecord> {
        match self.store.function_by_name(name).await? {
            Some(record) if may_see(caller, &record) => Ok(record),
            _ => Err(RegistryError::NotFound { name: name.to_string() }),
        }
    }

    async fn changeable(&self, caller: &Principal, name: &str, action: &'static str) -> RegistryResult<FunctionRecord> {
        let record = self.find_visible(caller, name).await?;
        if !may_change(caller, &record) {
            return Err(RegistryError::Forbidden { name: record.name, owner: record.owner, action });
        }
        Ok(record)
    }

    async fn detail_by_name(&self, name: &str) -> RegistryResult<FunctionDetail> {
        let record = self
            .store
            .function_by_name(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound { name: name.to_string() })?;
        self.detail(record).await
    }

    async fn detail(&self, record: FunctionRecord) -> RegistryResult<FunctionDetail> {
        let versions = self.store.versions(record.id).await?;
        let (_, spec) = self.store.version_spec(record.id, record.current_version).await?.ok_or_else(|| {
            RegistryError::NoSuchVersion { name: record.name.clone(), version: record.current_version }
        })?;
        Ok(FunctionDetail {
            name: record.name,
            owner: record.owner,
            visibility: record.visibility,
            version: record.current_version,
            latest_version: record.latest_version,
            created_at: record.created_at,
            updated_at: record.updated_at,
            spec,
            versions,
        })
    }
}

fn may_see(caller: &Principal, record: &FunctionRecord) -> bool {
    record.visibility == Visibility::Public || may_change(caller, record)
}

/// The owner and admins: who may change a function and read all of it.
fn may_change(caller: &Principal, record: &FunctionRecord) -> bool {
    record.owner_id == caller.id || caller.is_admin()
}

/// A public function's env is its owner's configuration (API keys, say): other users see its
/// code and settings, never the env.
fn hide_env(spec: &mut FunctionSpec) {
    spec.env.clear();
}

/// Blank optional strings mean "not given", so forms and JSON agree.
fn normalized(mut spec: FunctionSpec) -> FunctionSpec {
    spec.name = spec.name.trim().to_string();
    spec.handler = spec.handler.map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
    spec.image = spec.image.map(|i| i.trim().to_string()).filter(|i| !i.is_empty());
    spec.service.external_name = spec.service.external_name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    spec
}

fn invalid_unless_empty(errors: Vec<FieldError>) -> RegistryResult<()> {
    if errors.is_empty() { Ok(()) } else { Err(RegistryError::Invalid(errors)) }
}

/// How many functions a catalog page shows.
pub const FUNCTIONS_PER_PAGE: u32 = 50;

/// A catalog line of a stored function.
fn summary(r: FunctionRecord) -> FunctionSummary {
    FunctionSummary {
        name: r.name,
        owner: r.owner,
        runtime: r.runtime,
        visibility: r.visibility,
        version: r.current_version,
        latest_version: r.latest_version,
        updated_at: r.updated_at,
    }
}
