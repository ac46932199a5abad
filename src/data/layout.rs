//! Which columns of a shard hold the image, captions, key and status, and how to
//! read them. Detected from the Arrow schema of the first shard, checked on all.
//!
//! Accepted layouts:
//! - dicoflow's own: `key: string`, `image: struct<bytes: binary, path: string>`,
//!   `captions: list<string>`;
//! - Hugging Face image datasets: an `image` struct with a `bytes` field, any caption column;
//! - img2dataset output: a `jpg`/`png`/`webp` binary column, `caption`, `key`, `status`
//!   (rows whose status is not `success` are skipped and counted);
//! - any binary / large_binary image column and a string or list-of-string caption
//!   column, named with [`LayoutOptions`].
//!
//! Every role accepts every Arrow encoding of its logical type (`utf8`,
//! `large_utf8`, `utf8_view`, dictionaries and run-end encodings of those;
//! `binary`, `large_binary`, `binary_view`, `fixed_size_binary` likewise; any
//! list encoding for captions): batches are normalised with Arrow's `cast`
//! kernel before rows are read. A column of another type is an error naming
//! the file and column, never a silently dropped role.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, LargeBinaryArray, LargeListArray, LargeStringArray};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::data::sample::{RawSample, RowAddr, SkipReason, SkipRecord};
use crate::error::{Error, Result};

/// Image column names tried in order when none is configured.
pub const IMAGE_COLUMN_CANDIDATES: &[&str] = &["image", "jpg", "jpeg", "png", "webp", "img"];
/// Caption column names tried in order when none is configured.
pub const CAPTION_COLUMN_CANDIDATES: &[&str] = &["captions", "caption", "sentences", "text", "txt"];
/// Key column name used when none is configured (optional: keys are generated otherwise).
pub const DEFAULT_KEY_COLUMN: &str = "key";
/// img2dataset's status column; rows whose value is not [`STATUS_SUCCESS`] are skipped.
pub const STATUS_COLUMN: &str = "status";
/// The status value of usable img2dataset rows.
pub const STATUS_SUCCESS: &str = "success";

/// How to find the columns; every field defaults to auto-detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayoutOptions {
    /// Image column name (default: first of `IMAGE_COLUMN_CANDIDATES` present).
    pub image_column: Option<String>,
    /// Caption column name (default: first of `CAPTION_COLUMN_CANDIDATES` present).
    pub caption_column: Option<String>,
    /// Key column name (default: `key` if present, else keys are `shard-stem/row-group/row`).
    pub key_column: Option<String>,
    /// Whether rows need at least one caption (default true; reference-free rewards can set false).
    pub require_captions: bool,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        Self {
            image_column: None,
            caption_column: None,
            key_column: None,
            require_captions: true,
        }
    }
}

/// The recognised family of a shard layout (informational: reading depends only
/// on the column encodings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    Dicoflow,
    HuggingFaceImage,
    Img2Dataset,
    BinaryColumn,
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayoutKind::Dicoflow => "dicoflow (key, image struct, captions list)",
            LayoutKind::HuggingFaceImage => "Hugging Face image struct",
            LayoutKind::Img2Dataset => "img2dataset",
            LayoutKind::BinaryColumn => "binary image column",
        })
    }
}

/// A detected layout: column names and how to read each.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub kind: LayoutKind,
    pub image_column: String,
    pub caption_column: Option<String>,
    pub key_column: Option<String>,
    pub status_column: Option<String>,
    pub require_captions: bool,
}

impl Layout {
    /// Detect the layout of `schema` (from the file at `path`, named in errors).
    pub fn detect(schema: &Schema, opts: &LayoutOptions, path: &Path) -> Result<Layout> {
        let found = || {
            schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pick = |configured: &Option<String>,
                    candidates: &[&str]|
         -> std::result::Result<Option<Arc<Field>>, String> {
            match configured {
                Some(name) => match schema.field_with_name(name) {
                    Ok(f) => Ok(Some(Arc::new(f.clone()))),
                    Err(_) => Err(name.clone()),
                },
                None => Ok(candidates
                    .iter()
                    .find_map(|c| schema.field_with_name(c).ok())
                    .map(|f| Arc::new(f.clone()))),
            }
        };

        let image = match pick(&opts.image_column, IMAGE_COLUMN_CANDIDATES) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(Error::MissingColumn {
                    path: path.into(),
                    role: "image",
                    expected: IMAGE_COLUMN_CANDIDATES.join(", "),
                    found: found(),
                    option: "image_column",
                })
            }
            Err(name) => {
                return Err(Error::MissingColumn {
                    path: path.into(),
                    role: "image",
                    expected: name,
                    found: found(),
                    option: "image_column",
                })
            }
        };
        if !is_image_type(image.data_type()) {
            return Err(Error::ColumnType {
                path: path.into(),
                column: image.name().clone(),
                role: "image",
                expected: "bytes (binary, large_binary, binary_view, fixed_size_binary, or a \
                           dictionary of those) or struct<bytes: bytes, path: string>",
                found: image.data_type().to_string(),
            });
        }

        let caption = match pick(&opts.caption_column, CAPTION_COLUMN_CANDIDATES) {
            Ok(f) => f,
            Err(name) => {
                return Err(Error::MissingColumn {
                    path: path.into(),
                    role: "caption",
                    expected: name,
                    found: found(),
                    option: "caption_column",
                })
            }
        };
        if caption.is_none() && opts.require_captions {
            return Err(Error::MissingColumn {
                path: path.into(),
                role: "caption",
                expected: CAPTION_COLUMN_CANDIDATES.join(", "),
                found: found(),
                option: "caption_column (or require_captions = false)",
            });
        }
        if let Some(c) = &caption {
            if !is_caption_type(c.data_type()) {
                return Err(Error::ColumnType {
                    path: path.into(),
                    column: c.name().clone(),
                    role: "caption",
                    expected: "text or bytes (utf8, large_utf8, utf8_view, binary, ..., or a \
                               dictionary of those), or a list of those",
                    found: c.data_type().to_string(),
                });
            }
        }

        let key = match pick(&opts.key_column, &[DEFAULT_KEY_COLUMN]) {
            Ok(f) => f,
            Err(name) => {
                return Err(Error::MissingColumn {
                    path: path.into(),
                    role: "key",
                    expected: name,
                    found: found(),
                    option: "key_column",
                })
            }
        };
        if let Some(k) = &key {
            if !is_key_type(k.data_type()) {
                return Err(Error::ColumnType {
                    path: path.into(),
                    column: k.name().clone(),
                    role: "key",
                    expected: "text or integer (utf8, large_utf8, utf8_view, int*, or a \
                               dictionary of those)",
                    found: k.data_type().to_string(),
                });
            }
        }

        // A `status` column of another type is refused, never ignored: ignoring it
        // would count failed downloads as usable rows.
        let status = match schema.field_with_name(STATUS_COLUMN) {
            Ok(f) if values_of(f.data_type()) == Values::Text => Some(f.name().clone()),
            Ok(f) => {
                return Err(Error::ColumnType {
                    path: path.into(),
                    column: f.name().clone(),
                    role: "status",
                    expected: "text (utf8, large_utf8, utf8_view, or a dictionary of those)",
                    found: f.data_type().to_string(),
                })
            }
            Err(_) => None,
        };

        let struct_image = matches!(image.data_type(), DataType::Struct(_));
        let list_captions = caption
            .as_ref()
            .is_some_and(|c| list_item(c.data_type()).is_some());
        let kind = if struct_image && key.is_some() && list_captions {
            LayoutKind::Dicoflow
        } else if struct_image {
            LayoutKind::HuggingFaceImage
        } else if status.is_some() || ["jpg", "png", "webp"].contains(&image.name().as_str()) {
            LayoutKind::Img2Dataset
        } else {
            LayoutKind::BinaryColumn
        };

        Ok(Layout {
            kind,
            image_column: image.name().clone(),
            caption_column: caption.map(|c| c.name().clone()),
            key_column: key.map(|k| k.name().clone()),
            status_column: status,
            require_captions: opts.require_captions,
        })
    }

    /// Check that another shard's schema reads the same way as this layout.
    pub fn check_compatible(&self, schema: &Schema, path: &Path) -> Result<()> {
        let opts = LayoutOptions {
            image_column: Some(self.image_column.clone()),
            caption_column: self.caption_column.clone(),
            key_column: self.key_column.clone(),
            require_captions: self.require_captions,
        };
        let other = Layout::detect(schema, &opts, path)?;
        if other.status_column != self.status_column {
            return Err(Error::InvalidInput {
                path: path.into(),
                what: format!(
                    "has status column {:?} but the first shard has {:?}; all shards of a dataset must share one layout",
                    other.status_column, self.status_column
                ),
            });
        }
        Ok(())
    }

    /// Names of the top-level columns to read (projection), in schema order.
    pub fn needed_columns<'a>(&'a self, schema: &Schema) -> Vec<usize> {
        let wanted: Vec<&'a str> = [
            Some(self.image_column.as_str()),
            self.caption_column.as_deref(),
            self.key_column.as_deref(),
            self.status_column.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect()
    }

    /// The key column of a batch as text (`None` without a key column); null
    /// cells stand for generated keys. Errors as [`Layout::extract`].
    pub fn keys_of(&self, batch: &RecordBatch, path: &Path) -> Result<Option<LargeStringArray>> {
        let Some(name) = self.key_column.as_deref() else {
            return Ok(None);
        };
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidInput {
                path: path.into(),
                what: format!("column `{name}` missing from a record batch"),
            })?;
        to_text(column, name, "key", path).map(Some)
    }

    /// Turn each row of a (projected) record batch into a sample or a skip record.
    /// `first` is the address of the batch's first row; `key_prefix` builds keys
    /// when the layout has no key column; `path` is the shard file (named in
    /// errors; image paths stored in the shard are resolved against its folder).
    ///
    /// Every column is first normalised with Arrow's `cast` kernel (dictionary,
    /// run-end, view and large-offset encodings become `large_utf8` /
    /// `large_binary` / `large_list`), so each role reads every encoding of its
    /// logical type the same way. Errors: a column missing from the batch, or a
    /// cast that fails, naming the file and column.
    pub fn extract(
        &self,
        batch: &RecordBatch,
        first: RowAddr,
        key_prefix: &str,
        out: &mut Vec<(RowAddr, std::result::Result<RawSample, SkipRecord>)>,
        path: &Path,
    ) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::InvalidInput {
                    path: path.into(),
                    what: format!("column `{name}` missing from a record batch"),
                })
        };
        let image = ImageCells::new(&column(&self.image_column)?, &self.image_column, path)?;
        let captions = match self.caption_column.as_deref() {
            Some(name) => Some(CaptionCells::new(&column(name)?, name, path)?),
            None => None,
        };
        let text_column = |name: &Option<String>, role| -> Result<Option<LargeStringArray>> {
            match name.as_deref() {
                Some(name) => Ok(Some(to_text(&column(name)?, name, role, path)?)),
                None => Ok(None),
            }
        };
        let keys = text_column(&self.key_column, "key")?;
        let status = text_column(&self.status_column, "status")?;
        let shard_dir = path.parent().unwrap_or(Path::new(""));

        for i in 0..batch.num_rows() {
            let addr = RowAddr {
                row: first.row + i as u32,
                ..first
            };
            let key = match &keys {
                Some(k) if k.is_valid(i) => k.value(i).to_owned(),
                _ => generated_key(key_prefix, addr.row_group, addr.row),
            };
            let skip = |reason| SkipRecord {
                addr,
                key: Some(key.clone()),
                reason,
            };
            if let Some(status) = &status {
                if !status.is_valid(i) || status.value(i) != STATUS_SUCCESS {
                    out.push((addr, Err(skip(SkipReason::StatusNotSuccess))));
                    continue;
                }
            }
            let bytes = match image.bytes_at(i, shard_dir) {
                Ok(b) => b,
                Err(reason) => {
                    out.push((addr, Err(skip(reason))));
                    continue;
                }
            };
            let caps = match &captions {
                None => Ok(Vec::new()),
                Some(c) => c.at(i),
            };
            let caps = match caps {
                Ok(c) => c,
                Err(reason) => {
                    out.push((addr, Err(skip(reason))));
                    continue;
                }
            };
            if caps.is_empty() && self.require_captions {
                out.push((addr, Err(skip(SkipReason::NoCaptions))));
                continue;
            }
            out.push((
                addr,
                Ok(RawSample {
                    key,
                    image: bytes,
                    captions: caps,
                    addr,
                }),
            ));
        }
        Ok(())
    }
}

/// The key of a row without a key (no key column, or a null cell):
/// `PREFIX/ROW_GROUP/ROW`, the prefix being the shard's file stem.
pub fn generated_key(prefix: &str, row_group: u32, row: u32) -> String {
    format!("{prefix}/{row_group}/{row}")
}

/// What a column holds once its encoding (dictionary, run-end, view, large
/// offsets) is looked through: the logical type a role is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    Text,
    Bytes,
    Integer,
    Other,
}

fn values_of(t: &DataType) -> Values {
    match t {
        DataType::Dictionary(_, v) => values_of(v),
        DataType::RunEndEncoded(_, v) => values_of(v.data_type()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Values::Text,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Values::Bytes,
        t if t.is_integer() => Values::Integer,
        _ => Values::Other,
    }
}

/// The item type of any list encoding (list, large list, list view, fixed size).
fn list_item(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => Some(f.data_type()),
        _ => None,
    }
}

/// The image column's type: bytes in any encoding, or the Hugging Face struct
/// with a `bytes` field of bytes and an optional `path` field of text.
fn is_image_type(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => {
            let field = |name: &str| fields.iter().find(|f| f.name() == name);
            field("bytes").is_some_and(|f| values_of(f.data_type()) == Values::Bytes)
                && field("path").is_none_or(|f| values_of(f.data_type()) == Values::Text)
        }
        other => values_of(other) == Values::Bytes,
    }
}

/// Captions: text or bytes (checked for UTF-8 per cell), one per row or a list.
fn is_caption_type(t: &DataType) -> bool {
    let cell = |t: &DataType| matches!(values_of(t), Values::Text | Values::Bytes);
    match list_item(t) {
        Some(item) => cell(item),
        None => cell(t),
    }
}

fn is_key_type(t: &DataType) -> bool {
    matches!(values_of(t), Values::Text | Values::Integer)
}

/// `a` cast to `to` (a clone when it already is), or an error naming the column.
fn normalise(
    a: &ArrayRef,
    to: &DataType,
    column: &str,
    role: &str,
    path: &Path,
) -> Result<ArrayRef> {
    if a.data_type() == to {
        return Ok(a.clone());
    }
    cast(a.as_ref(), to).map_err(|e| Error::InvalidInput {
        path: path.into(),
        what: format!(
            "column `{column}` ({}) could not be read as the {role} column ({to}): {e}",
            a.data_type()
        ),
    })
}

fn cast_failed(column: &str, role: &str, path: &Path, to: &DataType) -> Error {
    Error::InvalidInput {
        path: path.into(),
        what: format!("column `{column}` did not become {to} when read as the {role} column"),
    }
}

/// A text or integer column as `large_utf8` (integers in decimal).
fn to_text(a: &ArrayRef, column: &str, role: &str, path: &Path) -> Result<LargeStringArray> {
    let n = normalise(a, &DataType::LargeUtf8, column, role, path)?;
    n.as_string_opt::<i64>()
        .cloned()
        .ok_or_else(|| cast_failed(column, role, path, &DataType::LargeUtf8))
}

/// A bytes column as `large_binary`.
fn to_bytes(a: &ArrayRef, column: &str, role: &str, path: &Path) -> Result<LargeBinaryArray> {
    let n = normalise(a, &DataType::LargeBinary, column, role, path)?;
    n.as_binary_opt::<i64>()
        .cloned()
        .ok_or_else(|| cast_failed(column, role, path, &DataType::LargeBinary))
}

/// The image cells of a batch: bytes, and for the Hugging Face struct the
/// struct's validity and its `path` field.
struct ImageCells {
    bytes: LargeBinaryArray,
    path: Option<LargeStringArray>,
    present: Option<NullBuffer>,
}

impl ImageCells {
    fn new(a: &ArrayRef, column: &str, path: &Path) -> Result<Self> {
        let Some(s) = a.as_struct_opt() else {
            return Ok(Self {
                bytes: to_bytes(a, column, "image", path)?,
                path: None,
                present: None,
            });
        };
        let bytes = s.column_by_name("bytes").ok_or_else(|| Error::ColumnType {
            path: path.into(),
            column: column.to_owned(),
            role: "image",
            expected: "struct<bytes: binary, ..>",
            found: a.data_type().to_string(),
        })?;
        let image_path = match s.column_by_name("path") {
            Some(p) => Some(to_text(p, &format!("{column}.path"), "image path", path)?),
            None => None,
        };
        Ok(Self {
            bytes: to_bytes(bytes, &format!("{column}.bytes"), "image", path)?,
            path: image_path,
            present: s.nulls().cloned(),
        })
    }

    /// The encoded image of row `i`: its bytes, else the file its `path` names
    /// (relative paths from `shard_dir`), else a skip reason.
    fn bytes_at(&self, i: usize, shard_dir: &Path) -> std::result::Result<Vec<u8>, SkipReason> {
        if self.present.as_ref().is_some_and(|n| n.is_null(i)) {
            return Err(SkipReason::NullImage);
        }
        if self.bytes.is_valid(i) {
            let b = self.bytes.value(i);
            return if b.is_empty() {
                Err(SkipReason::EmptyImage)
            } else {
                Ok(b.to_vec())
            };
        }
        match &self.path {
            Some(p) if p.is_valid(i) && !p.value(i).is_empty() => {
                read_image_file(shard_dir, p.value(i))
            }
            _ => Err(SkipReason::NullImage),
        }
    }
}

/// Read the image file that a Hugging Face image struct names by `path` (its
/// `bytes` null). A URL (`scheme://…`) or a chained URL (`…::…`, fsspec's
/// notation for a file inside a remote archive) is never fetched: the row is
/// skipped. A relative path is taken from the shard's folder; an absolute one
/// as it is; `..` is allowed (the dataset's own files, like any local path).
fn read_image_file(shard_dir: &Path, stored: &str) -> std::result::Result<Vec<u8>, SkipReason> {
    if stored.contains("://") || stored.contains("::") {
        return Err(SkipReason::RemoteImagePath(stored.to_owned()));
    }
    let full = shard_dir.join(stored);
    match std::fs::read(&full) {
        Ok(b) if b.is_empty() => Err(SkipReason::EmptyImage),
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(SkipReason::ImageFileMissing(full.display().to_string()))
        }
        Err(e) => Err(SkipReason::ImageFileUnreadable(format!(
            "{}: {e}",
            full.display()
        ))),
    }
}

/// The caption cells of a batch, normalised: one text or bytes cell per row,
/// or a `large_list` of those.
enum CaptionCells {
    One(ArrayRef),
    List(LargeListArray),
}

impl CaptionCells {
    fn new(a: &ArrayRef, column: &str, path: &Path) -> Result<Self> {
        let cell = |t: &DataType| match values_of(t) {
            Values::Bytes => DataType::LargeBinary,
            _ => DataType::LargeUtf8,
        };
        match list_item(a.data_type()) {
            Some(item) => {
                let to = DataType::LargeList(Arc::new(Field::new("item", cell(item), true)));
                let n = normalise(a, &to, column, "caption", path)?;
                n.as_list_opt::<i64>()
                    .cloned()
                    .map(CaptionCells::List)
                    .ok_or_else(|| cast_failed(column, "caption", path, &to))
            }
            None => Ok(CaptionCells::One(normalise(
                a,
                &cell(a.data_type()),
                column,
                "caption",
                path,
            )?)),
        }
    }

    /// Captions of row `i`: a text cell gives one caption, a list cell several.
    /// Blank captions are dropped; a bytes caption that is not UTF-8 skips the row.
    fn at(&self, i: usize) -> std::result::Result<Vec<String>, SkipReason> {
        let mut out = Vec::new();
        match self {
            CaptionCells::One(a) => push_caption(a.as_ref(), i, &mut out)?,
            CaptionCells::List(list) => {
                if list.is_valid(i) {
                    let items = list.value(i);
                    for j in 0..items.len() {
                        push_caption(items.as_ref(), j, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Append cell `i` of a `large_utf8` / `large_binary` array unless null or blank.
fn push_caption(
    a: &dyn Array,
    i: usize,
    out: &mut Vec<String>,
) -> std::result::Result<(), SkipReason> {
    if a.is_null(i) {
        return Ok(());
    }
    let text = if let Some(s) = a.as_string_opt::<i64>() {
        s.value(i)
    } else if let Some(b) = a.as_binary_opt::<i64>() {
        std::str::from_utf8(b.value(i)).map_err(|_| SkipReason::CaptionNotUtf8)?
    } else {
        return Ok(());
    };
    if !text.trim().is_empty() {
        out.push(text.to_owned());
    }
    Ok(())
}
