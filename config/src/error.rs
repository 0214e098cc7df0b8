//! One error type for everything that can be wrong with a configuration.

use std::path::PathBuf;

/// What is wrong with a configuration, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file that was read.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key,
    /// wrong type). The TOML error names the line, column and key.
    #[error("{file}: {message}")]
    Syntax {
        /// The file that was parsed.
        file: PathBuf,
        /// The parser's description, with line and key.
        message: String,
    },
    /// A key has a value of the right type but an invalid meaning.
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        /// The file (or `<command line>` for quick mode).
        file: PathBuf,
        /// The dotted key path, e.g. `route[0].backends[1]`.
        key: String,
        /// What was expected, and how to fix it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(file: &std::path::Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { file: file.to_path_buf(), key: key.into(), message: message.into() }
    }
}
