//! Interleaved rounds: the harness runs every contender in turn, then does
//! it again, so slow drifts of this shared VM (another tenant's load for a
//! minute) land on all contenders alike instead of on whichever ran then.
//! Here each contender × workload's rounds become one row: the median of
//! each figure, the sums of requests and errors, the largest RSS.

use serde_json::Value;

use crate::row::Row;

/// The rows of each contender × workload merged, in the order first seen.
pub fn merge(rows: Vec<Row>) -> Vec<Row> {
    let mut groups: Vec<Vec<Row>> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|g| g[0].contender == r.contender && g[0].workload == r.workload) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.into_iter().map(merge_one).collect()
}

fn merge_one(mut rounds: Vec<Row>) -> Row {
    if rounds.len() == 1 {
        if let Some(only) = rounds.pop() {
            return only;
        }
    }
    let median_of = |f: fn(&Row) -> Option<f64>| median(rounds.iter().filter_map(f).collect());
    let mut merged = Row {
        requests: sum(rounds.iter().filter_map(|r| r.requests)),
        req_per_s: median_of(|r| r.req_per_s),
        p50_us: median_of(|r| r.p50_us),
        p99_us: median_of(|r| r.p99_us),
        cpu_us_per_req: median_of(|r| r.cpu_us_per_req),
        cpu_percent: median_of(|r| r.cpu_percent),
        upload_mb_per_s: median_of(|r| r.upload_mb_per_s),
        kib_per_stream: median_of(|r| r.kib_per_stream),
        quiet_busy_pct: median_of(|r| r.quiet_busy_pct),
        foreign_cpu_pct: median_of(|r| r.foreign_cpu_pct),
        rss_kib: rounds.iter().filter_map(|r| r.rss_kib).reduce(f64::max),
        errors: rounds.iter().map(|r| r.errors).sum(),
        non_2xx: rounds.iter().map(|r| r.non_2xx).sum(),
        attempts: Some(rounds.iter().map(|r| r.attempts.unwrap_or(1)).sum()),
        raw: Value::Array(rounds.iter().map(|r| r.raw.clone()).collect()),
        ..rounds[0].clone()
    };
    // A failure in any round is the row's: retries and rounds never hide one.
    merged.error = rounds.iter().find_map(|r| r.error.clone());
    merged.attempts_foreign = None;
    merged.round = None;
    merged.rounds = rounds;
    merged
}

fn sum(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.reduce(|a, b| a + b)
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(contender: &str, rps: f64, p99: f64, errors: u64) -> Row {
        Row {
            contender: contender.into(),
            workload: "a_get".into(),
            requests: Some(rps * 10.0),
            req_per_s: Some(rps),
            p99_us: Some(p99),
            errors,
            ..Row::default()
        }
    }

    #[test]
    fn rounds_merge_to_medians_and_sums() {
        let rows = vec![
            round("pinroute", 30.0, 900.0, 0),
            round("haproxy", 40.0, 800.0, 0),
            round("pinroute", 10.0, 100.0, 2),
            round("pinroute", 20.0, 500.0, 0),
        ];
        let merged = merge(rows);
        assert_eq!(merged.len(), 2);
        let p = &merged[0];
        assert_eq!(p.contender, "pinroute");
        assert_eq!(p.req_per_s, Some(20.0));
        assert_eq!(p.p99_us, Some(500.0));
        assert_eq!(p.requests, Some(600.0));
        assert_eq!(p.errors, 2);
        // Each round's rate comes from the rounds kept behind the merged row, in order.
        assert_eq!(p.round_rates(), vec![Some(30.0), Some(10.0), Some(20.0)]);
        assert_eq!(merged[1].req_per_s, Some(40.0));
        assert!(merged[1].round_rates().is_empty());
        assert!(merged[1].rounds.is_empty());
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
