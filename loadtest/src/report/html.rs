//! `--report DIR`: a self-contained `report.html` (inline SVG, no network fetch at view time),
//! written as well-formed XHTML.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::FloodReport;
use super::charts::{self, Series};

/// Escapes text for XHTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page under construction.
///
/// ```
/// use synack_load::report::html::Page;
///
/// let mut page = Page::new("synack-load flood 127.0.0.1:7878");
/// page.h2("connect latency");
/// page.p("p99 < 1 ms & no drops");
/// let dir = std::env::temp_dir().join(format!("synack-load-doc-{}", std::process::id()));
/// let html = std::fs::read_to_string(page.write(&dir, "flood")?)?;
/// // Text is escaped: the page is well-formed XHTML.
/// assert!(html.contains("<p>p99 &lt; 1 ms &amp; no drops</p>"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Page {
    body: String,
}

impl Page {
    /// A page with a title.
    ///
    /// ```
    /// use synack_load::report::html::Page;
    ///
    /// let page = Page::new("sweep <127.0.0.1:7878>");
    /// let dir = std::env::temp_dir().join(format!("synack-load-doc-{}-t", std::process::id()));
    /// let html = std::fs::read_to_string(page.write(&dir, "sweep")?)?;
    /// // The title heads the body; `write`'s title is the document's.
    /// assert!(html.contains("<title>sweep</title>"));
    /// assert!(html.contains("<h1>sweep &lt;127.0.0.1:7878&gt;</h1>"));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(title: &str) -> Self {
        let mut body = String::new();
        let _ = writeln!(body, "<h1>{}</h1>", esc(title));
        Page { body }
    }

    /// A section heading.
    pub fn h2(&mut self, t: &str) {
        let _ = writeln!(self.body, "<h2>{}</h2>", esc(t));
    }

    /// A paragraph.
    pub fn p(&mut self, t: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", esc(t));
    }

    /// Preformatted text (a table as printed).
    pub fn pre(&mut self, t: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", esc(t));
    }

    /// An inline SVG chart.
    pub fn svg(&mut self, svg: &str) {
        // plotters writes an XML declaration-free <svg> element: inline it as it is.
        let _ = writeln!(self.body, "<div class=\"chart\">{svg}</div>");
    }

    /// Writes DIR/report.html; returns its path.
    pub fn write(&self, dir: &Path, title: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("report.html");
        let html = format!(
            "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n\
             <meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>\n\
             body {{ font-family: sans-serif; margin: 2em; max-width: 960px; color: #222; }}\n\
             pre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; font-size: 12px; }}\n\
             .chart {{ margin: 1em 0; }}\n</style>\n</head>\n<body>\n{}</body>\n</html>\n",
            esc(title),
            self.body
        );
        std::fs::write(&path, html)?;
        Ok(path)
    }
}

/// Adds a flood's charts (connect histogram; queue over time when watched) to a page.
pub fn flood_charts(page: &mut Page, rep: &FloodReport) -> std::io::Result<()> {
    if !rep.connect_buckets.is_empty() {
        page.svg(&charts::connect_histogram(
            "connect latency (SYN retransmissions land near 1 s, 2 s, 3 s)",
            &rep.connect_buckets,
        )?);
    }
    if rep.per_second.len() > 1 {
        page.svg(&charts::outcomes_over_time(
            "attempts per second by how they ended (what clients saw, second by second)",
            &rep.per_second,
        )?);
    }
    if let Some(q) = &rep.listener_queue
        && !q.series.is_empty()
    {
        page.svg(&charts::queue_over_time(
            "accept-queue depth (inet_diag) against the effective backlog",
            &q.series,
        )?);
    }
    Ok(())
}

/// `flood --report DIR`.
pub fn write_flood(dir: &Path, rep: &FloodReport) -> std::io::Result<PathBuf> {
    let title = format!("synack-load flood {}", rep.target);
    let mut page = Page::new(&title);
    page.pre(&super::table::render(rep));
    flood_charts(&mut page, rep)?;
    if let (Some(p), Some(off)) = (rep.latency(super::Latency::Connect), rep.offered_rate) {
        page.svg(&charts::latency_vs_rate(
            "connect latency at the offered rate",
            &[
                Series {
                    label: "p50".into(),
                    points: vec![(off, p.p50 as f64)],
                },
                Series {
                    label: "p99".into(),
                    points: vec![(off, p.p99 as f64)],
                },
            ],
        )?);
    }
    page.write(dir, &title)
}
