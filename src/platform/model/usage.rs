//! Usage: an instance's time series, totals, and what the admin dashboard shows.

use super::{EventInfo, InstanceInfo};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One point of an instance's usage time series.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    /// When it was taken (for downsampled points: the start of their minute).
    pub at: DateTime<Utc>,
    /// Replicas asked for.
    pub replicas_desired: u32,
    /// Replicas ready.
    pub replicas_ready: u32,
    /// CPU of all replicas together, in millicores.
    pub cpu_millicores: Option<f64>,
    /// Resident memory of all replicas together, in bytes.
    pub memory_bytes: Option<u64>,
    /// Invocations through the gateway per second (the figures of `/metrics`).
    pub requests_per_s: Option<f64>,
    /// Median gateway invocation latency (to the response headers) in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile gateway invocation latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// Invocations through the gateway since the previous sample.
    #[serde(default)]
    pub invocations: u32,
    /// Invocations that failed (5xx from the function or the gateway).
    pub errors: u32,
    /// The autoscaler's load in percent of its target (its most loaded metric: 100 = on
    /// target, above scales up), when autoscaling is on and measured.
    #[serde(default)]
    pub autoscaler_load_percent: Option<f64>,
}

/// Reasons of the events that change an instance's replica count, which the charts mark.
pub const SCALING_REASONS: [&str; 4] = ["ScalingReplicaSet", "ScaledFromZero", "ScaledToZero", "SuccessfulRescale"];

/// One instance's usage over a window, as its charts draw it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end (when the report was made).
    pub until: DateTime<Utc>,
    /// The samples in the window, oldest first.
    pub samples: Vec<UsageSample>,
    /// The scaling events in the window, newest first.
    pub scaling_events: Vec<EventInfo>,
}

/// Usage added up over some instances: now (replicas, CPU, memory) and over a window
/// (invocations, errors).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Instances counted.
    pub instances: u32,
    /// Replicas ready now.
    pub replicas_ready: u32,
    /// Replicas asked for now.
    pub replicas_desired: u32,
    /// CPU now, in millicores (the latest sample of each instance).
    pub cpu_millicores: f64,
    /// Resident memory now, in bytes (the latest sample of each instance).
    pub memory_bytes: u64,
    /// Invocations through the gateway in the window.
    pub invocations: u64,
    /// Invocations that failed in the window.
    pub errors: u64,
}

/// One row of the admin dashboard's usage tables: a user or a function and its totals.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedUsage {
    /// The user's or the function's name.
    pub name: String,
    /// Its usage.
    pub totals: UsageTotals,
}

/// A scaling event and whose instance it happened to.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// The instance's user.
    pub user: String,
    /// The instance's function.
    pub function: String,
    /// The event.
    pub event: EventInfo,
}

/// How the runtime and the database are doing, for the admin dashboard.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformHealth {
    /// `local` or `kubernetes`.
    pub runtime: String,
    /// Whether the database answered.
    pub database_ok: bool,
    /// Instances per state (`Ready`, `Failed`, …), by state name.
    pub instances_by_state: BTreeMap<String, u32>,
    /// Recorded instances the runtime does not report on (not applied yet, or lost).
    pub instances_unreported: u32,
    /// The runtime's own checks (the cluster's metrics API, cgroups, the warm pool, …).
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

/// One thing a runtime checks about itself, for the admin dashboard.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is checked ("metrics.k8s.io", "warm pool").
    pub name: String,
    /// Whether it is as it should be.
    pub ok: bool,
    /// What was found, and what to do when it is not ok.
    pub detail: String,
}

impl HealthCheck {
    /// A check named `name` that found `detail`.
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> HealthCheck {
        HealthCheck { name: name.to_string(), ok, detail: detail.into() }
    }
}

/// Everything the admin dashboard shows, for one window.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminOverview {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end.
    pub until: DateTime<Utc>,
    /// Runtime and database health.
    pub health: PlatformHealth,
    /// Every instance of every user.
    pub instances: Vec<InstanceInfo>,
    /// Every user with their usage (users without instances too), by name.
    pub users: Vec<NamedUsage>,
    /// Functions by invocations in the window, most first.
    pub top_functions: Vec<NamedUsage>,
    /// All instances together.
    pub totals: UsageTotals,
    /// All instances' samples added up per time bucket, oldest first.
    pub series: Vec<UsageSample>,
    /// Recent scaling events of every instance, newest first.
    pub scaling_events: Vec<InstanceEvent>,
}
