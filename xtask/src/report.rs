//! The one table `cargo xtask bench` ends with: each suite's headline numbers, as min, median
//! and max over its repeated runs.

pub struct Row {
    pub what: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Row {
    pub fn new(what: impl Into<String>, unit: &'static str, samples: Vec<f64>) -> Self {
        Self { what: what.into(), unit, samples }
    }
}

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `of[i] / to[i]` for each round i.
pub fn ratios(of: &[f64], to: &[f64]) -> Vec<f64> {
    of.iter().zip(to).map(|(of, to)| of / to).collect()
}

pub fn print(rows: &[Row]) {
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0).max(10);
    println!(
        "\n{:<width$}  {:>10}  {:>10}  {:>10}  {:<10} runs",
        "measurement", "min", "median", "max", "unit"
    );
    for row in rows {
        let min = row.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:<10} {}",
            row.what,
            format_number(min),
            format_number(median(&row.samples)),
            format_number(max),
            row.unit,
            row.samples.len()
        );
    }
}

fn format_number(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn numbers_keep_three_significant_digits_or_so() {
        assert_eq!(format_number(172.46), "172");
        assert_eq!(format_number(24.34), "24.3");
        assert_eq!(format_number(0.4567), "0.457");
        assert_eq!(format_number(f64::INFINITY), "-");
    }
}
