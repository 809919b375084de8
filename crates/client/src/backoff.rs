//! Exponential backoff with jitter, for loops that keep retrying a server:
//! the agent's session, its registration and certificate renewal, the
//! benchmark's hollow agents. The jitter matters more than the curve: agents
//! cut off together (a leader change, a network blip) must not all come back
//! in the same instant.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::Rng;

/// The wait before each retry: `first`, doubling with every failure up to
/// `max`, each wait multiplied by a factor drawn from `jitter`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: RangeInclusive<f64>,
    failures: u32,
}

impl Backoff {
    /// `jitter` is the range of factors a step is multiplied by, e.g.
    /// `0.8..=1.2` for ±20%, or `0.5..=1.0` to stay at or below the step.
    pub fn new(first: Duration, max: Duration, jitter: RangeInclusive<f64>) -> Self {
        Self {
            first,
            max,
            jitter,
            failures: 0,
        }
    }

    /// The wait after one more failure.
    pub fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self
            .first
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(rng.gen_range(self.jitter.clone()))
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_start_over_after_reset() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(
            Duration::from_millis(250),
            Duration::from_secs(5),
            0.5..=1.0,
        );
        let mut step = Duration::from_millis(250);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let wait = backoff.next(&mut rng);
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
            waits.push(wait);
            step = (step * 2).min(Duration::from_secs(5));
        }
        assert_eq!(step, Duration::from_secs(5), "the cap was reached");
        assert!(
            waits
                .windows(2)
                .any(|w| w[0] != w[1] && w[0] >= Duration::from_millis(2500)),
            "waits at the cap are still jittered: {waits:?}"
        );

        backoff.reset();
        assert!(backoff.next(&mut rng) <= Duration::from_millis(250));

        // Symmetric jitter may go above the step.
        let mut wide = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.8..=1.2);
        let first = wide.next(&mut rng);
        assert!((800..=1200).contains(&first.as_millis()), "{first:?}");
    }
}
