//! Percentiles and medians.

/// Percentile with linear interpolation (numpy's default); NaN for an empty sample.
pub fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let k = (s.len() - 1) as f64 * p / 100.0;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    s[lo] + (s[hi] - s[lo]) * (k - lo as f64)
}

/// Median (the 50th percentile).
pub fn median(xs: &[f64]) -> f64 {
    pct(xs, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(pct(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(pct(&[1.0, 2.0], 50.0), 1.5);
        assert_eq!(pct(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert!(pct(&[], 50.0).is_nan());
    }
}
