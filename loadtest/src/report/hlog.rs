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
        .with_base_time(started_at)
        .begin_log_with(&mut file, &mut ser)?;
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
            Duration::from_secs(second),
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
/// hlog::write(&path, SystemTime::now(), &[(CONNECT_TAG, &by_second)])?;
/// let read = hlog::read(&path)?;
/// assert_eq!((read.len(), read[1].start), (2, Duration::from_secs(1)));
/// assert_eq!(read[1].tag.as_deref(), Some(CONNECT_TAG));
/// assert_eq!(read[1].histogram.max(), 250);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LoggedInterval {
    /// Offset of the interval's start from the log's base time.
    pub start: Duration,
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

/// Reads every interval of a log file.
pub fn read(path: &Path) -> io::Result<Vec<LoggedInterval>> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
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
        if let LogEntry::Interval(h) = entry {
            out.push(LoggedInterval {
                start: h.start_timestamp(),
                duration: h.duration(),
                tag: h.tag().map(|t| t.as_str().to_string()),
                histogram: decode(&h)?,
            });
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

/// Merges every interval of every log, by tag (untagged intervals under `""`): series are
/// never mixed.
pub fn merge(paths: &[impl AsRef<Path>]) -> io::Result<BTreeMap<String, Merged>> {
    let mut out: BTreeMap<String, Merged> = BTreeMap::new();
    for p in paths {
        for iv in read(p.as_ref())? {
            let m = out
                .entry(iv.tag.unwrap_or_default())
                .or_insert_with(|| Merged {
                    histogram: latency_histogram(),
                    intervals: 0,
                });
            m.histogram
                .add(&iv.histogram)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            m.intervals += 1;
        }
    }
    Ok(out)
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
