//! What can go wrong in a command, and the one mapping to exit statuses: 2 for input that
//! cannot work, 1 for a run that could not do what was asked.

use std::io;

/// A command's failure.
///
/// ```
/// use synack_load::error::LoadError;
///
/// assert_eq!(LoadError::Usage("--rates 5k,1k: give the rates rising".into()).exit_code(), 2);
/// assert_eq!(LoadError::Run("the generator's poll failed".into()).exit_code(), 1);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad input: the flag, the value, and what is accepted.
    #[error("{0}")]
    Usage(String),
    /// An I/O step failed (writing a report, the generator's own sockets).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS's error.
        #[source]
        source: io::Error,
    },
    /// The embedded server could not start.
    #[error("embedded server: {0}")]
    Server(#[from] synack::Error),
    /// The run could not do what was asked (a fatal error during it, a generator that could
    /// not deliver what a recommendation needs, a server that lost count).
    #[error("{0}")]
    Run(String),
}

impl LoadError {
    /// The exit status: 2 for usage, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadError::Usage(_) => 2,
            LoadError::Server(synack::Error::InvalidConfig { .. }) => 2,
            LoadError::Io { .. } | LoadError::Server(_) | LoadError::Run(_) => 1,
        }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        LoadError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<io::Error> for LoadError {
    /// A run's I/O error: input that cannot work (a target not on this host to watch, no
    /// listener there, a path that does not exist) is a usage error, the rest a failed run.
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::NotFound => {
                LoadError::Usage(e.to_string())
            }
            _ => LoadError::Run(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_2_and_the_rest_1() {
        assert_eq!(LoadError::Usage("--x".into()).exit_code(), 2);
        assert_eq!(LoadError::Run("fatal".into()).exit_code(), 1);
        assert_eq!(
            LoadError::io("report", io::Error::other("disk")).exit_code(),
            1
        );
        let not_here = io::Error::new(io::ErrorKind::InvalidInput, "not on this host");
        assert_eq!(LoadError::from(not_here).exit_code(), 2);
        assert_eq!(LoadError::from(io::Error::other("poll")).exit_code(), 1);
    }
}
