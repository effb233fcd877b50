//! Functions and their immutable, numbered versions.

use super::{JsonField, Store, StoreError, StoreResult, duplicate_or_query};
use crate::platform::model::Named;
use crate::platform::model::{FunctionSpec, Language, VersionInfo, Visibility};
use chrono::{DateTime, Utc};

/// A function row joined with its owner's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRecord {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Owner's user id.
    pub owner_id: i64,
    /// Owner's user name.
    pub owner: String,
    /// Who may see it.
    pub visibility: Visibility,
    /// Language of the current version.
    pub runtime: Language,
    /// The version deployments use.
    pub current_version: u32,
    /// The newest version.
    pub latest_version: u32,
    /// First registration.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct FunctionRow {
    id: i64,
    name: String,
    owner_id: i64,
    owner: String,
    visibility: String,
    runtime: String,
    current_version: i64,
    latest_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<FunctionRow> for FunctionRecord {
    fn from(row: FunctionRow) -> Self {
        FunctionRecord {
            id: row.id,
            name: row.name,
            owner_id: row.owner_id,
            owner: row.owner,
            // The CHECK constraint admits only known values; unknown ones fall back to the safe side.
            visibility: Visibility::parse(&row.visibility).unwrap_or(Visibility::Private),
            runtime: Language::parse(&row.runtime).unwrap_or_default(),
            current_version: u32::try_from(row.current_version).unwrap_or(0),
            latest_version: u32::try_from(row.latest_version).unwrap_or(0),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const SELECT_FUNCTION: &str = "SELECT f.id, f.name, f.owner_id, u.name AS owner, f.visibility, f.runtime,
        f.current_version, f.latest_version, f.created_at, f.updated_at
   FROM functions f JOIN users u ON u.id = f.owner_id";

#[derive(sqlx::FromRow)]
struct VersionRow {
    number: i64,
    spec: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl VersionRow {
    fn decode(self) -> StoreResult<(VersionInfo, FunctionSpec)> {
        let spec = decode_spec(&self.spec)?;
        let info = VersionInfo {
            number: u32::try_from(self.number).unwrap_or(0),
            created_by: self.created_by,
            created_at: self.created_at,
            runtime: spec.runtime,
            source_bytes: spec.source.len(),
        };
        Ok((info, spec))
    }
}

/// A stored version's spec.
pub(super) fn decode_spec(text: &str) -> StoreResult<FunctionSpec> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what: "function version", source })
}

fn encode_spec(spec: &FunctionSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|source| StoreError::Corrupt { what: "function spec", source })
}

impl Store {
    /// Registers a function with its first version; a taken name is [`StoreError::Duplicate`].
    pub async fn insert_function(&self, owner_id: i64, spec: &FunctionSpec) -> StoreResult<FunctionRecord> {
        with_pool!(self, |pool| {
            let encoded = encode_spec(spec)?;
            let now = Utc::now();
            let mut tx = pool.begin().await?;
            let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO functions (name, owner_id, visibility, runtime, current_version, latest_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, 1, $5, $6) RETURNING id",
        )
        .bind(&spec.name)
        .bind(owner_id)
        .bind(spec.visibility.as_str())
        .bind(spec.runtime.as_str())
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| duplicate_or_query(e, "function", "name"))?;
            sqlx::query(
            "INSERT INTO function_versions (function_id, number, spec, created_by, created_at) VALUES ($1, 1, $2, $3, $4)",
        )
        .bind(id)
        .bind(&encoded)
        .bind(owner_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
            tx.commit().await?;
            self.forget_invocations();
            self.function_by_id(id).await?.ok_or(StoreError::Query(sqlx::Error::RowNotFound))
        })
    }

    /// Adds the next version of a function and makes it current.
    pub async fn add_version(&self, function_id: i64, spec: &FunctionSpec, created_by: i64) -> StoreResult<u32> {
        with_pool!(self, |pool| {
            let encoded = encode_spec(spec)?;
            let now = Utc::now();
            let mut tx = pool.begin().await?;
            // One UPDATE takes the write lock and the next number together, so concurrent edits get distinct numbers.
            let (number,): (i64,) = sqlx::query_as(
                "UPDATE functions SET latest_version = latest_version + 1, current_version = latest_version + 1,
                    visibility = $1, runtime = $2, updated_at = $3
              WHERE id = $4 RETURNING latest_version",
            )
            .bind(spec.visibility.as_str())
            .bind(spec.runtime.as_str())
            .bind(now)
            .bind(function_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
            "INSERT INTO function_versions (function_id, number, spec, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(function_id)
        .bind(number)
        .bind(&encoded)
        .bind(created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
            tx.commit().await?;
            self.forget_invocations();
            Ok(u32::try_from(number).unwrap_or(0))
        })
    }

    /// Points the function at an existing version; false when there is no such version.
    pub async fn set_current_version(&self, function_id: i64, number: u32) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let runtime = self.json_field("spec", "runtime", JsonField::Text);
            let done = sqlx::query(&format!(
                "UPDATE functions SET current_version = $1, updated_at = $2,
                    runtime = (SELECT {runtime} FROM function_versions WHERE function_id = $3 AND number = $1)
              WHERE id = $3 AND EXISTS (SELECT 1 FROM function_versions WHERE function_id = $3 AND number = $1)",
            ))
            .bind(i64::from(number))
            .bind(Utc::now())
            .bind(function_id)
            .execute(pool)
            .await?;
            self.forget_invocations();
            Ok(done.rows_affected() > 0)
        })
    }

    /// The function with this id, if any.
    pub async fn function_by_id(&self, id: i64) -> StoreResult<Option<FunctionRecord>> {
        with_pool!(self, |pool| {
            let row: Option<FunctionRow> =
                sqlx::query_as(&format!("{SELECT_FUNCTION} WHERE f.id = $1")).bind(id).fetch_optional(pool).await?;
            Ok(row.map(Into::into))
        })
    }

    /// The function with this name, if any.
    pub async fn function_by_name(&self, name: &str) -> StoreResult<Option<FunctionRecord>> {
        with_pool!(self, |pool| {
            let row: Option<FunctionRow> =
                sqlx::query_as(&format!("{SELECT_FUNCTION} WHERE f.name = $1")).bind(name).fetch_optional(pool).await?;
            Ok(row.map(Into::into))
        })
    }

    /// One page of the functions a viewer may see (as [`Store::visible_functions`]) whose name
    /// contains `filter`, by name, and how many there are in all.
    pub async fn visible_functions_page(
        &self,
        viewer: Option<i64>,
        filter: &str,
        limit: u32,
        offset: u32,
    ) -> StoreResult<(Vec<FunctionRecord>, u32)> {
        with_pool!(self, |pool| {
            // LIKE's wildcards in the filter are literal characters.
            let pattern = format!("%{}%", filter.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            let condition =
                "WHERE ($1 IS NULL OR f.owner_id = $1 OR f.visibility = 'public') AND f.name LIKE $2 ESCAPE '\\'";
            let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM functions f {condition}"))
                .bind(viewer)
                .bind(&pattern)
                .fetch_one(pool)
                .await?;
            let rows: Vec<FunctionRow> =
                sqlx::query_as(&format!("{SELECT_FUNCTION} {condition} ORDER BY f.name LIMIT $3 OFFSET $4"))
                    .bind(viewer)
                    .bind(&pattern)
                    .bind(i64::from(limit))
                    .bind(i64::from(offset))
                    .fetch_all(pool)
                    .await?;
            Ok((rows.into_iter().map(Into::into).collect(), u32::try_from(total).unwrap_or(u32::MAX)))
        })
    }

    /// Functions a viewer may see, by name: all of them (`None`, for admins), or the viewer's own and public ones.
    pub async fn visible_functions(&self, viewer: Option<i64>) -> StoreResult<Vec<FunctionRecord>> {
        with_pool!(self, |pool| {
            let rows: Vec<FunctionRow> = match viewer {
                None => sqlx::query_as(&format!("{SELECT_FUNCTION} ORDER BY f.name")).fetch_all(pool).await?,
                Some(user_id) => {
                    sqlx::query_as(&format!(
                        "{SELECT_FUNCTION} WHERE f.owner_id = $1 OR f.visibility = 'public' ORDER BY f.name"
                    ))
                    .bind(user_id)
                    .fetch_all(pool)
                    .await?
                }
            };
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    /// Every version of a function, newest first.
    pub async fn versions(&self, function_id: i64) -> StoreResult<Vec<VersionInfo>> {
        with_pool!(self, |pool| {
            let rows: Vec<VersionRow> = sqlx::query_as(
                "SELECT v.number, v.spec, u.name AS created_by, v.created_at
               FROM function_versions v JOIN users u ON u.id = v.created_by
              WHERE v.function_id = $1 ORDER BY v.number DESC",
            )
            .bind(function_id)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|row| row.decode().map(|(info, _)| info)).collect()
        })
    }

    /// One version with its spec, if it exists.
    pub async fn version_spec(
        &self,
        function_id: i64,
        number: u32,
    ) -> StoreResult<Option<(VersionInfo, FunctionSpec)>> {
        with_pool!(self, |pool| {
            let row: Option<VersionRow> = sqlx::query_as(
                "SELECT v.number, v.spec, u.name AS created_by, v.created_at
               FROM function_versions v JOIN users u ON u.id = v.created_by
              WHERE v.function_id = $1 AND v.number = $2",
            )
            .bind(function_id)
            .bind(i64::from(number))
            .fetch_optional(pool)
            .await?;
            row.map(VersionRow::decode).transpose()
        })
    }

    /// How many instances of the function exist (in any state).
    pub async fn instance_count(&self, function_id: i64) -> StoreResult<u32> {
        with_pool!(self, |pool| {
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM instances WHERE function_id = $1")
                .bind(function_id)
                .fetch_one(pool)
                .await?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
    }

    /// Removes a function with all its versions unless an instance of it exists; the check and
    /// the delete are one statement, so a deploy racing the unregister cannot orphan an instance.
    /// Returns false when instances were found and nothing was deleted.
    pub async fn delete_unused_function(&self, function_id: i64) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "DELETE FROM functions WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM instances WHERE function_id = $1)",
            )
            .bind(function_id)
            .execute(pool)
            .await?;
            self.forget_invocations();
            Ok(done.rows_affected() > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::platform::model::{FunctionSpec, Role, Visibility};

    #[tokio::test]
    async fn a_catalog_page_counts_filters_and_hides_other_users_private_functions() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let alice = store.insert_user("alice", "hash", Role::User).await.expect("alice");
            let bob = store.insert_user("bob", "hash", Role::User).await.expect("bob");
            for n in 0..7 {
                let mut spec: FunctionSpec = serde_json::from_value(
                    serde_json::json!({"name": format!("fn-{n}"), "runtime": "python", "source": "x"}),
                )
                .expect("spec");
                spec.visibility = if n == 6 { Visibility::Private } else { Visibility::Public };
                store.insert_function(alice.id, &spec).await.expect("function");
            }
            let odd: FunctionSpec =
                serde_json::from_value(serde_json::json!({"name": "per_cent", "runtime": "python", "source": "x"}))
                    .expect("spec");
            store.insert_function(bob.id, &odd).await.expect("function");

            let names = |records: &[super::FunctionRecord]| records.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
            let (first, total) = store.visible_functions_page(Some(bob.id), "", 3, 0).await.expect("page 1");
            assert_eq!(
                (names(&first), total),
                (vec!["fn-0".to_string(), "fn-1".into(), "fn-2".into()], 7),
                "alice's private fn-6 is not bob's"
            );
            let (last, _) = store.visible_functions_page(Some(bob.id), "", 3, 6).await.expect("page 3");
            assert_eq!(names(&last), vec!["per_cent".to_string()]);
            assert_eq!(store.visible_functions_page(None, "", 50, 0).await.expect("admin").1, 8, "admins see all");
            assert_eq!(store.visible_functions_page(Some(alice.id), "fn-", 50, 0).await.expect("filter").1, 7);
            // LIKE's wildcards in a filter are plain characters.
            assert_eq!(
                names(&store.visible_functions_page(Some(bob.id), "_", 50, 0).await.expect("underscore").0),
                vec!["per_cent".to_string()]
            );
            assert_eq!(store.visible_functions_page(Some(bob.id), "%", 50, 0).await.expect("percent").1, 0);
        }
    }
}
