//! What the Rust benches report: each figure's samples with median, min and max, printed and
//! written as JSON to $KUBEFN_BENCH_DIR (default target/bench-run), where bench/system.py
//! reads them for the report.

use std::time::Duration;

/// One measured figure, in milliseconds.
#[derive(serde::Serialize)]
pub struct Figure {
    /// What was measured, as the report shows it.
    pub name: String,
    /// Every sample, sorted.
    pub samples_ms: Vec<f64>,
    /// The middle sample.
    pub median_ms: f64,
    /// The fastest sample.
    pub min_ms: f64,
    /// The slowest sample.
    pub max_ms: f64,
}

/// The figure of `samples` (NaN when there are none).
pub fn figure(name: &str, samples: Vec<Duration>) -> Figure {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.is_empty() { f64::NAN } else { ms[ms.len() / 2] };
    Figure {
        name: name.into(),
        median_ms: median,
        min_ms: ms.first().copied().unwrap_or(f64::NAN),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        samples_ms: ms,
    }
}

/// Prints `figures` and writes them to `<bench dir>/<file>.json`.
pub fn report(file: &str, figures: &[Figure]) {
    for f in figures {
        println!("{}: median {:.1} ms ({:.1}–{:.1})", f.name, f.median_ms, f.min_ms, f.max_ms);
    }
    let dir = std::env::var("KUBEFN_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-run").into());
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(format!("{dir}/{file}.json"), serde_json::to_string_pretty(figures).expect("json")).expect("write");
}
