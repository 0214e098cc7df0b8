//! Turns the harness's raw measurements (one JSON object per contender and
//! workload, written by `harness/run.sh`) into the results table: text for
//! people, JSON for tools, with pinroute's ratios to each peer and the goals
//! marked pass/miss.
//!
//! It does no measuring: everything here is arithmetic on the raw records.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;
use serde_json::{json, Map, Value};

const USAGE: &str = "usage: bench_report --raw FILE --out-txt FILE --out-json FILE \
[--meta KEY=VALUE ...] [--note TEXT ...]";

/// Contenders in table order; the harness may run a subset.
const CONTENDERS: [&str; 5] = ["direct", "pinroute", "pinroute-info-log", "haproxy", "nginx"];
/// The peers pinroute is compared with, in ratio order.
const PEERS: [&str; 3] = ["haproxy", "nginx", "direct"];

struct Args {
    raw: String,
    out_txt: String,
    out_json: String,
    meta: Vec<(String, String)>,
    notes: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        raw: String::new(),
        out_txt: String::new(),
        out_json: String::new(),
        meta: Vec::new(),
        notes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--raw" => args.raw = v,
            "--out-txt" => args.out_txt = v,
            "--out-json" => args.out_json = v,
            "--meta" => {
                let (k, val) = v.split_once('=').with_context(|| format!("--meta {v}: expected KEY=VALUE"))?;
                args.meta.push((k.to_string(), val.to_string()));
            }
            "--note" => args.notes.push(v),
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if args.raw.is_empty() || args.out_txt.is_empty() || args.out_json.is_empty() {
        anyhow::bail!("{USAGE}");
    }
    Ok(args)
}

/// One contender × workload, reduced to the numbers of the table.
#[derive(Debug, Default, Clone)]
struct Row {
    contender: String,
    workload: String,
    title: String,
    skipped: Option<String>,
    error: Option<String>,
    note: Option<String>,
    requests: Option<f64>,
    req_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// Transport errors: connect/read/write/timeouts, failed streams or frames.
    errors: u64,
    /// Responses with status ≥ 400 (wrk counts these as "status" errors).
    non_2xx: u64,
    cpu_us_per_req: Option<f64>,
    cpu_percent: Option<f64>,
    rss_kib: Option<f64>,
    upload_mb_per_s: Option<f64>,
    kib_per_stream: Option<f64>,
    streams_open: Option<u64>,
    /// Machine busy % (both cores) just before the workload started.
    quiet_busy_pct: Option<f64>,
    /// CPU (% of one core, all cores summed) used by processes outside the
    /// harness during the workload.
    foreign_cpu_pct: Option<f64>,
    /// How many times the workload ran (noisy attempts are repeated).
    attempts: Option<u64>,
    /// Foreign CPU of each attempt, as the harness wrote it.
    attempts_foreign: Option<String>,
    raw: Value,
}

/// Past these, a row's numbers are marked as measured on a busy machine.
const NOISY_FOREIGN_PCT: f64 = 5.0;
const NOISY_BUSY_PCT: f64 = 15.0;

impl Row {
    /// Memory rows (idle streams) do not depend on CPU share.
    fn noisy(&self) -> bool {
        self.kib_per_stream.is_none()
            && (self.foreign_cpu_pct.is_some_and(|f| f > NOISY_FOREIGN_PCT)
                || self.quiet_busy_pct.is_some_and(|b| b > NOISY_BUSY_PCT))
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty())
}

fn row_of(record: &Value) -> Row {
    let mut row = Row {
        contender: text(record, "contender").unwrap_or_default(),
        workload: text(record, "workload").unwrap_or_default(),
        title: text(record, "title").unwrap_or_default(),
        skipped: text(record, "skipped"),
        error: text(record, "error"),
        note: text(record, "note"),
        rss_kib: num(record, "rss_kib"),
        quiet_busy_pct: num(record, "quiet_busy_pct"),
        foreign_cpu_pct: num(record, "foreign_cpu_pct"),
        attempts: num(record, "attempts").map(|a| a as u64),
        attempts_foreign: text(record, "attempts_foreign"),
        raw: record.clone(),
        ..Row::default()
    };
    let Some(result) = record.get("result").filter(|r| r.is_object()) else {
        return row;
    };
    let count = |k: &str| num(result, k).unwrap_or(0.0) as u64;
    let duration_s = num(result, "duration_us").map(|d| d / 1e6).filter(|d| *d > 0.0);
    row.requests = num(result, "requests");
    row.p50_us = num(result, "lat_p50_us");
    row.p99_us = num(result, "lat_p99_us");
    if let (Some(n), Some(d)) = (row.requests, duration_s) {
        row.req_per_s = Some(n / d);
        if let Some(body) = num(record, "body_bytes").filter(|b| *b > 0.0) {
            row.upload_mb_per_s = Some(n * body / d / 1e6);
        }
        if let (Some(ticks), Some(hz)) = (num(record, "cpu_ticks"), num(record, "clk_tck")) {
            let cpu_s = ticks / hz.max(1.0);
            if n > 0.0 {
                row.cpu_us_per_req = Some(cpu_s * 1e6 / n);
            }
            row.cpu_percent = Some(100.0 * cpu_s / d);
        }
    }
    if result.get("kib_per_stream").is_some() {
        row.kib_per_stream = num(result, "kib_per_stream");
        row.streams_open = num(result, "streams_still_open").map(|v| v as u64);
        row.errors =
            count("failed") + count("pending") + (count("streams_open").saturating_sub(count("streams_still_open")));
        if row.error.is_none() {
            row.error = text(result, "first_error");
        }
    } else if result.get("connect_errors").is_some() {
        row.errors = count("connect_errors") + count("read_errors") + count("write_errors") + count("timeouts");
        row.non_2xx = count("status_errors");
    } else {
        row.errors = count("errors");
        if row.error.is_none() {
            row.error = text(result, "first_error");
        }
    }
    row
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// pinroute's row against each peer's, for the metrics that exist in both.
fn ratios(rows: &[&Row]) -> Vec<Value> {
    let Some(pin) = rows.iter().find(|r| r.contender == "pinroute" && r.skipped.is_none()) else {
        return Vec::new();
    };
    PEERS
        .iter()
        .filter_map(|peer| rows.iter().find(|r| r.contender == *peer && r.skipped.is_none()))
        .map(|peer| {
            json!({
                "workload": pin.workload,
                "peer": peer.contender,
                "req_per_s": ratio(pin.req_per_s, peer.req_per_s),
                "p50": ratio(pin.p50_us, peer.p50_us),
                "p99": ratio(pin.p99_us, peer.p99_us),
                "cpu_us_per_req": ratio(pin.cpu_us_per_req, peer.cpu_us_per_req),
                "kib_per_stream": ratio(pin.kib_per_stream, peer.kib_per_stream),
            })
        })
        .collect()
}

struct Goal {
    name: &'static str,
    target: &'static str,
    value: Option<f64>,
    passes: fn(f64) -> bool,
    shown: String,
    caveat: Option<String>,
}

fn goals(by: &BTreeMap<(String, String), Row>) -> Vec<Goal> {
    let get = |c: &str, w: &str| by.get(&(c.to_string(), w.to_string())).filter(|r| r.skipped.is_none());
    let (pin, hap, ngx, dir) =
        (get("pinroute", "a_get"), get("haproxy", "a_get"), get("nginx", "a_get"), get("direct", "a_get"));
    let caveat = |rows: &[Option<&Row>]| {
        let mut bad: Vec<String> = rows
            .iter()
            .flatten()
            .filter(|r| r.errors > 0 || r.non_2xx > 0 || r.error.is_some())
            .map(|r| format!("{} had {} errors, {} non-2xx", r.contender, r.errors, r.non_2xx))
            .collect();
        bad.extend(rows.iter().flatten().filter(|r| r.noisy()).map(|r| {
            format!(
                "{} {} was measured while other work ran (foreign {})",
                r.contender,
                r.workload,
                fmt_opt(r.foreign_cpu_pct, |v| format!("{v:.0}%"))
            )
        }));
        (!bad.is_empty()).then(|| bad.join("; "))
    };
    let rps_vs_hap = ratio(pin.and_then(|r| r.req_per_s), hap.and_then(|r| r.req_per_s));
    let rps_vs_ngx = ratio(pin.and_then(|r| r.req_per_s), ngx.and_then(|r| r.req_per_s));
    let p99_vs_hap = ratio(pin.and_then(|r| r.p99_us), hap.and_then(|r| r.p99_us));
    let added_p50 = match (pin.and_then(|r| r.p50_us), dir.and_then(|r| r.p50_us)) {
        (Some(p), Some(d)) => Some(p - d),
        _ => None,
    };
    let (pin1, dir1) = (get("pinroute", "a1_get_1conn"), get("direct", "a1_get_1conn"));
    let added_p50_unloaded = match (pin1.and_then(|r| r.p50_us), dir1.and_then(|r| r.p50_us)) {
        (Some(p), Some(d)) => Some(p - d),
        _ => None,
    };
    let (pin_d, hap_d) = (get("pinroute", "d_idle_streams"), get("haproxy", "d_idle_streams"));
    let kib_vs_hap = ratio(pin_d.and_then(|r| r.kib_per_stream), hap_d.and_then(|r| r.kib_per_stream));
    vec![
        Goal {
            name: "a. small GET req/s vs HAProxy",
            target: ">= 1.0x",
            value: rps_vs_hap,
            passes: |v| v >= 1.0,
            shown: fmt_opt(rps_vs_hap, |v| format!("{v:.2}x")),
            caveat: caveat(&[pin, hap]),
        },
        Goal {
            name: "a. small GET req/s vs nginx",
            target: ">= 1.2x",
            value: rps_vs_ngx,
            passes: |v| v >= 1.2,
            shown: fmt_opt(rps_vs_ngx, |v| format!("{v:.2}x")),
            caveat: caveat(&[pin, ngx]),
        },
        Goal {
            name: "a. small GET p99 vs HAProxy",
            target: "<= 1.0x",
            value: p99_vs_hap,
            passes: |v| v <= 1.0,
            shown: match (pin.and_then(|r| r.p99_us), hap.and_then(|r| r.p99_us), p99_vs_hap) {
                (Some(p), Some(h), Some(r)) => format!("{} vs {} ({r:.2}x)", fmt_us(p), fmt_us(h)),
                _ => "-".into(),
            },
            caveat: caveat(&[pin, hap]),
        },
        Goal {
            name: "a. added p50 over direct",
            target: "<= 50µs",
            value: added_p50,
            passes: |v| v <= 50.0,
            shown: fmt_opt(added_p50, |v| format!("{v:+.0}µs")),
            caveat: caveat(&[pin, dir]),
        },
        Goal {
            name: "a1. same, 1 connection (unloaded)",
            target: "<= 50µs",
            value: added_p50_unloaded,
            passes: |v| v <= 50.0,
            shown: fmt_opt(added_p50_unloaded, |v| format!("{v:+.0}µs")),
            caveat: caveat(&[pin1, dir1]),
        },
        Goal {
            name: "d. RSS per idle stream vs HAProxy",
            target: "<= 1.0x",
            value: kib_vs_hap,
            passes: |v| v <= 1.0,
            shown: match (pin_d.and_then(|r| r.kib_per_stream), hap_d.and_then(|r| r.kib_per_stream), kib_vs_hap) {
                (Some(p), Some(h), Some(r)) => format!("{p:.1} vs {h:.1} KiB ({r:.2}x)"),
                _ => "-".into(),
            },
            caveat: caveat(&[pin_d, hap_d]),
        },
    ]
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let raw = std::fs::read_to_string(&args.raw).with_context(|| format!("reading {}", args.raw))?;
    let mut rows = Vec::new();
    for (i, line) in raw.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record: Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON: {line}", args.raw, i + 1))?;
        rows.push(row_of(&record));
    }
    let rank = |c: &str| CONTENDERS.iter().position(|x| *x == c).unwrap_or(CONTENDERS.len());
    // Workloads in the order the harness ran them.
    let mut workloads: Vec<(String, String)> = Vec::new();
    for r in &rows {
        if !workloads.iter().any(|(w, _)| *w == r.workload) {
            workloads.push((r.workload.clone(), r.title.clone()));
        }
    }
    let by: BTreeMap<(String, String), Row> =
        rows.iter().map(|r| ((r.contender.clone(), r.workload.clone()), r.clone())).collect();

    let mut out = String::new();
    let meta: Map<String, Value> = args.meta.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let _ = writeln!(out, "pinroute side-by-side load harness");
    for (k, v) in &args.meta {
        let _ = writeln!(out, "  {k:<14} {v}");
    }
    let _ = writeln!(out);
    for n in &args.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let mut all_ratios = Vec::new();
    for (workload, title) in &workloads {
        let mut wrows: Vec<&Row> = rows.iter().filter(|r| r.workload == *workload).collect();
        wrows.sort_by_key(|r| rank(&r.contender));
        let _ = writeln!(out, "\n== {workload}: {title}");
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>9} {:>8} {:>13}",
            "contender", "req/s", "p50", "p99", "errors", "non2xx", "CPUµs/rq", "CPU%", "RSS MiB", "foreign", "extra"
        );
        for r in &wrows {
            if let Some(reason) = &r.skipped {
                let _ = writeln!(out, "{:<18} skipped: {reason}", r.contender);
                continue;
            }
            let extra = if let Some(mb) = r.upload_mb_per_s {
                format!("{mb:.0} MB/s up")
            } else if let Some(k) = r.kib_per_stream {
                format!("{k:.1} KiB/strm")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:<18} {:>10} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>9} {:>8} {:>13}",
                r.contender,
                fmt_opt(r.req_per_s, fmt_rate),
                fmt_opt(r.p50_us, fmt_us),
                fmt_opt(r.p99_us, fmt_us),
                r.errors,
                r.non_2xx,
                fmt_opt(r.cpu_us_per_req, |v| format!("{v:.1}")),
                fmt_opt(r.cpu_percent, |v| format!("{v:.0}")),
                fmt_opt(r.rss_kib, |v| format!("{:.1}", v / 1024.0)),
                fmt_opt(r.foreign_cpu_pct, |v| format!("{v:.0}%{}", if r.noisy() { "!" } else { "" })),
                extra
            );
            if let Some(e) = &r.error {
                let _ = writeln!(out, "{:<18}   ! {e}", "");
            }
            if let Some(n) = &r.note {
                let _ = writeln!(out, "{:<18}   note: {n}", "");
            }
            if let (Some(a), Some(f)) = (r.attempts.filter(|a| *a > 1), &r.attempts_foreign) {
                let _ = writeln!(
                    out,
                    "{:<18}   measured {a} times (other processes' CPU: {f}); the least noisy is shown",
                    ""
                );
            }
        }
        let rs = ratios(&wrows);
        for ra in &rs {
            let f = |k: &str| fmt_opt(ra.get(k).and_then(Value::as_f64), |v| format!("{v:.2}x"));
            let mut line = format!(
                "  pinroute/{:<8} req/s {}  p50 {}  p99 {}  CPU/req {}",
                ra["peer"].as_str().unwrap_or(""),
                f("req_per_s"),
                f("p50"),
                f("p99"),
                f("cpu_us_per_req")
            );
            if ra.get("kib_per_stream").and_then(Value::as_f64).is_some() {
                let _ = write!(line, "  KiB/stream {}", f("kib_per_stream"));
            }
            let _ = writeln!(out, "{line}");
        }
        all_ratios.extend(rs);
    }

    let noisy: Vec<&Row> = rows.iter().filter(|r| r.noisy()).collect();
    if !noisy.is_empty() {
        let _ = writeln!(out, "\n== measured while other work ran (other processes used > {NOISY_FOREIGN_PCT}% of a core, or the machine was > {NOISY_BUSY_PCT}% busy at the start): treat these as lower bounds");
        for r in &noisy {
            let _ = writeln!(
                out,
                "  {:<18} {:<20} foreign {}  machine busy at start {}",
                r.contender,
                r.workload,
                fmt_opt(r.foreign_cpu_pct, |v| format!("{v:.0}%")),
                fmt_opt(r.quiet_busy_pct, |v| format!("{v:.0}%"))
            );
        }
    }

    let goals = goals(&by);
    let _ = writeln!(out, "\n== goals (pinroute)");
    let mut goals_json = Vec::new();
    for g in &goals {
        let status = match (g.value, &g.caveat) {
            (Some(v), None) if (g.passes)(v) => "PASS",
            (Some(_), None) => "MISS",
            // Errors or noise behind the number: say so in the status too.
            (Some(v), Some(_)) if (g.passes)(v) => "PASS?",
            (Some(_), Some(_)) => "MISS?",
            (None, _) => "n/a",
        };
        let _ = writeln!(out, "  [{status:<5}] {:<36} target {:<8} got {}", g.name, g.target, g.shown);
        if let Some(c) = &g.caveat {
            let _ = writeln!(out, "         caution: {c}");
        }
        goals_json.push(json!({
            "goal": g.name, "target": g.target, "value": g.value,
            "status": status, "shown": g.shown, "caveat": g.caveat,
        }));
    }

    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "contender": r.contender, "workload": r.workload, "title": r.title,
                "skipped": r.skipped, "error": r.error, "note": r.note,
                "requests": r.requests, "req_per_s": r.req_per_s,
                "p50_us": r.p50_us, "p99_us": r.p99_us,
                "errors": r.errors, "non_2xx": r.non_2xx,
                "cpu_us_per_req": r.cpu_us_per_req, "cpu_percent": r.cpu_percent,
                "rss_kib": r.rss_kib, "upload_mb_per_s": r.upload_mb_per_s,
                "kib_per_stream": r.kib_per_stream, "streams_open": r.streams_open,
                "quiet_busy_pct": r.quiet_busy_pct, "foreign_cpu_pct": r.foreign_cpu_pct,
                "noisy": r.noisy(), "attempts": r.attempts,
                "raw": r.raw,
            })
        })
        .collect();
    let doc = json!({
        "machine": meta,
        "notes": args.notes,
        "results": results,
        "ratios": all_ratios,
        "goals": goals_json,
    });
    std::fs::write(&args.out_txt, &out).with_context(|| format!("writing {}", args.out_txt))?;
    std::fs::write(&args.out_json, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", args.out_json))?;
    print!("{out}");
    Ok(())
}
