//! Small statistics helpers over durations.

use std::time::Duration;

/// The median (upper median for an even count); zero for no samples.
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// The `p`th percentile by nearest rank; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let s: Vec<Duration> = [5u64, 1, 3, 2, 4].iter().map(|m| Duration::from_millis(*m)).collect();
        assert_eq!(median(&s), Duration::from_millis(3));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(5));
        assert_eq!(percentile(&s, 1.0), Duration::from_millis(1));
        assert_eq!(median(&[]), Duration::ZERO);
    }
}
