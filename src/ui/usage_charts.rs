//! The usage charts: replicas, CPU, memory, requests, latency and errors over a window, with
//! scaling events marked. The instance page polls its instance's samples; the admin dashboard
//! draws everyone's, added up.

use super::chart::{Marker, Series, TimeChart, Unit, WindowPicker};
use super::{ErrorNotice, ticks};
use crate::api::functions::instance_usage;
use crate::platform::model::UsageSample;
use leptos::prelude::*;
use std::time::Duration;

/// How often the instance's charts fetch new samples while the page is open.
const REFRESH: Duration = Duration::from_secs(3);

/// The six usage charts over `since_ms..until_ms`.
#[component]
pub fn UsageCharts(samples: Vec<UsageSample>, since_ms: i64, until_ms: i64, markers: Vec<Marker>) -> impl IntoView {
    let line = |label, class, value: fn(&UsageSample) -> Option<f64>| Series::of(&samples, label, class, value);
    let charts = [
        (
            "Replicas",
            Unit::Count,
            vec![
                line("desired", "series-a", |s| Some(f64::from(s.replicas_desired))),
                line("ready", "series-b", |s| Some(f64::from(s.replicas_ready))),
            ],
        ),
        ("CPU", Unit::Millicores, vec![line("all replicas", "series-a", |s| s.cpu_millicores)]),
        ("Memory", Unit::Bytes, vec![line("all replicas", "series-a", |s| s.memory_bytes.map(|m| m as f64))]),
        ("Requests", Unit::PerSecond, vec![line("through the gateway", "series-a", |s| s.requests_per_s)]),
        ("Latency", Unit::Millis, vec![line("p50", "series-a", |s| s.p50_ms), line("p95", "series-b", |s| s.p95_ms)]),
        ("Errors", Unit::Count, vec![line("failed calls per sample", "series-c", |s| Some(f64::from(s.errors)))]),
    ];
    view! {
        <div class="charts">
            {charts.into_iter().map(|(title, unit, series)| view! {
                <TimeChart title unit since_ms until_ms series markers=markers.clone()/>
            }).collect_view()}
        </div>
    }
}

/// An instance's charts, refreshed every few seconds, over the window the user picks.
#[component]
pub fn InstanceCharts(id: String) -> impl IntoView {
    let window = RwSignal::new(super::chart::WINDOWS[0].0);
    let tick = ticks(REFRESH);
    let report =
        Resource::new(move || (tick.get(), window.get()), move |(_, window_s)| instance_usage(id.clone(), window_s));
    view! {
        <section class="card" aria-labelledby="usage-title" data-testid="usage">
            <div class="card-head">
                <h2 id="usage-title">"Usage"</h2>
                <WindowPicker window/>
            </div>
            <p class="hint">"Sampled every few seconds; dashed lines mark scaling events (hover for what happened). Times are UTC."</p>
            <Transition fallback=|| view! { <p class="muted">"Loading charts…"</p> }>
                {move || Suspend::new(async move {
                    match report.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(report) => view! {
                            <UsageCharts
                                since_ms=report.since.timestamp_millis()
                                until_ms=report.until.timestamp_millis()
                                markers=Marker::of(&report.scaling_events)
                                samples=report.samples
                            />
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}
