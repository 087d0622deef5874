//! HdrHistogram interval logs (V2, compressed), one interval per second, readable by any
//! HdrHistogram tool; and merging several of them.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogHistogram, IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

use crate::record::latency_histogram;

/// The tag of connect-latency intervals.
pub const CONNECT_TAG: &str = "connect";

/// The tag of the intervals of `connect()` to the answer's end.
pub const RESPONSE_TAG: &str = "response";

/// The tag of the TLS-handshake intervals (`--tls`: established to the handshake done).
pub const TLS_TAG: &str = "tls_handshake";

/// Writes one interval per second of each series (microseconds), tagged: connect latency
/// ([`CONNECT_TAG`]) and, where answers were read, `connect()` to the answer's end
/// ([`RESPONSE_TAG`]).
///
/// `StartTime` is `started_at` (with `--start-at`, the instant every agent shares) and the
/// intervals' timestamps are absolute (Unix seconds, no `BaseTime`), whole seconds after it:
/// the intervals of agents that started together carry the same timestamps and line up.
pub fn write(
    path: &Path,
    started_at: SystemTime,
    series: &[(&str, &BTreeMap<u64, Histogram<u64>>)],
) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("synack-load latency, microseconds, one interval per second; tags: connect (connect() to established), response (connect() to the answer's end), tls_handshake (established to the TLS handshake done)")
        .with_start_time(started_at)
        .begin_log_with(&mut file, &mut ser)?;
    let epoch = started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    // Intervals in time order, each second's series side by side.
    let mut all: Vec<(u64, &str, &Histogram<u64>)> = series
        .iter()
        .flat_map(|(tag, by_second)| by_second.iter().map(move |(s, h)| (*s, *tag, h)))
        .collect();
    all.sort_by_key(|(s, _, _)| *s);
    for (second, tag, h) in all {
        let tag = Tag::new(tag).ok_or_else(|| io::Error::other(format!("bad tag {tag:?}")))?;
        log.write_histogram(
            h,
            epoch + Duration::from_secs(second),
            Duration::from_secs(1),
            Some(tag),
        )
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    io::Write::flush(&mut file)
}

/// One interval read back from a log.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// use synack_load::record::{latency_histogram, record_us};
/// use synack_load::report::hlog::{self, CONNECT_TAG};
///
/// let mut second = latency_histogram();
/// record_us(&mut second, Duration::from_micros(250));
/// let by_second = BTreeMap::from([(0, second.clone()), (1, second)]);
/// let path = std::env::temp_dir().join(format!("synack-load-doc-{}.hlog", std::process::id()));
/// let started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_600_000_250);
/// hlog::write(&path, started, &[(CONNECT_TAG, &by_second)])?;
/// let read = hlog::read(&path)?;
/// assert_eq!((read.len(), read[1].start), (2, Duration::from_secs(1)));
/// assert_eq!(read[1].at, started + Duration::from_secs(1));
/// assert_eq!(read[1].tag.as_deref(), Some(CONNECT_TAG));
/// assert_eq!(read[1].histogram.max(), 250);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LoggedInterval {
    /// Offset of the interval's start from the log's `StartTime` (from its first interval where
    /// the log has none).
    pub start: Duration,
    /// When the interval started (its timestamp, plus `BaseTime` where the log has one).
    pub at: SystemTime,
    /// The interval's length.
    pub duration: Duration,
    /// Its tag, if any.
    pub tag: Option<String>,
    /// Its histogram.
    pub histogram: Histogram<u64>,
}

fn decode(h: &IntervalLogHistogram<'_>) -> io::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(h.encoded_histogram())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Deserializer::new()
        .deserialize(&mut io::Cursor::new(bytes))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))
}

/// A log's timestamps carry milliseconds (as decimal seconds, read back through a float):
/// rounded to the millisecond, so that equal instants compare equal.
fn to_ms(t: Duration) -> Duration {
    Duration::from_millis((t.as_secs_f64() * 1000.0).round() as u64)
}

/// Reads every interval of a log file.
pub fn read(path: &Path) -> io::Result<Vec<LoggedInterval>> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
    let (mut base, mut start) = (SystemTime::UNIX_EPOCH, None);
    for entry in IntervalLogIterator::new(&data) {
        let entry = entry.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not an HdrHistogram interval log ({e:?})",
                    path.display()
                ),
            )
        })?;
        match entry {
            LogEntry::BaseTime(t) => base = SystemTime::UNIX_EPOCH + to_ms(t),
            LogEntry::StartTime(t) => start = Some(SystemTime::UNIX_EPOCH + to_ms(t)),
            LogEntry::Interval(h) => {
                let at = base + to_ms(h.start_timestamp());
                let from = *start.get_or_insert(at);
                out.push(LoggedInterval {
                    start: at.duration_since(from).unwrap_or(Duration::ZERO),
                    at,
                    duration: h.duration(),
                    tag: h.tag().map(|t| t.as_str().to_string()),
                    histogram: decode(&h)?,
                });
            }
        }
    }
    Ok(out)
}

/// One series of a merge: the histogram of every interval with one tag, and how many.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::record::{latency_histogram, record_us};
/// use synack_load::report::hlog::{self, CONNECT_TAG, RESPONSE_TAG};
///
/// # let mut h = latency_histogram();
/// # record_us(&mut h, Duration::from_micros(250));
/// # let connect = BTreeMap::from([(0, h.clone()), (1, h.clone())]);
/// # let response = BTreeMap::from([(1, h)]);
/// # let name = format!("synack-load-doc-{}-merged.hlog", std::process::id());
/// # let path = std::env::temp_dir().join(name);
/// // A log of two connect intervals and one response interval, one value in each.
/// hlog::write(&path, SystemTime::now(), &[(CONNECT_TAG, &connect), (RESPONSE_TAG, &response)])?;
/// let merged = hlog::merge(&[&path, &path])?;
/// assert_eq!((merged[CONNECT_TAG].intervals, merged[CONNECT_TAG].histogram.len()), (4, 4));
/// // Series are never mixed.
/// assert_eq!((merged[RESPONSE_TAG].intervals, merged[RESPONSE_TAG].histogram.len()), (2, 2));
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Merged {
    /// All the tag's intervals added up.
    pub histogram: Histogram<u64>,
    /// Intervals merged.
    pub intervals: usize,
}

/// The intervals of several logs added up where they start at the same instant, by tag: what
/// the agents of one run (a shared `--start-at`) measured in each second, all together.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::record::{latency_histogram, record_us};
/// use synack_load::report::hlog::{self, CONNECT_TAG};
///
/// # let mut h = latency_histogram();
/// # record_us(&mut h, Duration::from_micros(250));
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_600_000);
/// // Two agents, both started at `start`: one measured seconds 0 and 1, the other only 1.
/// let dir = std::env::temp_dir();
/// let (a, b) = (dir.join(format!("doc-{}-a.hlog", std::process::id())), dir.join(format!("doc-{}-b.hlog", std::process::id())));
/// hlog::write(&a, start, &[(CONNECT_TAG, &BTreeMap::from([(0, h.clone()), (1, h.clone())]))])?;
/// hlog::write(&b, start, &[(CONNECT_TAG, &BTreeMap::from([(1, h)]))])?;
/// let aligned = hlog::merge_aligned(&[&a, &b])?;
/// assert_eq!(aligned.start_times, vec![start]);
/// let connect = &aligned.series[CONNECT_TAG];
/// assert_eq!(connect.len(), 2);
/// assert_eq!(connect[&(start + Duration::from_secs(1))].len(), 2);
/// // The whole: three intervals, three values.
/// let totals = aligned.totals()?;
/// assert_eq!((totals[CONNECT_TAG].intervals, totals[CONNECT_TAG].histogram.len()), (3, 3));
/// # std::fs::remove_file(&a)?; std::fs::remove_file(&b)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Aligned {
    /// The logs' distinct start times, earliest first: one where the agents shared a start.
    pub start_times: Vec<SystemTime>,
    /// By tag, by the instant an interval starts, every log's interval of that instant added.
    pub series: BTreeMap<String, BTreeMap<SystemTime, Histogram<u64>>>,
    /// By tag, the intervals read (before those of one instant were added up).
    pub intervals: BTreeMap<String, usize>,
}

impl Aligned {
    /// By tag, every interval of every log added up: what [`merge`] gives, from one reading.
    ///
    /// # Errors
    ///
    /// When two histograms cannot be added (they could not, being read with the same bounds).
    pub fn totals(&self) -> io::Result<BTreeMap<String, Merged>> {
        let mut out = BTreeMap::new();
        for (tag, by) in &self.series {
            let mut histogram = latency_histogram();
            for h in by.values() {
                histogram
                    .add(h)
                    .map_err(|e| io::Error::other(format!("{e:?}")))?;
            }
            let intervals = self.intervals.get(tag).copied().unwrap_or(0);
            out.insert(
                tag.clone(),
                Merged {
                    histogram,
                    intervals,
                },
            );
        }
        Ok(out)
    }
}

/// Adds up the intervals of `paths` that start at the same instant; see [`Aligned`].
pub fn merge_aligned(paths: &[impl AsRef<Path>]) -> io::Result<Aligned> {
    let mut start_times = Vec::new();
    let mut series: BTreeMap<String, BTreeMap<SystemTime, Histogram<u64>>> = BTreeMap::new();
    let mut intervals: BTreeMap<String, usize> = BTreeMap::new();
    for p in paths {
        let logged = read(p.as_ref())?;
        if let Some(first) = logged.first() {
            let started = first.at - first.start;
            if !start_times.contains(&started) {
                start_times.push(started);
            }
        }
        for iv in logged {
            let tag = iv.tag.unwrap_or_default();
            *intervals.entry(tag.clone()).or_default() += 1;
            series
                .entry(tag)
                .or_default()
                .entry(iv.at)
                .or_insert_with(latency_histogram)
                .add(&iv.histogram)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
    }
    start_times.sort();
    Ok(Aligned {
        start_times,
        series,
        intervals,
    })
}

/// Writes merged intervals (see [`merge_aligned`]) as one log: `StartTime` the earliest start,
/// absolute timestamps, one-second intervals.
///
/// ```no_run
/// use synack_load::report::hlog;
///
/// // The agents' logs of one run, one log of the whole, second by second.
/// let aligned = hlog::merge_aligned(&["agent-0.hlog", "agent-1.hlog"])?;
/// hlog::write_aligned("merged.hlog".as_ref(), &aligned)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_aligned(path: &Path, aligned: &Aligned) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let start = aligned
        .start_times
        .first()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("synack-load merge: the intervals of several agents' logs that start at the same instant, added up, by tag; microseconds")
        .with_start_time(start)
        .begin_log_with(&mut file, &mut ser)?;
    let mut all: Vec<(SystemTime, &str, &Histogram<u64>)> = aligned
        .series
        .iter()
        .flat_map(|(tag, by)| by.iter().map(move |(at, h)| (*at, tag.as_str(), h)))
        .collect();
    all.sort_by_key(|(at, _, _)| *at);
    for (at, tag, h) in all {
        let tag = if tag.is_empty() {
            None
        } else {
            Some(Tag::new(tag).ok_or_else(|| io::Error::other(format!("bad tag {tag:?}")))?)
        };
        let since_epoch = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        log.write_histogram(h, since_epoch, Duration::from_secs(1), tag)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    io::Write::flush(&mut file)
}

/// Merges every interval of every log, by tag (untagged intervals under `""`): series are
/// never mixed.
pub fn merge(paths: &[impl AsRef<Path>]) -> io::Result<BTreeMap<String, Merged>> {
    merge_aligned(paths)?.totals()
}

/// A histogram as text, for a JSON report: HdrHistogram's V2 deflate encoding in base64 (the
/// same encoding an interval log carries).
///
/// ```
/// use synack_load::report::hlog::{decode_histogram, encode_histogram};
///
/// let mut h = synack_load::record::latency_histogram();
/// h.record(250).unwrap();
/// let back = decode_histogram(&encode_histogram(&h)).unwrap();
/// assert_eq!(back.len(), 1);
/// assert_eq!(back.max(), h.max());
/// ```
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads back what [`encode_histogram`] wrote.
///
/// # Errors
///
/// A message for text that is not base64 or not an encoded histogram.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut io::Cursor::new(bytes))
        .map_err(|e| format!("not an encoded histogram: {e:?}"))
}
