//! The admin dashboard: everyone's instances and usage, top functions, recent scaling events
//! and the runtime's health. The server refuses it to anyone but admins (403), so hiding the
//! link from other users is a courtesy, not the protection.

use super::account::QuotaTable;
use super::chart::{Marker, Unit, WindowPicker, clock};
use super::sortable_table::{Column, SortValue, SortableTable};
use super::usage_charts::UsageCharts;
use super::{ErrorNotice, FieldMessage, action_error, ticks};
use crate::api::functions::{SetUserQuota, admin_dashboard};
use crate::platform::model::Named;
use crate::platform::model::{AdminOverview, InstanceInfo, NamedUsage, UsageTotals};
use leptos::prelude::*;
use leptos_meta::Title;
use std::time::Duration;

/// How often the dashboard refreshes while open.
const REFRESH: Duration = Duration::from_secs(5);

/// `/admin`.
#[component]
pub fn AdminPage() -> impl IntoView {
    let window = RwSignal::new(3600u32);
    let tick = ticks(REFRESH);
    let overview = Resource::new(move || (tick.get(), window.get()), |(_, window_s)| admin_dashboard(window_s));
    // Kept here, outside the dashboard that each refresh renders anew, so a chosen order stays.
    let sorts =
        TableSorts { users: RwSignal::new(None), instances: RwSignal::new(None), functions: RwSignal::new(None) };
    view! {
        <Title text="Admin · kubefn"/>
        <div class="page-head">
            <h1>"Admin"</h1>
            <WindowPicker window/>
        </div>
        <Transition fallback=|| view! { <p class="muted">"Loading the dashboard…"</p> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(overview) => view! { <Dashboard overview sorts/> }.into_any(),
                }
            })}
        </Transition>
        <QuotaEditor/>
    }
}

/// Sets one user's quota (outside the dashboard, which each refresh renders anew, so what an
/// admin types stays).
#[component]
fn QuotaEditor() -> impl IntoView {
    let save = ServerAction::<SetUserQuota>::new();
    let error = action_error(save.value());
    let fields = [
        ("functions", "Functions", "100"),
        ("versions", "Versions", "2000"),
        ("instances", "Instances", "50"),
        ("replicas", "Replicas", "100"),
        ("cpu", "CPU", "32 (cores) or 500m"),
        ("memory", "Memory", "64Gi"),
    ];
    view! {
        <section class="card" aria-labelledby="quota-edit-title" data-testid="quota-editor">
            <h2 id="quota-edit-title">"Set a user's quota"</h2>
            <p class="hint">"Empty fields take kubefn's default (shown as the placeholder). Lowering a quota takes nothing away: it refuses the user's next addition past it. Instances count at their most replicas, at their limits."</p>
            <ActionForm action=save attr:class="quota-form">
                <label for="quota-name">"User"</label>
                <input id="quota-name" name="name" required autocomplete="off"/>
                <FieldMessage error field="name"/>
                <div class="quota-fields">
                    {fields.into_iter().map(|(field, label, placeholder)| view! {
                        <div>
                            <label for=format!("quota-{field}")>{label}</label>
                            <input id=format!("quota-{field}") name=field placeholder=placeholder inputmode=if matches!(field, "cpu" | "memory") { "text" } else { "numeric" }/>
                            <FieldMessage error field=field/>
                        </div>
                    }).collect_view()}
                </div>
                <button type="submit" class="primary" disabled=move || save.pending().get()>"Save quota"</button>
            </ActionForm>
            {move || error.get().filter(|e| e.field.is_none()).map(|error| view! { <ErrorNotice error/> })}
            {move || save.value().get().and_then(Result::ok).map(|report| view! {
                <p role="status">{format!("Saved. {}'s quota and use:", report.user)}</p>
                <QuotaTable report/>
            })}
        </section>
    }
}

/// How each of the dashboard's tables is sorted.
#[derive(Clone, Copy)]
struct TableSorts {
    users: RwSignal<Option<(usize, bool)>>,
    instances: RwSignal<Option<(usize, bool)>>,
    functions: RwSignal<Option<(usize, bool)>>,
}

#[component]
fn Dashboard(overview: AdminOverview, sorts: TableSorts) -> impl IntoView {
    let AdminOverview { since, until, health, instances, users, top_functions, totals, series, scaling_events } =
        overview;
    let markers: Vec<Marker> = Marker::of(&scaling_events.iter().map(|e| e.event.clone()).collect::<Vec<_>>());
    let states = health
        .instances_by_state
        .iter()
        .map(|(state, count)| {
            view! {
                <li><span class=format!("state state-{}", state.to_lowercase())>{state.clone()}</span> " " {*count}</li>
            }
        })
        .collect_view();
    view! {
        <section class="card" aria-labelledby="health-title" data-testid="health">
            <h2 id="health-title">"Health"</h2>
            <dl class="facts">
                <dt>"Runtime"</dt><dd>{health.runtime.clone()}</dd>
                <dt>"Database"</dt>
                <dd>{if health.database_ok { view! { <span class="state state-ready">"answers"</span> }.into_any() } else { view! { <span class="state state-failed">"does not answer"</span> }.into_any() }}</dd>
                <dt>"Instances"</dt><dd><ul class="chips">{states}</ul></dd>
                {health.checks.iter().map(|check| view! {
                    <dt>{check.name.clone()}</dt>
                    <dd>
                        <span class=if check.ok { "state state-ready" } else { "state state-failed" }>{if check.ok { "ok" } else { "attention" }}</span>
                        " " {check.detail.clone()}
                    </dd>
                }).collect_view()}
                {(health.instances_unreported > 0).then(|| view! {
                    <dt>"Not reported"</dt>
                    <dd>{health.instances_unreported} " recorded instance(s) the runtime does not report on yet; the reconcile loop starts them."</dd>
                })}
            </dl>
        </section>
        <section class="card" aria-labelledby="totals-title" data-testid="admin-everyone" data-until=until.timestamp_millis()>
            <h2 id="totals-title">"Everyone, " {format!("{} – {} UTC", clock(since.timestamp_millis(), false), clock(until.timestamp_millis(), false))}</h2>
            <Totals totals/>
            <UsageCharts samples=series since_ms=since.timestamp_millis() until_ms=until.timestamp_millis() markers/>
        </section>
        <section class="card" aria-labelledby="users-title">
            <h2 id="users-title">"Users"</h2>
            <SortableTable caption="Usage per user" testid="admin-users" columns=usage_columns("User") rows=users sort=sorts.users/>
        </section>
        <section class="card" aria-labelledby="instances-title">
            <h2 id="instances-title">"Instances"</h2>
            <SortableTable caption="Every instance" testid="admin-instances" columns=instance_columns() rows=instances sort=sorts.instances/>
        </section>
        <section class="card" aria-labelledby="top-title">
            <h2 id="top-title">"Top functions"</h2>
            <SortableTable caption="Functions by invocations" testid="admin-functions" columns=usage_columns("Function") rows=top_functions sort=sorts.functions/>
        </section>
        <section class="card" aria-labelledby="scaling-title">
            <h2 id="scaling-title">"Recent scaling events"</h2>
            {if scaling_events.is_empty() {
                view! { <p class="muted">"None in this window."</p> }.into_any()
            } else {
                view! {
                    <ul class="event-list" data-testid="admin-scaling">
                        {scaling_events.into_iter().map(|e| view! {
                            <li>
                                <time>{clock(e.event.at.timestamp_millis(), true)}</time> " "
                                <strong>{format!("{}/{}", e.user, e.function)}</strong> " " {e.event.message}
                            </li>
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn Totals(totals: UsageTotals) -> impl IntoView {
    let tiles = [
        ("Instances", totals.instances.to_string()),
        ("Replicas ready", format!("{} of {}", totals.replicas_ready, totals.replicas_desired)),
        ("CPU now", Unit::Millicores.format(totals.cpu_millicores)),
        ("Memory now", Unit::Bytes.format(totals.memory_bytes as f64)),
        ("Invocations", totals.invocations.to_string()),
        ("Errors", totals.errors.to_string()),
    ];
    view! {
        <dl class="tiles" data-testid="admin-totals">
            {tiles.into_iter().map(|(label, value)| view! { <div class="tile"><dt>{label}</dt><dd>{value}</dd></div> }).collect_view()}
        </dl>
    }
}

fn usage_columns(first: &'static str) -> Vec<Column<NamedUsage>> {
    vec![
        Column::new(first, |u: &NamedUsage| SortValue::Text(u.name.clone()), |u| u.name.clone()),
        Column::new(
            "Instances",
            |u: &NamedUsage| SortValue::Number(f64::from(u.totals.instances)),
            |u| u.totals.instances.to_string(),
        ),
        Column::new(
            "Replicas",
            |u: &NamedUsage| SortValue::Number(f64::from(u.totals.replicas_ready)),
            |u| format!("{} of {}", u.totals.replicas_ready, u.totals.replicas_desired),
        ),
        Column::new(
            "CPU now",
            |u: &NamedUsage| SortValue::Number(u.totals.cpu_millicores),
            |u| Unit::Millicores.format(u.totals.cpu_millicores),
        ),
        Column::new(
            "Memory now",
            |u: &NamedUsage| SortValue::Number(u.totals.memory_bytes as f64),
            |u| Unit::Bytes.format(u.totals.memory_bytes as f64),
        ),
        Column::new(
            "Invocations",
            |u: &NamedUsage| SortValue::Number(u.totals.invocations as f64),
            |u| u.totals.invocations.to_string(),
        ),
        Column::new(
            "Errors",
            |u: &NamedUsage| SortValue::Number(u.totals.errors as f64),
            |u| u.totals.errors.to_string(),
        ),
    ]
}

fn instance_columns() -> Vec<Column<InstanceInfo>> {
    vec![
        Column::new("User", |i: &InstanceInfo| SortValue::Text(i.user.clone()), |i| i.user.clone()),
        Column::new("Function", |i: &InstanceInfo| SortValue::Text(i.function.clone()), |i| i.function.clone()),
        Column::new(
            "State",
            |i: &InstanceInfo| SortValue::Text(i.state.as_str().into()),
            |i| {
                if i.paused { format!("{} (paused)", i.state.as_str()) } else { i.state.as_str().to_string() }
            },
        ),
        Column::new(
            "Version",
            |i: &InstanceInfo| SortValue::Number(f64::from(i.version)),
            |i| format!("v{}", i.version),
        ),
        Column::new(
            "Replicas",
            |i: &InstanceInfo| SortValue::Number(f64::from(i.replicas.ready)),
            |i| format!("{} of {}", i.replicas.ready, i.replicas.desired),
        ),
        Column::new("Gateway", |i: &InstanceInfo| SortValue::Text(i.urls.gateway.clone()), |i| i.urls.gateway.clone()),
    ]
}
