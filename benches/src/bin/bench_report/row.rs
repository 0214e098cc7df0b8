//! One raw record (contender × workload) reduced to the numbers of the
//! table, and the formatting of those numbers.

use serde_json::Value;

/// One contender × workload, reduced to the numbers of the table.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub contender: String,
    pub workload: String,
    pub title: String,
    pub skipped: Option<String>,
    pub error: Option<String>,
    pub note: Option<String>,
    pub requests: Option<f64>,
    pub req_per_s: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Transport errors: connect/read/write/timeouts, failed streams or frames.
    pub errors: u64,
    /// Responses with status ≥ 400 (wrk counts these as "status" errors).
    pub non_2xx: u64,
    pub cpu_us_per_req: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_kib: Option<f64>,
    pub upload_mb_per_s: Option<f64>,
    pub kib_per_stream: Option<f64>,
    pub streams_open: Option<u64>,
    /// Scale workload: request ids the contender was taught, and how many
    /// the workload asks for (fewer when the proxy's table holds fewer).
    pub ids_learned: Option<u64>,
    pub ids_wanted: Option<u64>,
    /// Machine busy % (both cores) just before the workload started.
    pub quiet_busy_pct: Option<f64>,
    /// CPU (% of one core, all cores summed) used by processes outside the
    /// harness during the workload.
    pub foreign_cpu_pct: Option<f64>,
    /// How many times the workload ran (noisy attempts are repeated).
    pub attempts: Option<u64>,
    /// Foreign CPU of each attempt, as the harness wrote it.
    pub attempts_foreign: Option<String>,
    /// The interleaved round this record was measured in (1-based).
    pub round: Option<u64>,
    /// A merged row's rounds, each as its own row (empty for one round):
    /// goals pair them with another contender's row of the same round.
    pub rounds: Vec<Row>,
    pub raw: Value,
}

/// Past these, a row's numbers are marked as measured on a busy machine.
pub const NOISY_FOREIGN_PCT: f64 = 5.0;
pub const NOISY_BUSY_PCT: f64 = 15.0;

impl Row {
    /// Memory rows (idle streams) do not depend on CPU share.
    pub fn noisy(&self) -> bool {
        self.kib_per_stream.is_none()
            && (self.foreign_cpu_pct.is_some_and(|f| f > NOISY_FOREIGN_PCT)
                || self.quiet_busy_pct.is_some_and(|b| b > NOISY_BUSY_PCT))
    }

    /// req/s of each interleaved round (empty for one round).
    pub fn round_rates(&self) -> Vec<Option<f64>> {
        self.rounds.iter().map(|r| r.req_per_s).collect()
    }

    /// A row with numbers (not skipped).
    pub fn measured(&self) -> bool {
        self.skipped.is_none()
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty())
}

pub fn row_of(record: &Value) -> Row {
    let mut row = Row {
        contender: text(record, "contender").unwrap_or_default(),
        workload: text(record, "workload").unwrap_or_default(),
        title: text(record, "title").unwrap_or_default(),
        skipped: text(record, "skipped"),
        error: text(record, "error"),
        note: text(record, "note"),
        rss_kib: num(record, "rss_kib"),
        ids_learned: num(record, "ids_learned").map(|v| v as u64),
        ids_wanted: num(record, "ids_wanted").map(|v| v as u64),
        quiet_busy_pct: num(record, "quiet_busy_pct"),
        foreign_cpu_pct: num(record, "foreign_cpu_pct"),
        attempts: num(record, "attempts").map(|a| a as u64),
        attempts_foreign: text(record, "attempts_foreign"),
        round: num(record, "round").map(|r| r as u64),
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

pub fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

pub fn fmt_x(v: f64) -> String {
    format!("{v:.2}x")
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}
