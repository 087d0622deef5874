//! A flood's plan: the target, the load model, the bounds, what each connection does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How attempts are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: attempts start on a fixed schedule, `from` per second rising linearly to
    /// `to` per second over the duration (`from == to` for a constant rate). Latency is also
    /// measured from each attempt's scheduled start (no coordinated omission).
    Open {
        /// Rate at the start, attempts per second.
        from: f64,
        /// Rate at the end, attempts per second.
        to: f64,
        /// Extra attempts started all at once at the start of every second (constant rate only).
        burst: u64,
    },
    /// Closed loop: keep this many attempts in flight.
    Closed {
        /// Attempts in flight.
        concurrency: usize,
    },
}

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseMode {
    /// `SO_LINGER` 0: an RST, no `TIME_WAIT` on the generator.
    Rst,
    /// An orderly FIN.
    Fin,
}

/// Everything a flood needs to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The address as the user wrote it.
    pub target_text: String,
    /// The resolved address.
    pub target: SocketAddr,
    /// Open or closed loop.
    pub load: Load,
    /// Stop starting attempts after this long.
    pub duration: Duration,
    /// Stop after this many attempts.
    pub connections: Option<u64>,
    /// Bytes to send once connected.
    pub send: usize,
    /// Bytes to read (or until the peer closes) once connected.
    pub read: Option<usize>,
    /// How long to wait for the first byte before counting the connection unserved.
    pub read_timeout: Duration,
    /// Keep each connection open this long before closing it.
    pub hold: Option<Duration>,
    /// RST or FIN.
    pub close: CloseMode,
    /// With [`CloseMode::Rst`]: end each connection with [`synack::sys::disconnect`] and
    /// keep its socket for a later attempt (no socket(), close() and epoll registration per
    /// connection) where the OS allows it. FIN closes always use a new socket.
    pub reuse_sockets: bool,
    /// Generator threads, each its own event loop.
    pub threads: usize,
    /// Source addresses to spread connections over (empty: the kernel picks).
    pub sources: Vec<IpAddr>,
    /// An attempt not established after this long is a timeout.
    pub connect_timeout: Duration,
    /// Read the synack probe header first and split each connection at the server's accept.
    pub probe: bool,
}

impl Plan {
    /// Whether the engine reuses sockets: asked for, RST closes, and the OS can disconnect.
    pub fn uses_socket_reuse(&self) -> bool {
        self.reuse_sockets && self.close == CloseMode::Rst && synack::sys::CAN_DISCONNECT
    }

    /// When attempt `i` (0-based, over all threads) is scheduled, as an offset from the start;
    /// `None` when it falls past the duration or the connection bound. Open loop only.
    pub fn scheduled(&self, i: u64) -> Option<Duration> {
        if self.connections.is_some_and(|n| i >= n) {
            return None;
        }
        let Load::Open { from, to, burst } = self.load else {
            return None;
        };
        let d = self.duration.as_secs_f64();
        if burst > 0 {
            // Every second: `burst` attempts at its start, then `from` spread over it.
            let per_sec = burst + from.round().max(1.0) as u64;
            let (k, j) = (i / per_sec, i % per_sec);
            let t = if j < burst {
                k as f64
            } else {
                k as f64 + (j - burst) as f64 / from.round().max(1.0)
            };
            return (t < d).then(|| Duration::from_secs_f64(t));
        }
        let i = i as f64;
        // Attempts started by time t: N(t) = from*t + (to-from)*t^2/(2d). Solve N(t) = i.
        let t = if (to - from).abs() < f64::EPSILON {
            i / from
        } else {
            let k = (to - from) / d;
            (-from + (from * from + 2.0 * k * i).sqrt()) / k
        };
        (t < d).then(|| Duration::from_secs_f64(t))
    }

    /// The mean offered rate over the run (open loop).
    pub fn offered_rate(&self) -> Option<f64> {
        match self.load {
            Load::Open { from, to, burst } => Some((from + to) / 2.0 + burst as f64),
            Load::Closed { .. } => None,
        }
    }

    /// The longest an attempt can last once started: the bound on the run's tail.
    pub fn attempt_budget(&self) -> Duration {
        let mut b = self.connect_timeout;
        if self.read.is_some() || self.probe {
            b += self.read_timeout;
        }
        b + self.hold.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(load: Load) -> Plan {
        Plan {
            target_text: "x".into(),
            target: "127.0.0.1:1".parse().unwrap(),
            load,
            duration: Duration::from_secs(10),
            connections: None,
            send: 0,
            read: None,
            read_timeout: Duration::from_secs(1),
            hold: None,
            close: CloseMode::Rst,
            reuse_sockets: true,
            threads: 1,
            sources: vec![],
            connect_timeout: Duration::from_secs(3),
            probe: false,
        }
    }

    #[test]
    fn constant_rate_schedule() {
        let p = plan(Load::Open {
            from: 100.0,
            to: 100.0,
            burst: 0,
        });
        assert_eq!(p.scheduled(0), Some(Duration::ZERO));
        assert_eq!(p.scheduled(50), Some(Duration::from_millis(500)));
        assert_eq!(p.scheduled(999).map(|d| d.as_millis()), Some(9990));
        assert_eq!(p.scheduled(1000), None);
    }

    #[test]
    fn ramp_schedule_covers_the_mean_rate() {
        let p = plan(Load::Open {
            from: 0.0,
            to: 200.0,
            burst: 0,
        });
        // 0 -> 200/s over 10 s: 1000 attempts in all, half of them in the last 2.93 s.
        assert!(p.scheduled(999).is_some());
        assert_eq!(p.scheduled(1000), None);
        let mid = p.scheduled(500).unwrap().as_secs_f64();
        assert!((mid - 7.07).abs() < 0.01, "{mid}");
    }

    #[test]
    fn bursts_start_together_each_second() {
        let p = plan(Load::Open {
            from: 10.0,
            to: 10.0,
            burst: 5,
        });
        for i in 0..5 {
            assert_eq!(p.scheduled(i), Some(Duration::ZERO));
        }
        assert_eq!(p.scheduled(6), Some(Duration::from_millis(100)));
        for i in 15..20 {
            assert_eq!(p.scheduled(i), Some(Duration::from_secs(1)));
        }
        assert_eq!(p.scheduled(150), None);
        assert_eq!(p.offered_rate(), Some(15.0));
    }

    #[test]
    fn connection_bound() {
        let mut p = plan(Load::Open {
            from: 100.0,
            to: 100.0,
            burst: 0,
        });
        p.connections = Some(3);
        assert!(p.scheduled(2).is_some());
        assert_eq!(p.scheduled(3), None);
    }
}
