//! SVG charts drawn with plotters: latency against offered rate, the connect-latency
//! histogram on a log scale, and accept-queue depth over time against the backlog.

use plotters::prelude::*;

use crate::watch::QueuePoint;

const W: u32 = 860;
const H: u32 = 420;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A microsecond value as a short label: 250 us, 1.5 ms, 2 s.
pub fn fmt_us(v: &f64) -> String {
    let v = *v;
    if v >= 1e6 {
        format!("{} s", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{} ms", trim(v / 1e3))
    } else {
        format!("{} us", trim(v))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

fn fmt_count(v: &f64) -> String {
    trim(*v)
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("chart: {e}"))
}

/// One line of a latency-vs-rate chart.
///
/// ```
/// use synack_load::report::charts::{Series, latency_vs_rate};
///
/// let p99 = Series {
///     label: "p99".into(),
///     points: vec![(1000.0, 180.0), (2000.0, 240.0), (5000.0, 1900.0)],
/// };
/// let svg = latency_vs_rate("connect p99 against offered rate", &[p99])?;
/// assert!(svg.starts_with("<svg"));
/// assert_eq!(svg.matches("<circle").count(), 3); // a mark at each point
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Series {
    /// The legend.
    pub label: String,
    /// `(offered rate per second, latency us)`.
    pub points: Vec<(f64, f64)>,
}

/// Latency (log scale) against offered rate, one line per series.
pub fn latency_vs_rate(title: &str, series: &[Series]) -> std::io::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let xmax = xs.fold(1.0f64, f64::max) * 1.05;
        let ymax = ys.fold(10.0f64, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (1f64..ymax).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered rate (connections/s)")
            .y_desc("latency (log)")
            .x_label_formatter(&fmt_count)
            .y_label_formatter(&fmt_us)
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(x, y)| (x, y.max(1.0))),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y.max(1.0)), 3, c.filled())),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Connect-latency histogram: log-scale latency, log-scale count. Vertical marks at 1 s, 2 s,
/// 3 s, where SYN retransmissions put connections.
pub fn connect_histogram(title: &str, buckets: &[(u64, u64)]) -> std::io::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xmax = buckets
            .iter()
            .map(|b| b.0)
            .max()
            .unwrap_or(10)
            .max(4_000_000) as f64
            * 1.3;
        let ymax = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 2.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..xmax).log_scale(), (0.8f64..ymax).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("connect latency (log)")
            .y_desc("connections (log)")
            .x_label_formatter(&fmt_us)
            .y_label_formatter(&fmt_count)
            .draw()
            .map_err(err)?;
        for s in 1..=3 {
            let x = s as f64 * 1e6;
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.8), (x, ymax)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))
                .map_err(err)?;
        }
        chart
            .draw_series(buckets.iter().map(|&(upper, n)| {
                // Each bucket spans (upper / 1.25, upper]: see `log_buckets`.
                let hi = upper.max(1) as f64;
                Rectangle::new([(hi / 1.25, 0.8), (hi, n as f64)], COLORS[0].filled())
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Accept-queue depth over time, with the effective backlog as a line.
pub fn queue_over_time(title: &str, points: &[QueuePoint]) -> std::io::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let tmax = points.iter().map(|p| p.t_ms).fold(1.0, f64::max);
        let ymax = points
            .iter()
            .map(|p| p.len.max(p.backlog))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..tmax, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (ms)")
            .y_desc("connections in the accept queue")
            .x_label_formatter(&fmt_count)
            .y_label_formatter(&fmt_count)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_ms, p.backlog as f64)),
                COLORS[3].stroke_width(2),
            ))
            .map_err(err)?
            .label("effective backlog")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], COLORS[3].stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_ms, p.len as f64)),
                COLORS[0].stroke_width(1),
            ))
            .map_err(err)?
            .label("queue depth")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], COLORS[0].stroke_width(2))
            });
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Attempts per second by how they ended, stacked (`ok` at the bottom), one bar per second
/// of the run: a restart or an overload shows as the second it happened in.
///
/// ```
/// use std::collections::BTreeMap;
/// use synack_load::report::SecondOutcomes;
/// use synack_load::report::charts::outcomes_over_time;
///
/// let row = |second, ok, reset| SecondOutcomes {
///     second,
///     started: ok + reset,
///     outcomes: BTreeMap::from([("ok".to_string(), ok), ("reset".to_string(), reset)]),
/// };
/// let svg = outcomes_over_time("outcomes", &[row(0, 100, 0), row(1, 90, 10)])?;
/// assert!(svg.starts_with("<svg"));
/// assert!(svg.contains("reset"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn outcomes_over_time(
    title: &str,
    rows: &[crate::report::SecondOutcomes],
) -> std::io::Result<String> {
    use crate::outcome::Outcome;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xmax = rows.iter().map(|r| r.second + 1).max().unwrap_or(1) as f64;
        let ymax = rows.iter().map(|r| r.started).max().unwrap_or(1).max(1) as f64 * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run (attempts by the second they started)")
            .y_desc("attempts")
            .x_label_formatter(&fmt_count)
            .y_label_formatter(&fmt_count)
            .draw()
            .map_err(err)?;
        // The classes present, in the order Outcome lists them (ok first).
        let classes: Vec<&str> = Outcome::ALL
            .iter()
            .map(|o| o.name())
            .filter(|n| rows.iter().any(|r| r.count(n) > 0))
            .collect();
        for (ci, class) in classes.iter().enumerate() {
            let color = COLORS[ci % COLORS.len()];
            let bars = rows.iter().map(|r| {
                let below: u64 = classes[..ci].iter().map(|c| r.count(c)).sum();
                let x = r.second as f64;
                let y0 = below as f64;
                let y1 = (below + r.count(class)) as f64;
                Rectangle::new([(x + 0.1, y0), (x + 0.9, y1)], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(*class)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
