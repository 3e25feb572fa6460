//! `--compare DIR`: the side-by-side summary of scripts/compare-janus.sh's runs. DIR holds
//! `choir-<i>/loadgen.csv` and `janus-<i>/loadgen.csv` for pairs i = 1, 2, ...; per load step it
//! prints each server's forwarded packets/s, CPU % of its core, CPU µs per 1,000 forwarded
//! packets, p50/p99 and loss as the median over pairs (min–max), and the ratio choir/Janus of each
//! pair's values as min/median/max; then each one's capacity (its last step with loss ≤ 0.1 % and
//! p99 ≤ 10 ms). Writes `DIR/compare.csv` and `DIR/compare.svg` (pair 1, both servers).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::{self, Row};

/// Reads one compared value from a row.
type Metric = fn(&Row) -> f64;

/// The values compared, named.
const METRICS: [(&str, Metric); 6] = [
    ("fwd/s", |r| r.forwarded_pps),
    ("cpu%", |r| r.server_cpu_pct),
    ("cpuµs/1k", cpu_us_per_1000),
    ("p50µs", |r| r.latency_us[0]),
    ("p99µs", |r| r.latency_us[2]),
    ("loss%", |r| r.loss_pct),
];

/// CPU time of the server per 1,000 forwarded packets, µs.
fn cpu_us_per_1000(r: &Row) -> f64 {
    r.server_cpu_pct / 100.0 * 1e6 / r.forwarded_pps.max(1.0) * 1000.0
}

/// Capacity: a step with loss ≤ 0.1 % and p99 ≤ 10 ms (the generator's defaults).
fn good(r: &Row) -> bool {
    r.loss_pct <= 0.1 && r.latency_us[2] <= 10_000.0
}

/// (min, median, max) of `v`; NaN for all three when it is empty.
fn min_median_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n => {
            let median = if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            };
            (s[0], median, s[n - 1])
        }
    }
}

/// "median (min–max)" of `v`.
fn spread(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let (lo, m, hi) = min_median_max(v);
    format!("{} ({}–{})", num(m), num(lo), num(hi))
}

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// min/median/max of the pairwise ratios.
fn ratios(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let (lo, m, hi) = min_median_max(v);
    format!("{lo:.2}/{m:.2}/{hi:.2}")
}

/// Reads DIR/<target>-<i>/loadgen.csv for i = 1.. until one is missing.
fn runs(dir: &Path, target: &str) -> Vec<Vec<Row>> {
    (1..)
        .map(|i| dir.join(format!("{target}-{i}")).join("loadgen.csv"))
        .map_while(|p| report::read_csv(&p).ok())
        .collect()
}

pub fn summarize(dir: &Path) -> Result<(), String> {
    let choir = runs(dir, "choir");
    let janus = runs(dir, "janus");
    let pairs = choir.len().min(janus.len());
    if pairs == 0 {
        return Err(format!(
            "{}: no choir-1/ and janus-1/ results",
            dir.display()
        ));
    }
    let steps: BTreeSet<usize> = choir[..pairs]
        .iter()
        .chain(&janus[..pairs])
        .flatten()
        .map(|r| r.streams)
        .collect();
    let at = |runs: &[Vec<Row>], i: usize, streams: usize| {
        runs[i].iter().find(|r| r.streams == streams).cloned()
    };
    let mut out = String::new();
    let mut csv =
        String::from("streams,metric,choir_median,janus_median,ratio_min,ratio_median,ratio_max\n");
    let _ = writeln!(
        out,
        "choir vs Janus, {pairs} pairs (A B A B), same core, same load; median (min–max) over pairs; ratio choir/Janus min/median/max"
    );
    for &streams in &steps {
        let _ = writeln!(out, "\nstep {streams} consumer streams");
        let _ = writeln!(
            out,
            "  {:<9} {:>26} {:>26} {:>18}",
            "", "choir", "janus", "ratio choir/janus"
        );
        for (name, f) in METRICS {
            let mut c = Vec::new();
            let mut j = Vec::new();
            let mut r = Vec::new();
            for i in 0..pairs {
                let a = at(&choir, i, streams).map(|x| f(&x));
                let b = at(&janus, i, streams).map(|x| f(&x));
                c.extend(a);
                j.extend(b);
                if let (Some(a), Some(b)) = (a, b) {
                    if b != 0.0 && a.is_finite() && b.is_finite() {
                        r.push(a / b);
                    }
                }
            }
            let _ = writeln!(
                out,
                "  {:<9} {:>26} {:>26} {:>18}",
                name,
                spread(&c),
                spread(&j),
                ratios(&r)
            );
            let (r_min, r_median, r_max) = min_median_max(&r);
            let _ = writeln!(
                csv,
                "{streams},{name},{:.3},{:.3},{r_min:.3},{r_median:.3},{r_max:.3}",
                min_median_max(&c).1,
                min_median_max(&j).1,
            );
        }
    }
    // Capacity: each run's last good step (its forwarded packets/s and CPU cost there).
    let capacity = |rows: &[Row]| {
        rows.iter()
            .filter(|r| good(r))
            .max_by_key(|r| r.streams)
            .cloned()
    };
    let _ = writeln!(
        out,
        "\ncapacity (last step with loss ≤ 0.1 % and p99 ≤ 10 ms), per pair:"
    );
    let mut cr = Vec::new();
    for i in 0..pairs {
        let (c, j) = (capacity(&choir[i]), capacity(&janus[i]));
        let show = |r: &Option<Row>| match r {
            Some(r) => format!(
                "{} streams, {:.0} fwd/s, {:.1} µs CPU per 1,000",
                r.streams,
                r.forwarded_pps,
                cpu_us_per_1000(r)
            ),
            None => "no step passed".into(),
        };
        let _ = writeln!(
            out,
            "  pair {}: choir {}; janus {}",
            i + 1,
            show(&c),
            show(&j)
        );
        if let (Some(c), Some(j)) = (c, j) {
            cr.push(c.forwarded_pps / j.forwarded_pps);
        }
    }
    let _ = writeln!(
        out,
        "  capacity ratio choir/janus (min/median/max): {}",
        ratios(&cr)
    );
    print!("{out}");
    std::fs::write(dir.join("compare.txt"), &out).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("compare.csv"), csv).map_err(|e| e.to_string())?;
    let mut first: Vec<Row> = choir[0].clone();
    first.extend(janus[0].iter().cloned());
    report::plot(
        &first,
        &dir.join("compare.svg"),
        "choir vs Janus 1.1.2, one core each (pair 1)",
    )
}
