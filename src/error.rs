//! The coarse, public error kind of every walden operation and the one error
//! type the library returns. Modules keep their own detailed `thiserror` enums
//! where that helps; what crosses a module boundary is an [`Error`] carrying a
//! [`Kind`], because the kind is what callers (and exit codes) act on. This file
//! does not know about the command line: the mapping to exit codes lives in the
//! binary and is documented in `spec/cli.md`.

use std::fmt;

/// What went wrong, at the granularity a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The caller asked for something malformed or impossible.
    InvalidInput,
    /// A named thing (snapshot, object, file) does not exist.
    NotFound,
    /// No key file opens the repository with the given password.
    WrongPassword,
    /// Stored data failed authentication, an id check, or does not parse.
    Corrupt,
    /// Storage or the local filesystem could not be reached or written.
    Unavailable,
    /// The operation clashes with existing state (repository exists, lock held,
    /// different content under the same name).
    Conflict,
    /// The repository or input uses something this version does not support.
    Unsupported,
    /// A bug: an invariant of walden itself did not hold.
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvalidInput => "invalid input",
            Kind::NotFound => "not found",
            Kind::WrongPassword => "wrong password",
            Kind::Corrupt => "corrupt",
            Kind::Unavailable => "unavailable",
            Kind::Conflict => "conflict",
            Kind::Unsupported => "unsupported",
            Kind::Internal => "internal",
        }
    }
}

/// An error with its kind and a message that names the thing concerned.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    /// The one "not found" PostgreSQL may see as exit 1 from
    /// `restore_command`: the WAL file was never archived. Every other
    /// missing thing (a local file, a pack a record names) is not this.
    not_archived: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            not_archived: false,
            source: None,
        }
    }

    /// A WAL file that is not in the repository (`NotFound`).
    pub fn not_archived(message: impl Into<String>) -> Self {
        Error {
            not_archived: true,
            ..Self::new(Kind::NotFound, message)
        }
    }

    /// Whether this is [`Error::not_archived`]: the only failure
    /// `wal-fetch` may report to PostgreSQL as "not there".
    pub fn is_not_archived(&self) -> bool {
        self.not_archived
    }

    pub fn with_source(
        kind: Kind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            not_archived: false,
            source: Some(Box::new(source)),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with where it happened, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(Kind::Corrupt, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Kind::Unsupported, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// A local filesystem error about `path`. A full disk or missing
    /// permission is "unavailable"; a missing file is "not found" (but
    /// never [`Error::not_archived`]).
    pub fn io(path: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            _ => Kind::Unavailable,
        };
        let what = match err.raw_os_error() {
            Some(libc::ENOSPC) => "no space left on the device".to_string(),
            Some(libc::EROFS) => "the filesystem is read-only".to_string(),
            _ => err.to_string(),
        };
        Error::with_source(kind, format!("{path}: {what}"), err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
