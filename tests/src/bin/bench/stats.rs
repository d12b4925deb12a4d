//! Statistics of the measured samples: median, nearest-rank percentiles, same-run ratios.
//!
//! Percentiles are nearest rank (the 99th percentile of 100 values is the 99th smallest, of
//! 1,000 values the 990th), as the bash bench computed them, so figures stay comparable with the
//! ones recorded in docs/benchmarks.md.

use serde::Serialize;

/// The median: the middle value, or the mean of the two middle values of an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The nearest-rank `pct`th percentile: the `ceil(n * pct / 100)`th smallest value (at least
/// the first). Integer arithmetic, so that 99 % of 100 is exactly the 99th.
pub fn percentile(values: &[f64], pct: u32) -> Option<f64> {
    let v = sorted(values);
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let k = (n * pct as usize).div_ceil(100).clamp(1, n);
    Some(v[k - 1])
}

/// The arithmetic mean.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Count, median, p90, p99, min and max of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let v = sorted(values);
        Some(Summary {
            n: v.len(),
            median: median(&v)?,
            p90: percentile(&v, 90)?,
            p99: percentile(&v, 99)?,
            min: *v.first()?,
            max: *v.last()?,
        })
    }
}

/// `a / b`, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// `a - b`, when both are known.
pub fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// A figure with `decimals` decimals, or `n/a`.
pub fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".to_string(),
    }
}

/// A figure with a unit (`12 µs`), or `n/a`.
pub fn fmt_unit(v: Option<f64>, decimals: usize, unit: &str) -> String {
    match v {
        Some(_) => format!("{} {unit}", fmt(v, decimals)),
        None => "n/a".to_string(),
    }
}

/// "yes" when `v` is known and `ok(v)`, "no" when known and not, "n/a" when unknown: targets
/// are printed for information, never turned into the exit status.
pub fn met(v: Option<f64>, ok: impl Fn(f64) -> bool) -> &'static str {
    match v {
        Some(v) if ok(v) => "yes",
        Some(_) => "no",
        None => "n/a",
    }
}

/// `met` as JSON: true, false or null.
pub fn met_json(v: Option<f64>, ok: impl Fn(f64) -> bool) -> Option<bool> {
    v.map(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99), Some(99.0));
        assert_eq!(percentile(&v, 90), Some(90.0));
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 99), Some(990.0));
        // Few values: the largest for p99, never an index before the first.
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 99), Some(5.0));
        assert_eq!(percentile(&[5.0], 1), Some(5.0));
        assert_eq!(percentile(&[], 50), None);
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99), Some(198.0));
    }

    #[test]
    fn summary_ignores_order_and_nan() {
        let s = Summary::of(&[3.0, f64::NAN, 1.0, 2.0]).expect("summary");
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratios_and_formatting() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(diff(Some(3.0), Some(5.0)), Some(-2.0));
        assert_eq!(fmt(Some(1.23456), 3), "1.235");
        assert_eq!(fmt(None, 3), "n/a");
        assert_eq!(fmt_unit(Some(12.4), 0, "µs"), "12 µs");
        assert_eq!(met(Some(0.4), |v| v < 1.0), "yes");
        assert_eq!(met(Some(2.0), |v| v < 1.0), "no");
        assert_eq!(met(None, |v| v < 1.0), "n/a");
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
    }
}
