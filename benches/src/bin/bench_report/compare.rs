//! Comparisons under each workload's table: ratios to HAProxy and to
//! pinroute's peers, latency added over direct, the scale workload against
//! workload a, and the closing "pingora floor" grid of ratios to HAProxy.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::row::{fmt_opt, fmt_rate, fmt_us, fmt_x, ratio, Row};

/// Compared with HAProxy in every workload: pingora's floor and pinroute.
const VS_HAPROXY: [&str; 3] = ["pingora-core-min", "pingora-proxy-min", "pinroute"];
/// pinroute's other peers, in line order.
const PINROUTE_PEERS: [&str; 4] = ["pingora-core-min", "pingora-proxy-min", "nginx", "direct"];
/// Columns of the floor grid (HAProxy's own numbers first).
const FLOOR_COLUMNS: [&str; 4] = ["haproxy", "pingora-core-min", "pingora-proxy-min", "pinroute"];
/// The scale workload's request, and the workload it is compared with.
pub const SCALE_WORKLOAD: &str = "g_scale_get";
const SCALE_BASE: &str = "a_get";

fn find<'a>(rows: &[&'a Row], contender: &str) -> Option<&'a Row> {
    rows.iter().copied().find(|r| r.contender == contender && r.measured())
}

fn ratio_json(a: &Row, b: &Row) -> Value {
    json!({
        "workload": a.workload,
        "contender": a.contender,
        "peer": b.contender,
        "req_per_s": ratio(a.req_per_s, b.req_per_s),
        "p50": ratio(a.p50_us, b.p50_us),
        "p99": ratio(a.p99_us, b.p99_us),
        "cpu_us_per_req": ratio(a.cpu_us_per_req, b.cpu_us_per_req),
        "kib_per_stream": ratio(a.kib_per_stream, b.kib_per_stream),
    })
}

fn ratio_line(ra: &Value) -> String {
    let f = |k: &str| fmt_opt(ra.get(k).and_then(Value::as_f64), fmt_x);
    let label = format!("{}/{}", ra["contender"].as_str().unwrap_or(""), ra["peer"].as_str().unwrap_or(""));
    let mut line = format!(
        "  {label:<27} req/s {}  p50 {}  p99 {}  CPU/req {}",
        f("req_per_s"),
        f("p50"),
        f("p99"),
        f("cpu_us_per_req")
    );
    if ra.get("kib_per_stream").and_then(Value::as_f64).is_some() {
        let _ = write!(line, "  KiB/stream {}", f("kib_per_stream"));
    }
    line
}

/// Ratio lines under a workload's table (and their JSON): the floor and
/// pinroute against HAProxy, then pinroute against its other peers.
pub fn ratios(rows: &[&Row]) -> (Vec<String>, Vec<Value>) {
    let mut pairs = Vec::new();
    if let Some(hap) = find(rows, "haproxy") {
        pairs.extend(VS_HAPROXY.iter().filter_map(|c| find(rows, c)).map(|r| (r, hap)));
    }
    if let Some(pin) = find(rows, "pinroute") {
        pairs.extend(PINROUTE_PEERS.iter().filter_map(|c| find(rows, c)).map(|peer| (pin, peer)));
    }
    let values: Vec<Value> = pairs.iter().map(|(a, b)| ratio_json(a, b)).collect();
    (values.iter().map(ratio_line).collect(), values)
}

/// The 1-connection workloads: what each proxy adds to direct's latency in
/// the same placement.
pub fn added_over_direct(rows: &[&Row]) -> Vec<String> {
    let Some(direct) = find(rows, "direct") else {
        return Vec::new();
    };
    let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+.0}µs", a - b),
        _ => "-".into(),
    };
    rows.iter()
        .filter(|r| r.measured() && r.contender != "direct")
        .map(|r| {
            format!(
                "  {:<27} p50 {}  p99 {}",
                format!("{} - direct", r.contender),
                diff(r.p50_us, direct.p50_us),
                diff(r.p99_us, direct.p99_us)
            )
        })
        .collect()
}

/// The scale workload against the same contender's workload a.
pub fn against_base(rows: &[&Row], by: &BTreeMap<(String, String), Row>) -> (Vec<String>, Vec<Value>) {
    let mut lines = Vec::new();
    let mut values = Vec::new();
    for r in rows.iter().filter(|r| r.measured()) {
        let Some(base) = by.get(&(r.contender.clone(), SCALE_BASE.to_string())).filter(|b| b.measured()) else {
            continue;
        };
        let (rps, cpu) = (ratio(r.req_per_s, base.req_per_s), ratio(r.cpu_us_per_req, base.cpu_us_per_req));
        lines.push(format!(
            "  {:<27} req/s {}  CPU/req {} ({} vs {} µs)",
            format!("{} g/a", r.contender),
            fmt_opt(rps, fmt_x),
            fmt_opt(cpu, fmt_x),
            fmt_opt(r.cpu_us_per_req, |v| format!("{v:.1}")),
            fmt_opt(base.cpu_us_per_req, |v| format!("{v:.1}"))
        ));
        values.push(ratio_json(r, base));
    }
    (lines, values)
}

type Metric = (&'static str, fn(&Row) -> Option<f64>, fn(f64) -> String);

const FLOOR_METRICS: [Metric; 4] = [
    ("req/s", |r| r.req_per_s, fmt_rate),
    ("p99", |r| r.p99_us, fmt_us),
    ("CPU µs/rq", |r| r.cpu_us_per_req, |v| format!("{v:.1}")),
    ("KiB/stream", |r| r.kib_per_stream, |v| format!("{v:.1}")),
];

/// The grid that shows how far pinroute is from pingora's floor and from
/// HAProxy: per workload and metric, HAProxy's number and everyone else's
/// as a ratio to it.
pub fn floor_grid(workloads: &[(String, String)], by: &BTreeMap<(String, String), Row>) -> (String, Vec<Value>) {
    let get = |c: &str, w: &str| by.get(&(c.to_string(), w.to_string())).filter(|r| r.measured());
    let mut out = String::new();
    let mut values = Vec::new();
    for (workload, _) in workloads {
        let Some(hap) = get("haproxy", workload) else { continue };
        if FLOOR_COLUMNS[1..3].iter().all(|c| get(c, workload).is_none()) {
            continue;
        }
        for (name, metric, fmt) in FLOOR_METRICS {
            let Some(base) = metric(hap) else { continue };
            let mut line = format!("{workload:<24} {name:<11} {:>10}", fmt(base));
            let mut cells = serde_json::Map::new();
            for c in &FLOOR_COLUMNS[1..] {
                let r = get(c, workload).and_then(metric).and_then(|v| ratio(Some(v), Some(base)));
                let _ = write!(line, " {:>18}", fmt_opt(r, fmt_x));
                cells.insert((*c).to_string(), json!(r));
            }
            let _ = writeln!(out, "{}", line.trim_end());
            values.push(json!({"workload": workload, "metric": name, "haproxy": base, "ratio_to_haproxy": cells}));
        }
    }
    if out.is_empty() {
        return (out, values);
    }
    let mut header = format!("{:<24} {:<11} {:>10}", "workload", "metric", "haproxy");
    for c in &FLOOR_COLUMNS[1..] {
        let _ = write!(header, " {c:>18}");
    }
    (format!("{header}\n{out}"), values)
}
