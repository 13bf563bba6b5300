//! Metric catalogue, per-scenario outcomes, aggregation over rounds, and the Markdown table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::median;

/// Which direction is better for a metric.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Info,
}

/// One row of the table.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// The floor this figure is shown against (a key of a `floor_*` metric or a derived one).
    pub floor: Option<&'static str>,
}

const fn m(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    floor: Option<&'static str>,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        better,
        floor,
    }
}

use Better::{Higher, Info, Lower};

/// Every metric, in table order.
pub const METRICS: &[Metric] = &[
    m(
        "cold_start_ms",
        "cold start: spawn -> first 200 /health",
        "ms",
        Lower,
        Some("floor_spawn_ms"),
    ),
    m(
        "rss_idle_mib",
        "RSS idle (process tree, 2 s after ready)",
        "MiB",
        Lower,
        None,
    ),
    m(
        "health_p50_ms",
        "GET /health p50",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "exec_true_p50_ms",
        "execute_bash_command `true` p50",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "exec_true_p95_ms",
        "execute_bash_command `true` p95",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "exec_true_p99_ms",
        "execute_bash_command `true` p99",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "exec_echo_p50_ms",
        "execute_bash_command 1 KiB output p50",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "exec_echo_p95_ms",
        "execute_bash_command 1 KiB output p95",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "exec_echo_p99_ms",
        "execute_bash_command 1 KiB output p99",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "conc_cmds_per_s",
        "concurrent clients: `true` throughput",
        "cmd/s",
        Higher,
        Some("floor_spawn_per_s"),
    ),
    m(
        "conc_p99_ms",
        "concurrent clients: latency p99",
        "ms",
        Lower,
        None,
    ),
    m(
        "bash_ws_events_per_s",
        "/sockets/bash-events events received",
        "events/s",
        Higher,
        None,
    ),
    m(
        "bash_ws_lat_p50_ms",
        "/sockets/bash-events send -> final output p50",
        "ms",
        Lower,
        Some("floor_exec_ms"),
    ),
    m(
        "bigout_s",
        "large output: start -> all chunks polled",
        "s",
        Lower,
        Some("floor_bigout_s"),
    ),
    m(
        "bigout_mib_s",
        "large output: throughput",
        "MiB/s",
        Higher,
        Some("floor_bigout_mib_s"),
    ),
    m(
        "bigout_peak_rss_mib",
        "large output: peak RSS",
        "MiB",
        Lower,
        None,
    ),
    m(
        "upload_mib_s",
        "upload big file",
        "MiB/s",
        Higher,
        Some("floor_tcp_mib_s"),
    ),
    m(
        "download_mib_s",
        "download big file",
        "MiB/s",
        Higher,
        Some("floor_tcp_mib_s"),
    ),
    m(
        "xfer_peak_rss_mib",
        "file transfer: peak RSS",
        "MiB",
        Lower,
        None,
    ),
    m(
        "fan_small_events_per_s",
        "WS fan-out, 40 subscribers on 1 conversation: deliveries",
        "events/s",
        Higher,
        None,
    ),
    m(
        "fan_small_lat_p50_ms",
        "WS fan-out, 40 subscribers on 1 conversation: POST -> last subscriber p50",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "fan_small_lat_p99_ms",
        "WS fan-out, 40 subscribers on 1 conversation: POST -> last subscriber p99",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "fan_big_events_per_s",
        "WS fan-out, 200 subscribers on 5 conversations: deliveries",
        "events/s",
        Higher,
        None,
    ),
    m(
        "fan_big_lat_p50_ms",
        "WS fan-out, 200 subscribers on 5 conversations: POST -> last subscriber p50",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "fan_big_lat_p99_ms",
        "WS fan-out, 200 subscribers on 5 conversations: POST -> last subscriber p99",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "step_p50_ms",
        "agent step (instant LLM), one conversation p50",
        "ms",
        Lower,
        Some("floor_llm_ms"),
    ),
    m(
        "step_p99_ms",
        "agent step (instant LLM), one conversation p99",
        "ms",
        Lower,
        Some("floor_llm_ms"),
    ),
    m(
        "step_overhead_p50_ms",
        "agent step server overhead (step minus one mock completion) p50",
        "ms",
        Lower,
        None,
    ),
    m(
        "step_overhead_p99_ms",
        "agent step server overhead (step minus one mock completion) p99",
        "ms",
        Lower,
        None,
    ),
    m(
        "par_wall_s",
        "parallel conversations: wall time for all steps",
        "s",
        Lower,
        None,
    ),
    m(
        "par_steps_per_s",
        "parallel conversations: steps/s",
        "steps/s",
        Higher,
        None,
    ),
    m(
        "events_persisted_per_s",
        "parallel conversations: events persisted/s",
        "events/s",
        Higher,
        None,
    ),
    m(
        "scale_start_ms",
        "many conversations on disk: spawn -> first 200 /health",
        "ms",
        Lower,
        Some("floor_spawn_ms"),
    ),
    m(
        "scale_rss_mib",
        "many conversations on disk: RSS 2 s after ready",
        "MiB",
        Lower,
        None,
    ),
    m(
        "scale_search_first_ms",
        "many conversations: first conversations/search",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "scale_search_p50_ms",
        "many conversations: conversations/search p50",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "scale_search_p99_ms",
        "many conversations: conversations/search p99",
        "ms",
        Lower,
        Some("floor_http_ms"),
    ),
    m(
        "scale_rss_after_mib",
        "many conversations: RSS after searches",
        "MiB",
        Lower,
        None,
    ),
    m(
        "rss_after_load_mib",
        "RSS after the load scenarios (+1 s)",
        "MiB",
        Lower,
        None,
    ),
    m(
        "rss_peak_mib",
        "peak RSS over the load scenarios",
        "MiB",
        Lower,
        None,
    ),
    m(
        "server_cpu_s",
        "server CPU (user+sys) over the load scenarios",
        "s",
        Lower,
        None,
    ),
    m(
        "floor_spawn_ms",
        "floor: fork+exec+wait `true` from Rust p50",
        "ms",
        Info,
        None,
    ),
    m(
        "floor_spawn_per_s",
        "floor: fork+exec `true`, parallel threads",
        "spawn/s",
        Info,
        None,
    ),
    m(
        "floor_http_ms",
        "floor: empty axum handler round trip p50",
        "ms",
        Info,
        None,
    ),
    m(
        "floor_exec_ms",
        "floor: spawn + HTTP round trip",
        "ms",
        Info,
        None,
    ),
    m(
        "floor_tcp_mib_s",
        "floor: loopback TCP, one connection",
        "MiB/s",
        Info,
        None,
    ),
    m(
        "floor_bigout_s",
        "floor: large-output command run locally",
        "s",
        Info,
        None,
    ),
    m(
        "floor_bigout_mib_s",
        "floor: large-output command run locally",
        "MiB/s",
        Info,
        None,
    ),
    m(
        "floor_llm_ms",
        "floor: one mock LLM completion p50",
        "ms",
        Info,
        None,
    ),
];

/// What one scenario produced in one round.
#[derive(Default)]
pub struct Outcome {
    pub values: Vec<(String, f64)>,
    pub errors: Vec<(String, String)>,
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Outcome {
    pub fn value(&mut self, k: &str, v: f64) {
        self.values.push((k.to_owned(), v));
    }
    pub fn fail(&mut self, keys: &[&str], msg: String) {
        for k in keys {
            self.errors.push(((*k).to_owned(), msg.clone()));
        }
    }
    pub fn detail(&mut self, k: &str, v: impl Into<serde_json::Value>) {
        self.detail.insert(k.to_owned(), v.into());
    }
    /// Takes a scenario result: on error every key of the scenario fails with it.
    pub fn from_result(keys: &[&str], r: anyhow::Result<Outcome>) -> Outcome {
        r.unwrap_or_else(|e| {
            let mut o = Outcome::default();
            o.fail(keys, format!("{e:#}"));
            o
        })
    }
}

/// All samples and errors of one server.
#[derive(Default, Serialize)]
pub struct ServerResults {
    pub samples: BTreeMap<String, Vec<f64>>,
    pub errors: BTreeMap<String, Vec<String>>,
    pub detail: Vec<serde_json::Value>,
}

impl ServerResults {
    pub fn add(&mut self, scenario: &str, o: Outcome) {
        for (k, v) in o.values {
            if v.is_finite() {
                self.samples.entry(k).or_default().push(v);
            }
        }
        for (k, e) in o.errors {
            self.errors.entry(k).or_default().push(e);
        }
        if !o.detail.is_empty() {
            self.detail
                .push(serde_json::json!({ "scenario": scenario, "detail": o.detail }));
        }
    }

    /// Median over rounds, or None when a round failed or nothing ran.
    pub fn median(&self, k: &str) -> Option<f64> {
        if self.errors.contains_key(k) {
            return None;
        }
        self.samples
            .get(k)
            .filter(|s| !s.is_empty())
            .map(|s| median(s))
    }

    fn state(&self, k: &str) -> Cell {
        if self.errors.contains_key(k) {
            Cell::Fail
        } else if let Some(v) = self.median(k) {
            Cell::Value(v)
        } else {
            Cell::Skipped
        }
    }
}

enum Cell {
    Value(f64),
    Fail,
    Skipped,
}

/// Formats a figure with about three significant digits.
pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The Markdown table: one column per server, `X/A` ratios, then the floor and the last
/// server's multiple of it.
pub fn table(
    names: &[String],
    res: &BTreeMap<String, ServerResults>,
    floors: &ServerResults,
) -> String {
    let mut hdr: Vec<String> = vec!["metric".into(), "unit".into(), "better".into()];
    hdr.extend(names.iter().cloned());
    hdr.extend(names.iter().skip(1).map(|n| format!("{n}/{}", names[0])));
    let last = names.last().cloned().unwrap_or_default();
    hdr.push("floor".into());
    hdr.push(format!("{last}/floor"));
    let mut lines = vec![
        format!("| {} |", hdr.join(" | ")),
        format!(
            "|{}|",
            (0..hdr.len())
                .map(|i| if i < 3 { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        ),
    ];
    let empty = ServerResults::default();
    for mdef in METRICS {
        let is_floor = mdef.key.starts_with("floor_");
        let cells: Vec<Cell> = if is_floor {
            vec![floors.state(mdef.key)]
        } else {
            names
                .iter()
                .map(|n| res.get(n).unwrap_or(&empty).state(mdef.key))
                .collect()
        };
        if cells.iter().all(|c| matches!(c, Cell::Skipped)) {
            continue;
        }
        let mut row = vec![
            mdef.label.to_owned(),
            mdef.unit.to_owned(),
            match mdef.better {
                Lower => "lower",
                Higher => "higher",
                Info => "-",
            }
            .to_owned(),
        ];
        if is_floor {
            // Floors are one figure for the machine: shown in the first column.
            row.push(cell_text(&cells[0]));
            row.extend((1..names.len()).map(|_| String::new()));
            row.extend((1..names.len()).map(|_| String::new()));
            row.push(String::new());
            row.push(String::new());
            lines.push(format!("| {} |", row.join(" | ")));
            continue;
        }
        row.extend(cells.iter().map(cell_text));
        let a = match cells.first() {
            Some(Cell::Value(v)) => Some(*v),
            _ => None,
        };
        for c in cells.iter().skip(1) {
            row.push(match (a, c) {
                (Some(a), Cell::Value(b)) if a != 0.0 => ratio(b / a),
                _ => "-".into(),
            });
        }
        let floor = mdef.floor.and_then(|f| floors.median(f));
        row.push(floor.map(fmt).unwrap_or_default());
        row.push(match (floor, cells.last()) {
            (Some(f), Some(Cell::Value(v))) if f != 0.0 => ratio(v / f),
            _ => String::new(),
        });
        lines.push(format!("| {} |", row.join(" | ")));
    }
    let mut fails = Vec::new();
    for n in names {
        if let Some(r) = res.get(n) {
            let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (k, errs) in &r.errors {
                if let Some(e) = errs.first() {
                    seen.entry(e.as_str()).or_default().push(k.as_str());
                }
            }
            for (e, keys) in seen {
                let e: String = e.chars().take(400).collect();
                fails.push(format!(
                    "- {n} [{}]: {}",
                    keys.join(", "),
                    e.replace('\n', " ")
                ));
            }
        }
    }
    for (k, errs) in &floors.errors {
        if let Some(e) = errs.first() {
            fails.push(format!("- floor [{k}]: {e}"));
        }
    }
    if !fails.is_empty() {
        lines.push(String::new());
        lines.push("FAIL details (first error of each failing measurement):".into());
        lines.extend(fails);
    }
    lines.join("\n")
}

/// A ratio with two significant digits at least.
fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.3}x")
    }
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Value(v) => fmt(*v),
        Cell::Fail => "**FAIL**".into(),
        Cell::Skipped => "skipped".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_round_makes_the_cell_fail_not_a_time() {
        let mut r = ServerResults::default();
        let mut o = Outcome::default();
        o.value("health_p50_ms", 1.0);
        r.add("x", o);
        let mut o = Outcome::default();
        o.fail(&["health_p50_ms"], "wrong body".into());
        r.add("x", o);
        assert_eq!(r.median("health_p50_ms"), None);
        let mut res = BTreeMap::new();
        res.insert("a".to_owned(), r);
        let t = table(&["a".into()], &res, &ServerResults::default());
        assert!(t.contains("**FAIL**"), "{t}");
        assert!(t.contains("wrong body"), "{t}");
    }

    #[test]
    fn numbers_are_formatted_compactly() {
        assert_eq!(fmt(1234567.0), "1,234,567");
        assert_eq!(fmt(12.345), "12.35");
        assert_eq!(fmt(0.5), "0.500");
    }
}
