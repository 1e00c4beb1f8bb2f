//! The bytes on disk: every codec of the repository format (`docs/FORMAT.md` is the
//! byte-by-byte description) and the names objects are stored under.
//!
//! Pure functions only: nothing here does I/O or knows a backend, so the fuzz targets can
//! feed these decoders arbitrary bytes. Every decoder of untrusted bytes returns a
//! [`FormatError`] and never panics; sealed objects are authenticated before they are parsed.

pub mod config;
pub mod crypto;
pub mod index;
pub mod keyfile;
pub mod layout;
pub mod lock;
pub mod pack;
pub mod run;
pub mod snapshot;
pub mod tree;

/// Bytes that are not a valid object of the kind expected. The message says what is wrong;
/// the caller names the object (see `Error::Corrupt`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Sealed bytes that do not authenticate with the key (altered, or another repository's).
    #[error("{0}")]
    Auth(String),
    /// Bytes that do not parse as the expected structure.
    #[error("{0}")]
    Decode(String),
    /// Bytes that parse but break a rule of the format (a bound, an order, a name).
    #[error("{0}")]
    Invalid(String),
}

impl From<crypto::AuthError> for FormatError {
    fn from(e: crypto::AuthError) -> Self {
        FormatError::Auth(e.to_string())
    }
}

impl From<postcard::Error> for FormatError {
    fn from(e: postcard::Error) -> Self {
        FormatError::Decode(e.to_string())
    }
}

impl From<serde_json::Error> for FormatError {
    fn from(e: serde_json::Error) -> Self {
        FormatError::Decode(e.to_string())
    }
}
