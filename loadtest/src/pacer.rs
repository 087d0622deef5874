//! The open loop's schedule, in the shape of vegeta's `Pacer`: when each attempt of a run is
//! due, from the start, and whether it belongs to a burst. Each pacer's maths is written out
//! with it and tested on its own; the closed loop needs none (it starts as attempts end).

use std::time::Duration;

/// When attempt `i` (0-based, over all threads) of an open loop is due.
///
/// ```
/// use std::time::Duration;
/// use synack_load::pacer::Pacer;
///
/// // 1,000 a second plus bursts of 200 at each second, over 1.5 s: two bursts.
/// let p = Pacer::new(1000.0, 1000.0, 200, Duration::from_millis(1500));
/// assert!(p.due(0).unwrap().burst);
/// assert_eq!(p.due(200).unwrap().at, Duration::ZERO); // the first steady attempt
/// assert_eq!((0..).map_while(|i| p.due(i)).count(), 1500 + 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacer {
    /// `rate` per second, evenly spaced: attempt `i` at `i / rate`.
    Constant {
        /// Attempts per second.
        rate: f64,
        /// The schedule's length.
        duration: Duration,
    },
    /// A rate rising (or falling) linearly from `from` to `to` per second over `duration`.
    Ramp {
        /// Attempts per second at the start.
        from: f64,
        /// Attempts per second at the end.
        to: f64,
        /// The schedule's length.
        duration: Duration,
    },
    /// `burst` attempts at once at every whole second, and `rate` per second evenly spaced
    /// besides (fractional rates kept: 0.4/s is one attempt every 2.5 s).
    Bursts {
        /// Steady attempts per second.
        rate: f64,
        /// Attempts at the start of every second.
        burst: u64,
        /// The schedule's length.
        duration: Duration,
    },
}

/// One attempt's place in the schedule.
///
/// ```
/// use std::time::Duration;
/// use synack_load::pacer::{Due, Pacer};
///
/// // 10 a second, plus 5 at once at the start of every second, for 10 s.
/// let p = Pacer::new(10.0, 10.0, 5, Duration::from_secs(10));
/// assert_eq!(p.due(4), Some(Due { at: Duration::ZERO, burst: true }));
/// assert_eq!(p.due(6), Some(Due { at: Duration::from_millis(100), burst: false }));
/// assert_eq!(p.due(150), None); // 10 x (5 + 10) attempts in all
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    /// From the start.
    pub at: Duration,
    /// One of a second's burst.
    pub burst: bool,
}

impl Pacer {
    /// The pacer of an open loop from `from` to `to` per second, with `burst` each second
    /// (bursts go with a constant rate only).
    pub fn new(from: f64, to: f64, burst: u64, duration: Duration) -> Self {
        if burst > 0 {
            Pacer::Bursts {
                rate: from,
                burst,
                duration,
            }
        } else if (to - from).abs() < f64::EPSILON {
            Pacer::Constant {
                rate: from,
                duration,
            }
        } else {
            Pacer::Ramp { from, to, duration }
        }
    }

    /// When attempt `i` is due; `None` past the schedule's end.
    pub fn due(&self, i: u64) -> Option<Due> {
        let (t, burst, d) = match *self {
            Pacer::Constant { rate, duration } => (i as f64 / rate, false, duration),
            Pacer::Ramp { from, to, duration } => {
                // Attempts started by time t: N(t) = from*t + (to-from)*t^2/(2d). Solve N(t) = i.
                let d = duration.as_secs_f64();
                let k = (to - from) / d;
                let i = i as f64;
                (
                    (-from + (from * from + 2.0 * k * i).sqrt()) / k,
                    false,
                    duration,
                )
            }
            Pacer::Bursts {
                rate,
                burst,
                duration,
            } => {
                // Every whole second k: `burst` attempts at k; besides, the steady attempts n
                // at n / rate. Before second k come C(k) = k * burst + ceil(k * rate).
                let before = |k: u64| k * burst + (k as f64 * rate).ceil() as u64;
                let mut k = (i as f64 / (burst as f64 + rate)) as u64;
                while k > 0 && before(k) > i {
                    k -= 1;
                }
                while before(k + 1) <= i {
                    k += 1;
                }
                let j = i - before(k);
                let t = if j < burst {
                    k as f64
                } else {
                    ((k as f64 * rate).ceil() + (j - burst) as f64) / rate
                };
                (t, j < burst, duration)
            }
        };
        (t < d.as_secs_f64()).then(|| Due {
            at: Duration::from_secs_f64(t),
            burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    fn at(p: &Pacer, i: u64) -> Option<Duration> {
        p.due(i).map(|d| d.at)
    }

    #[test]
    fn constant_rate() {
        let p = Pacer::new(100.0, 100.0, 0, TEN);
        assert!(matches!(p, Pacer::Constant { .. }));
        assert_eq!(at(&p, 0), Some(Duration::ZERO));
        assert_eq!(at(&p, 50), Some(Duration::from_millis(500)));
        assert_eq!(at(&p, 999).map(|d| d.as_millis()), Some(9990));
        assert_eq!(at(&p, 1000), None);
    }

    #[test]
    fn a_ramp_covers_the_mean_rate() {
        // 0 -> 200/s over 10 s: 1000 attempts in all, half of them in the last 2.93 s.
        let p = Pacer::new(0.0, 200.0, 0, TEN);
        assert!(at(&p, 999).is_some());
        assert_eq!(at(&p, 1000), None);
        let mid = at(&p, 500).unwrap().as_secs_f64();
        assert!((mid - 7.07).abs() < 0.01, "{mid}");
    }

    #[test]
    fn bursts_start_together_each_second() {
        let p = Pacer::new(10.0, 10.0, 5, TEN);
        for i in 0..5 {
            assert_eq!(
                p.due(i),
                Some(Due {
                    at: Duration::ZERO,
                    burst: true
                })
            );
        }
        assert_eq!(
            p.due(6),
            Some(Due {
                at: Duration::from_millis(100),
                burst: false
            })
        );
        for i in 15..20 {
            assert_eq!(at(&p, i), Some(Duration::from_secs(1)));
        }
        assert_eq!(at(&p, 150), None);
    }

    #[test]
    fn fractional_rates_with_bursts_are_kept() {
        // 0.4/s steady plus 2 each second over 10 s: 20 burst attempts and 4 steady ones.
        let p = Pacer::new(0.4, 0.4, 2, TEN);
        let all: Vec<Due> = (0..).map_while(|i| p.due(i)).collect();
        assert_eq!(all.len(), 24);
        assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
        let steady: Vec<f64> = all
            .iter()
            .filter(|d| !d.burst)
            .map(|d| d.at.as_secs_f64())
            .collect();
        assert_eq!(steady, vec![0.0, 2.5, 5.0, 7.5]);
        // 1.5/s: no rounding to 2.
        let q = Pacer::new(1.5, 1.5, 1, TEN);
        assert_eq!((0..).map_while(|i| q.due(i)).count(), 10 + 15);
    }
}
