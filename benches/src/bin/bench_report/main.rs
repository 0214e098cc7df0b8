//! Turns the harness's raw measurements (one JSON object per contender and
//! workload, written by `harness/run.sh`) into the results table: text for
//! people, JSON for tools, with ratios to HAProxy and pinroute's other peers,
//! pingora's floor beside pinroute, and the goals marked pass/miss.
//!
//! It does no measuring: everything here is arithmetic on the raw records.

mod compare;
mod goals;
mod rounds;
mod row;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;
use serde_json::{json, Map, Value};

use goals::{Goal, Rows};
use row::{fmt_opt, fmt_rate, fmt_us, fmt_x, ratio, row_of, Row, NOISY_BUSY_PCT, NOISY_FOREIGN_PCT};

const USAGE: &str = "usage: bench_report --raw FILE --out-txt FILE --out-json FILE \
[--meta KEY=VALUE ...] [--note TEXT ...]";

/// Contenders in table order (pingora's floor next to pinroute); the
/// harness may run a subset.
const CONTENDERS: [&str; 7] =
    ["direct", "pingora-core-min", "pingora-proxy-min", "pinroute", "pinroute-info-log", "haproxy", "nginx"];
/// Workloads in table order (a contender skipping one emits it early); others follow in the order run.
const WORKLOADS: [&str; 12] = [
    "a_get",
    "a1_get_1conn",
    "a1s_get_1conn_same_core",
    "a2_get_new_client",
    "b_conn_close",
    "c_upload",
    "d_idle_streams",
    "e_ws_echo",
    "f_get_basic_auth",
    "g_scale_learn",
    "g_scale_get",
    "g_scale_lookup",
];

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

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let raw = std::fs::read_to_string(&args.raw).with_context(|| format!("reading {}", args.raw))?;
    let mut rows = Vec::new();
    for (i, line) in raw.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record: Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON: {line}", args.raw, i + 1))?;
        rows.push(row_of(&record));
    }
    let rows = rounds::merge(rows);
    let rank = |c: &str| CONTENDERS.iter().position(|x| *x == c).unwrap_or(CONTENDERS.len());
    let mut workloads: Vec<(String, String)> = Vec::new();
    for r in &rows {
        if !workloads.iter().any(|(w, _)| *w == r.workload) {
            workloads.push((r.workload.clone(), r.title.clone()));
        }
    }
    // Stable: unknown workloads keep the order the harness ran them in.
    workloads.sort_by_key(|(w, _)| WORKLOADS.iter().position(|x| x == w).unwrap_or(WORKLOADS.len()));
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
        write_table(&mut out, &wrows);
        let (lines, values) = compare::ratios(&wrows);
        all_ratios.extend(values);
        let added = if workload.starts_with("a1") { compare::added_over_direct(&wrows) } else { Vec::new() };
        if !added.is_empty() {
            let _ = writeln!(out, "  latency added over direct in the same placement:");
            lines_to(&mut out, &added);
        }
        if workload == compare::SCALE_WORKLOAD {
            let (scale, values) = compare::against_base(&wrows, &by);
            lines_to(&mut out, &scale);
            all_ratios.extend(values);
        }
        lines_to(&mut out, &lines);
    }

    let (grid, floor_json) = compare::floor_grid(&workloads, &by);
    if !grid.is_empty() {
        let _ = writeln!(
            out,
            "\n== pingora's floor, pinroute and HAProxy: HAProxy's number, the others as a ratio to it\n{grid}"
        );
    }

    let noisy: Vec<&Row> = rows.iter().filter(|r| r.noisy()).collect();
    if !noisy.is_empty() {
        let _ = writeln!(out, "\n== measured while other work ran (other processes used > {NOISY_FOREIGN_PCT}% of a core, or the machine was > {NOISY_BUSY_PCT}% busy at the start): treat these as lower bounds");
        for r in &noisy {
            let _ = writeln!(
                out,
                "  {:<18} {:<24} foreign {}  machine busy at start {}",
                r.contender,
                r.workload,
                fmt_opt(r.foreign_cpu_pct, |v| format!("{v:.0}%")),
                fmt_opt(r.quiet_busy_pct, |v| format!("{v:.0}%"))
            );
        }
    }

    let view = Rows(&by);
    let goals_json = write_goals(&mut out, "goals (pinroute)", &goals::goals(&view));
    let targets_json =
        write_goals(&mut out, "targets of the pingora-floor issue (pinroute)", &goals::issue_targets(&view));

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
                "ids_learned": r.ids_learned, "ids_wanted": r.ids_wanted,
                "quiet_busy_pct": r.quiet_busy_pct, "foreign_cpu_pct": r.foreign_cpu_pct,
                "noisy": r.noisy(), "attempts": r.attempts, "round_req_per_s": r.round_rates(),
                "raw": r.raw,
            })
        })
        .collect();
    let doc = json!({
        "machine": meta,
        "notes": args.notes,
        "results": results,
        "ratios": all_ratios,
        "floor": floor_json,
        "goals": goals_json,
        "issue_targets": targets_json,
    });
    std::fs::write(&args.out_txt, &out).with_context(|| format!("writing {}", args.out_txt))?;
    std::fs::write(&args.out_json, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", args.out_json))?;
    print!("{out}");
    Ok(())
}

fn lines_to(out: &mut String, lines: &[String]) {
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// One workload's rows. `vs HAP`: req/s ÷ HAProxy's (idle streams: KiB per
/// stream ÷ HAProxy's), so the floor and pinroute read against HAProxy at a glance.
fn write_table(out: &mut String, rows: &[&Row]) {
    let hap = rows.iter().find(|r| r.contender == "haproxy" && r.measured());
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>7} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>9} {:>8} {:>13}",
        "contender",
        "req/s",
        "vs HAP",
        "p50",
        "p99",
        "errors",
        "non2xx",
        "CPUµs/rq",
        "CPU%",
        "RSS MiB",
        "foreign",
        "extra"
    );
    for r in rows {
        if let Some(reason) = &r.skipped {
            let _ = writeln!(out, "{:<18} skipped: {reason}", r.contender);
            continue;
        }
        let vs_hap = match (r.kib_per_stream, hap) {
            (Some(k), Some(h)) => ratio(Some(k), h.kib_per_stream),
            (None, Some(h)) => ratio(r.req_per_s, h.req_per_s),
            _ => None,
        };
        let extra = if let Some(mb) = r.upload_mb_per_s {
            format!("{mb:.0} MB/s up")
        } else if let Some(k) = r.kib_per_stream {
            format!("{k:.1} KiB/strm")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>7} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>9} {:>8} {:>13}",
            r.contender,
            fmt_opt(r.req_per_s, fmt_rate),
            fmt_opt(vs_hap, fmt_x),
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
        let round_rates = r.round_rates();
        if round_rates.len() > 1 {
            let rates: Vec<String> = round_rates.iter().map(|v| fmt_opt(*v, fmt_rate)).collect();
            let _ = writeln!(out, "{:<18}   rounds: {} req/s (the row: medians)", "", rates.join(" / "));
        }
        if let (Some(a), Some(f)) = (r.attempts.filter(|a| *a > 1), &r.attempts_foreign) {
            let _ =
                writeln!(out, "{:<18}   measured {a} times (other processes' CPU: {f}); the least noisy is shown", "");
        }
    }
}

fn write_goals(out: &mut String, heading: &str, goals: &[Goal]) -> Vec<Value> {
    let _ = writeln!(out, "\n== {heading}");
    let mut json = Vec::new();
    for g in goals {
        let status = g.status();
        let _ = writeln!(out, "  [{status:<5}] {:<38} target {:<9} got {}", g.name, g.target, g.shown);
        if let Some(c) = &g.caveat {
            let _ = writeln!(out, "         caution: {c}");
        }
        json.push(json!({
            "goal": g.name, "target": g.target, "value": g.value,
            "status": status, "shown": g.shown, "caveat": g.caveat,
        }));
    }
    json
}
