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
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::record::latency_histogram;

/// The tag of connect-latency intervals.
pub const CONNECT_TAG: &str = "connect";

/// Writes one interval per second of connect latency (microseconds).
pub fn write(
    path: &Path,
    started_at: SystemTime,
    intervals: &BTreeMap<u64, Histogram<u64>>,
) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("synack-load connect latency, microseconds, one interval per second")
        .with_start_time(started_at)
        .with_base_time(started_at)
        .begin_log_with(&mut file, &mut ser)?;
    let tag = Tag::new(CONNECT_TAG);
    for (second, h) in intervals {
        log.write_histogram(h, Duration::from_secs(*second), Duration::from_secs(1), tag)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    io::Write::flush(&mut file)
}

/// One interval read back from a log.
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

/// Merges every interval of every log into one histogram.
pub fn merge(paths: &[impl AsRef<Path>]) -> io::Result<(Histogram<u64>, usize)> {
    let mut total = latency_histogram();
    let mut n = 0;
    for p in paths {
        for iv in read(p.as_ref())? {
            total
                .add(&iv.histogram)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            n += 1;
        }
    }
    Ok((total, n))
}
