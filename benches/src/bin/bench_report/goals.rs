//! The goals pinroute is held to, as PASS/MISS lines: the project's
//! standing goals and the targets of the pingora-floor issue. A number with
//! errors or noise behind it says so (PASS?/MISS? and a caution line).

use std::collections::BTreeMap;

use crate::rounds::median;
use crate::row::{fmt_opt, fmt_us, fmt_x, ratio, Row};

/// Streams the idle-stream target is stated at.
const STREAMS_TARGET: u64 = 2000;

pub struct Goal {
    pub name: &'static str,
    pub target: &'static str,
    pub value: Option<f64>,
    pub passes: fn(f64) -> bool,
    pub shown: String,
    pub caveat: Option<String>,
}

impl Goal {
    pub fn status(&self) -> &'static str {
        match (self.value, &self.caveat) {
            (Some(v), None) if (self.passes)(v) => "PASS",
            (Some(_), None) => "MISS",
            // Errors or noise behind the number: say so in the status too.
            (Some(v), Some(_)) if (self.passes)(v) => "PASS?",
            (Some(_), Some(_)) => "MISS?",
            (None, _) => "n/a",
        }
    }
}

/// Measured rows by (contender, workload).
pub struct Rows<'a>(pub &'a BTreeMap<(String, String), Row>);

impl Rows<'_> {
    pub fn get(&self, contender: &str, workload: &str) -> Option<&Row> {
        self.0.get(&(contender.to_string(), workload.to_string())).filter(|r| r.measured())
    }
}

fn caveat(rows: &[Option<&Row>]) -> Option<String> {
    let rows: Vec<&Row> = rows.iter().flatten().copied().collect();
    let mut bad: Vec<String> = rows
        .iter()
        .filter(|r| r.errors > 0 || r.non_2xx > 0 || r.error.is_some())
        .map(|r| format!("{} {} had {} errors, {} non-2xx", r.contender, r.workload, r.errors, r.non_2xx))
        .collect();
    bad.extend(rows.iter().filter(|r| r.noisy()).map(|r| {
        format!(
            "{} {} was measured while other work ran (foreign {})",
            r.contender,
            r.workload,
            fmt_opt(r.foreign_cpu_pct, |v| format!("{v:.0}%"))
        )
    }));
    bad.extend(rows.iter().filter_map(|r| match (r.ids_learned, r.ids_wanted) {
        (Some(got), Some(wanted)) if got < wanted => {
            Some(format!("{} {} was taught {got} request ids, not {wanted} (see its note)", r.contender, r.workload))
        }
        _ => None,
    }));
    (!bad.is_empty()).then(|| bad.join("; "))
}

/// `metric(a) / metric(b)`; `values` also shows both numbers.
fn ratio_goal(
    name: &'static str,
    target: &'static str,
    passes: fn(f64) -> bool,
    (a, b): (Option<&Row>, Option<&Row>),
    metric: fn(&Row) -> Option<f64>,
    values: Option<fn(f64) -> String>,
) -> Goal {
    let (x, y) = (a.and_then(metric), b.and_then(metric));
    let value = ratio(x, y);
    let mut shown = match (values, x, y, value) {
        (Some(f), Some(x), Some(y), Some(r)) => format!("{} vs {} ({r:.2}x)", f(x), f(y)),
        _ => fmt_opt(value, fmt_x),
    };
    if let (Some(a), Some(b)) = (a, b) {
        let paired = per_round(a, b, metric);
        let each: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
        if let (true, Some(mid)) = (paired.len() > 1, median(paired)) {
            shown += &format!("; per round {} (median {mid:.2}x)", each.join(" / "));
        }
    }
    Goal { name, target, value, passes, shown, caveat: caveat(&[a, b]) }
}

/// `metric(a) / metric(b)` of each round both rows were measured in. The
/// goal itself stays the ratio of the rows' medians; this shows how far
/// single rounds, whose contenders ran minutes apart, spread around it.
fn per_round(a: &Row, b: &Row, metric: fn(&Row) -> Option<f64>) -> Vec<f64> {
    a.rounds
        .iter()
        .filter_map(|ra| {
            let rb = b.rounds.iter().find(|rb| rb.round.is_some() && rb.round == ra.round)?;
            ratio(metric(ra), metric(rb))
        })
        .collect()
}

/// `metric(a) - metric(b)`, in µs.
fn added_goal(
    name: &'static str,
    target: &'static str,
    passes: fn(f64) -> bool,
    (a, b): (Option<&Row>, Option<&Row>),
) -> Goal {
    let value = match (a.and_then(|r| r.p50_us), b.and_then(|r| r.p50_us)) {
        (Some(p), Some(d)) => Some(p - d),
        _ => None,
    };
    Goal { name, target, value, passes, shown: fmt_opt(value, |v| format!("{v:+.0}µs")), caveat: caveat(&[a, b]) }
}

fn rps(r: &Row) -> Option<f64> {
    r.req_per_s
}

fn p99(r: &Row) -> Option<f64> {
    r.p99_us
}

fn cpu(r: &Row) -> Option<f64> {
    r.cpu_us_per_req
}

fn kib(r: &Row) -> Option<f64> {
    r.kib_per_stream
}

fn fmt_kib(v: f64) -> String {
    format!("{v:.1} KiB")
}

fn fmt_cpu(v: f64) -> String {
    format!("{v:.1}µs")
}

/// The project's standing goals (README: "Reading the results").
pub fn goals(rows: &Rows) -> Vec<Goal> {
    let pin = |w| rows.get("pinroute", w);
    let peer = |c, w| rows.get(c, w);
    vec![
        ratio_goal(
            "a. small GET req/s vs HAProxy",
            ">= 1.0x",
            |v| v >= 1.0,
            (pin("a_get"), peer("haproxy", "a_get")),
            rps,
            None,
        ),
        ratio_goal(
            "a. small GET req/s vs nginx",
            ">= 1.2x",
            |v| v >= 1.2,
            (pin("a_get"), peer("nginx", "a_get")),
            rps,
            None,
        ),
        ratio_goal(
            "a. small GET p99 vs HAProxy",
            "<= 1.0x",
            |v| v <= 1.0,
            (pin("a_get"), peer("haproxy", "a_get")),
            p99,
            Some(fmt_us),
        ),
        added_goal("a. added p50 over direct", "<= 50µs", |v| v <= 50.0, (pin("a_get"), peer("direct", "a_get"))),
        added_goal(
            "a1. same, 1 connection (unloaded)",
            "<= 50µs",
            |v| v <= 50.0,
            (pin("a1_get_1conn"), peer("direct", "a1_get_1conn")),
        ),
        added_goal(
            "a1s. same, 1 connection, one core",
            "<= 50µs",
            |v| v <= 50.0,
            (pin("a1s_get_1conn_same_core"), peer("direct", "a1s_get_1conn_same_core")),
        ),
        ratio_goal(
            "d. RSS per idle stream vs HAProxy",
            "<= 1.0x",
            |v| v <= 1.0,
            (pin("d_idle_streams"), peer("haproxy", "d_idle_streams")),
            kib,
            Some(fmt_kib),
        ),
    ]
}

/// The targets of the pingora-floor issue: within reach of pingora's own
/// floor, short of the standing goals.
pub fn issue_targets(rows: &Rows) -> Vec<Goal> {
    let pin = |w| rows.get("pinroute", w);
    let hap = |w| rows.get("haproxy", w);
    let d = pin("d_idle_streams");
    let d_value = d.and_then(kib);
    let mut d_caveat = caveat(&[d]);
    if let Some(open) = d.and_then(|r| r.streams_open).filter(|open| *open < STREAMS_TARGET) {
        let short = format!("only {open} streams were open, the target is stated at {STREAMS_TARGET}");
        d_caveat = Some(d_caveat.map_or(short.clone(), |c| format!("{c}; {short}")));
    }
    vec![
        ratio_goal("a. small GET req/s vs HAProxy", ">= 0.9x", |v| v >= 0.9, (pin("a_get"), hap("a_get")), rps, None),
        ratio_goal(
            "a. small GET p99 vs HAProxy",
            "<= 1.1x",
            |v| v <= 1.1,
            (pin("a_get"), hap("a_get")),
            p99,
            Some(fmt_us),
        ),
        ratio_goal(
            "a. CPU per request vs HAProxy",
            "<= 1.15x",
            |v| v <= 1.15,
            (pin("a_get"), hap("a_get")),
            cpu,
            Some(fmt_cpu),
        ),
        ratio_goal(
            "a2. new-client GET req/s vs HAProxy",
            ">= 0.85x",
            |v| v >= 0.85,
            (pin("a2_get_new_client"), hap("a2_get_new_client")),
            rps,
            None,
        ),
        ratio_goal(
            "c. 1 MiB uploads/s vs HAProxy",
            ">= 1.0x",
            |v| v >= 1.0,
            (pin("c_upload"), hap("c_upload")),
            rps,
            None,
        ),
        ratio_goal(
            "e. websocket round trips/s vs HAProxy",
            ">= 1.0x",
            |v| v >= 1.0,
            (pin("e_ws_echo"), hap("e_ws_echo")),
            rps,
            None,
        ),
        Goal {
            name: "d. RSS per idle stream (2,000 streams)",
            target: "<= 20 KiB",
            value: d_value,
            passes: |v| v <= 20.0,
            shown: fmt_opt(d_value, fmt_kib),
            caveat: d_caveat,
        },
        ratio_goal(
            "g. 1,000 backends + ids: req/s vs a",
            ">= 0.9x",
            |v| v >= 0.9,
            (pin("g_scale_get"), pin("a_get")),
            rps,
            Some(|v| format!("{v:.0}")),
        ),
        ratio_goal(
            "g. same, CPU per request vs a",
            "<= 1.1x",
            |v| v <= 1.1,
            (pin("g_scale_get"), pin("a_get")),
            cpu,
            Some(fmt_cpu),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(contender: &str, round: u64, rps: f64) -> Row {
        Row {
            contender: contender.into(),
            workload: "a_get".into(),
            round: Some(round),
            req_per_s: Some(rps),
            ..Row::default()
        }
    }

    #[test]
    fn ratio_goal_shows_each_rounds_pair_and_keeps_the_ratio_of_medians() {
        let pin = crate::rounds::merge(vec![round("p", 1, 10.0), round("p", 2, 30.0), round("p", 3, 20.0)]);
        // HAProxy's round 2 is missing: only rounds 1 and 3 pair.
        let hap = crate::rounds::merge(vec![round("h", 1, 20.0), round("h", 3, 10.0)]);
        let goal = ratio_goal("g", ">= 1.0x", |v| v >= 1.0, (Some(&pin[0]), Some(&hap[0])), rps, None);
        assert_eq!(goal.value, Some(20.0 / 15.0));
        assert_eq!(goal.shown, "1.33x; per round 0.50 / 2.00 (median 1.25x)");
        assert_eq!(goal.status(), "PASS");
    }

    #[test]
    fn one_round_shows_no_per_round_line() {
        let pin = crate::rounds::merge(vec![round("p", 1, 10.0)]);
        let hap = crate::rounds::merge(vec![round("h", 1, 20.0)]);
        let goal = ratio_goal("g", ">= 1.0x", |v| v >= 1.0, (Some(&pin[0]), Some(&hap[0])), rps, None);
        assert_eq!(goal.shown, "0.50x");
        assert_eq!(goal.status(), "MISS");
    }
}
