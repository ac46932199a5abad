//! The library's error type: every variant names the file, column or setting
//! involved and, where there is one, what to do about it.

use std::path::PathBuf;

/// Errors from dicoflow's library code. Per-sample problems (a bad JPEG, an
/// empty caption list) are not errors: they become counted [`crate::data::SkipRecord`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a readable Parquet file ({source}); if it was being written when a job stopped, delete it and re-run")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{path}: row group {row_group} could not be read ({source})")]
    RowGroup {
        path: PathBuf,
        row_group: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{path}: writing Parquet failed ({source})")]
    ParquetWrite {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{path}: no {role} column: expected one of [{expected}], found columns [{found}]; name it with `{option}`")]
    MissingColumn {
        path: PathBuf,
        role: &'static str,
        expected: String,
        found: String,
        option: &'static str,
    },

    #[error(
        "{path}: column `{column}` has type {found}, but the {role} column must be {expected}"
    )]
    ColumnType {
        path: PathBuf,
        column: String,
        role: &'static str,
        expected: &'static str,
        found: String,
    },

    #[error("{path}: no Parquet shards found (looked for *.parquet files)")]
    NoShards { path: PathBuf },

    #[error("{path}: {what}")]
    InvalidInput { path: PathBuf, what: String },

    #[error("cursor does not match this stream: {what}; resume with the same shards, seed, shuffle settings and worker count")]
    CursorMismatch { what: String },

    #[error("key `{key}` is not unique: {first} and {second} both hold it; keys index the reward cache and lookups by key, so every row of a dataset needs its own (give each source its own key prefix, e.g. re-run img2dataset with distinct output names, or name a unique column with `key_column`)")]
    DuplicateKey {
        key: String,
        first: String,
        second: String,
    },

    #[error("invalid setting `{name}`: {what}")]
    Config { name: &'static str, what: String },

    #[error("{path}: invalid JSON ({source})")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
