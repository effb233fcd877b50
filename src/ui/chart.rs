//! Time charts as plain SVG: one component draws any usage series over a window, with its
//! axes, units and scaling events marked, so every chart on every page reads the same way.
//! (A chart library would add more to the wasm bundle than these few hundred lines.)

use crate::platform::model::{EventInfo, UsageSample};
use leptos::prelude::*;

/// The windows the charts offer, with their labels.
pub const WINDOWS: [(u32, &str); 5] =
    [(300, "5 min"), (900, "15 min"), (3600, "1 h"), (6 * 3600, "6 h"), (24 * 3600, "24 h")];

/// What a chart's values measure, which decides how its axis labels read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Whole things (replicas, errors).
    Count,
    /// CPU in millicores, shown as `250m` or `1.5 cores`.
    Millicores,
    /// Bytes, shown in KiB, MiB or GiB.
    Bytes,
    /// Per second.
    PerSecond,
    /// Milliseconds.
    Millis,
}

impl Unit {
    /// A value as an axis or legend label.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Count => trim(value, 1),
            Unit::Millicores if value >= 1000.0 => format!("{} cores", trim(value / 1000.0, 2)),
            Unit::Millicores => format!("{}m", trim(value, if value < 10.0 { 1 } else { 0 })),
            Unit::Bytes => bytes(value),
            Unit::PerSecond => format!("{}/s", trim(value, if value < 10.0 { 1 } else { 0 })),
            Unit::Millis => format!("{} ms", trim(value, if value < 10.0 { 1 } else { 0 })),
        }
    }
}

fn trim(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

fn bytes(value: f64) -> String {
    const KIB: f64 = 1024.0;
    match value {
        v if v >= KIB * KIB * KIB => format!("{} GiB", trim(v / (KIB * KIB * KIB), 1)),
        v if v >= KIB * KIB => format!("{} MiB", trim(v / (KIB * KIB), 1)),
        v if v >= KIB => format!("{} KiB", trim(v / KIB, 0)),
        v => format!("{} B", trim(v, 0)),
    }
}

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `value`, so the
/// axis tops read as 5, 20, 500 rather than 437.
pub fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

/// A time as `HH:MM` (or `HH:MM:SS` when `seconds`), in UTC: the pages state times in UTC.
pub fn clock(epoch_ms: i64, seconds: bool) -> String {
    let of_day = epoch_ms.div_euclid(1000).rem_euclid(86_400);
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    if seconds { format!("{h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}") }
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// What the line is, in the legend.
    pub label: &'static str,
    /// Its CSS class (`series-a`, `series-b`), which sets its colour and dash.
    pub class: &'static str,
    /// (time in epoch ms, value); `None` is a gap in the line.
    pub points: Vec<(i64, Option<f64>)>,
}

impl Series {
    /// A line taken from usage samples by `value`.
    pub fn of(
        samples: &[UsageSample],
        label: &'static str,
        class: &'static str,
        value: impl Fn(&UsageSample) -> Option<f64>,
    ) -> Series {
        Series { label, class, points: samples.iter().map(|s| (s.at.timestamp_millis(), value(s))).collect() }
    }

    fn latest(&self) -> Option<f64> {
        self.points.iter().rev().find_map(|(_, value)| *value)
    }
}

/// A scaling event as a mark on the time axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// When, in epoch ms.
    pub at_ms: i64,
    /// What happened.
    pub label: String,
}

impl Marker {
    /// Marks for events.
    pub fn of(events: &[EventInfo]) -> Vec<Marker> {
        events
            .iter()
            .map(|e| Marker {
                at_ms: e.at.timestamp_millis(),
                label: format!("{} {}", clock(e.at.timestamp_millis(), true), e.message),
            })
            .collect()
    }
}

// The drawing's own units; it scales uniformly to the figure's width, so these are close to
// the pixels of a chart in a two-column grid and its 12-unit text stays readable.
const WIDTH: f64 = 400.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// A line chart of `series` over `since_ms..until_ms`, with `markers` drawn as dashed
/// vertical lines. Its `data-points` attribute counts the points drawn.
#[component]
pub fn TimeChart(
    /// The chart's heading.
    title: &'static str,
    /// How values read.
    unit: Unit,
    /// The window's start, epoch ms.
    since_ms: i64,
    /// The window's end, epoch ms.
    until_ms: i64,
    /// The lines.
    series: Vec<Series>,
    /// Scaling events.
    #[prop(optional)]
    markers: Vec<Marker>,
) -> impl IntoView {
    let span = (until_ms - since_ms).max(1) as f64;
    let highest = series.iter().flat_map(|s| s.points.iter().filter_map(|(_, v)| *v)).fold(0.0f64, f64::max);
    let top = nice_ceiling(if unit == Unit::Count { highest.max(1.0) } else { highest });
    let x = move |ms: i64| LEFT + (ms - since_ms) as f64 / span * (WIDTH - LEFT - RIGHT);
    let y = move |value: f64| TOP + (1.0 - value / top) * (HEIGHT - TOP - BOTTOM);
    let points_drawn: usize = series.iter().map(|s| s.points.iter().filter(|(_, v)| v.is_some()).count()).sum();
    let with_seconds = until_ms - since_ms <= 15 * 60 * 1000;

    let grid = [0.0, 0.5, 1.0].map(|fraction| {
        let value = top * fraction;
        view! {
            <line class="gridline" x1=LEFT x2=WIDTH - RIGHT y1=y(value) y2=y(value)/>
            <text class="axis" x=LEFT - 6.0 y=y(value) + 4.0 text-anchor="end">{unit.format(value)}</text>
        }
    });
    let time_ticks = (0..=2)
        .map(|n| {
            let at = since_ms + (until_ms - since_ms) * n / 2;
            let anchor = match n {
                0 => "start",
                2 => "end",
                _ => "middle",
            };
            view! { <text class="axis" x=x(at) y=HEIGHT - 6.0 text-anchor=anchor>{clock(at, with_seconds)}</text> }
        })
        .collect_view();
    let marks = markers
        .iter()
        .filter(|m| (since_ms..=until_ms).contains(&m.at_ms))
        .map(|m| {
            view! {
                <line class="marker" x1=x(m.at_ms) x2=x(m.at_ms) y1=TOP y2=HEIGHT - BOTTOM>
                    <title>{m.label.clone()}</title>
                </line>
            }
        })
        .collect_view();
    let lines = series
        .iter()
        .map(|s| {
            let mut path = String::new();
            let mut pen_down = false;
            for (at, value) in &s.points {
                match value {
                    Some(value) => {
                        path.push_str(&format!("{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(*at), y(*value)));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            // A lone point has no line to draw, so each point also gets a dot.
            let dots = s
                .points
                .iter()
                .filter_map(|(at, v)| v.map(|v| (x(*at), y(v))))
                .map(|(cx, cy)| view! { <circle cx=cx cy=cy r="1.8"/> })
                .collect_view();
            view! { <g class=format!("series {}", s.class)><path d=path/>{dots}</g> }
        })
        .collect_view();
    let summary = series
        .iter()
        .map(|s| format!("{}: {}", s.label, s.latest().map_or("no data".into(), |v| unit.format(v))))
        .collect::<Vec<_>>()
        .join(", ");
    let legend = series.iter().map(|s| {
        let latest = s.latest().map_or("–".to_string(), |v| unit.format(v));
        view! { <li class=s.class><span class="swatch" aria-hidden="true"></span>{s.label} " " <strong>{latest}</strong></li> }
    }).collect_view();
    let title_id = format!("chart-{}", title.to_lowercase().replace([' ', '/'], "-"));
    view! {
        <figure class="chart" data-chart=title>
            <figcaption id=title_id.clone()>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-labelledby=title_id data-points=points_drawn>
                <desc>{format!("Latest: {summary}.")}</desc>
                {grid}
                <line class="axis-line" x1=LEFT x2=WIDTH - RIGHT y1=HEIGHT - BOTTOM y2=HEIGHT - BOTTOM/>
                {time_ticks}
                {marks}
                {lines}
                {(points_drawn == 0).then(|| view! { <text class="empty" x=(LEFT + WIDTH) / 2.0 y=HEIGHT / 2.0 text-anchor="middle">"No samples in this window"</text> })}
            </svg>
            <ul class="legend">{legend}</ul>
        </figure>
    }
}

/// Buttons choosing the window the charts cover.
#[component]
pub fn WindowPicker(window: RwSignal<u32>) -> impl IntoView {
    view! {
        <div class="window-picker" role="group" aria-label="Time window">
            {WINDOWS.map(|(seconds, label)| view! {
                <button type="button" aria-pressed=move || (window.get() == seconds).to_string() on:click=move |_| window.set(seconds)>{label}</button>
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(437.0), 500.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nice_ceiling(0.07), 0.1);
    }

    #[test]
    fn units_read_as_people_write_them() {
        assert_eq!(Unit::Millicores.format(250.0), "250m");
        assert_eq!(Unit::Millicores.format(0.5), "0.5m", "an idle function's half millicore is not 0");
        assert_eq!(Unit::Millicores.format(1500.0), "1.5 cores");
        assert_eq!(Unit::Bytes.format(52_428_800.0), "50 MiB");
        assert_eq!(Unit::Bytes.format(1536.0), "2 KiB");
        assert_eq!(Unit::PerSecond.format(2.5), "2.5/s");
        assert_eq!(Unit::PerSecond.format(120.0), "120/s");
        assert_eq!(Unit::Millis.format(0.75), "0.8 ms");
        assert_eq!(Unit::Count.format(3.0), "3");
    }

    #[test]
    fn clocks_are_utc() {
        assert_eq!(clock(1_800_000_000_000, false), "08:00");
        assert_eq!(clock(1_800_000_000_000 + 61_000, true), "08:01:01");
    }
}
