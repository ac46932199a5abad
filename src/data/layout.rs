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

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryViewArray, GenericBinaryArray, GenericListArray, GenericStringArray,
    StringViewArray,
};
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
    /// Image column name (default: first of [`IMAGE_COLUMN_CANDIDATES`] present).
    pub image_column: Option<String>,
    /// Caption column name (default: first of [`CAPTION_COLUMN_CANDIDATES`] present).
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
                expected: "binary, large_binary, binary_view or struct<bytes: binary, ..>",
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
                    expected: "string, large_string, binary or a list of those",
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
                    expected: "string or integer",
                    found: k.data_type().to_string(),
                });
            }
        }

        let status = schema
            .field_with_name(STATUS_COLUMN)
            .ok()
            .filter(|f| is_string_type(f.data_type()))
            .map(|f| f.name().clone());

        let struct_image = matches!(image.data_type(), DataType::Struct(_));
        let list_captions = caption
            .as_ref()
            .is_some_and(|c| matches!(c.data_type(), DataType::List(_) | DataType::LargeList(_)));
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

    /// Turn each row of a (projected) record batch into a sample or a skip record.
    /// `first` is the address of the batch's first row; `key_prefix` builds keys
    /// when the layout has no key column.
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
        let image = column(&self.image_column)?;
        let image = match image.data_type() {
            DataType::Struct(_) => {
                let s = image.as_struct();
                s.column_by_name("bytes")
                    .cloned()
                    .ok_or_else(|| Error::ColumnType {
                        path: path.into(),
                        column: self.image_column.clone(),
                        role: "image",
                        expected: "struct<bytes: binary, ..>",
                        found: image.data_type().to_string(),
                    })?
            }
            _ => image,
        };
        // A null struct makes its `bytes` child null too only logically; check both.
        let image_struct = column(&self.image_column)?;
        let captions = self.caption_column.as_deref().map(column).transpose()?;
        let keys = self.key_column.as_deref().map(column).transpose()?;
        let status = self.status_column.as_deref().map(column).transpose()?;

        for i in 0..batch.num_rows() {
            let addr = RowAddr {
                row: first.row + i as u32,
                ..first
            };
            let key = match &keys {
                Some(k) => key_at(k.as_ref(), i),
                None => Some(format!("{key_prefix}/{}/{}", addr.row_group, addr.row)),
            };
            let skip = |reason| SkipRecord {
                addr,
                key: key.clone(),
                reason,
            };
            if let Some(status) = &status {
                if string_at(status.as_ref(), i) != Some(Ok(STATUS_SUCCESS)) {
                    out.push((addr, Err(skip(SkipReason::StatusNotSuccess))));
                    continue;
                }
            }
            let bytes = if image_struct.is_null(i) {
                None
            } else {
                binary_at(image.as_ref(), i)
            };
            let bytes = match bytes {
                None => {
                    out.push((addr, Err(skip(SkipReason::NullImage))));
                    continue;
                }
                Some([]) => {
                    out.push((addr, Err(skip(SkipReason::EmptyImage))));
                    continue;
                }
                Some(b) => b,
            };
            let caps = match &captions {
                None => Ok(Vec::new()),
                Some(c) => captions_at(c.as_ref(), i),
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
                    key: key
                        .unwrap_or_else(|| format!("{key_prefix}/{}/{}", addr.row_group, addr.row)),
                    image: bytes.to_vec(),
                    captions: caps,
                    addr,
                }),
            ));
        }
        Ok(())
    }
}

fn is_binary_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn is_string_type(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_image_type(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => fields
            .iter()
            .any(|f| f.name() == "bytes" && is_binary_type(f.data_type())),
        other => is_binary_type(other),
    }
}

fn is_caption_type(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) => {
            is_string_type(f.data_type()) || is_binary_type(f.data_type())
        }
        other => is_string_type(other) || is_binary_type(other),
    }
}

fn is_key_type(t: &DataType) -> bool {
    is_string_type(t)
        || matches!(
            t,
            DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
        )
}

/// The bytes of a binary cell, `None` if null or not a binary column.
fn binary_at(a: &dyn Array, i: usize) -> Option<&[u8]> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Binary => Some(
            a.as_any()
                .downcast_ref::<GenericBinaryArray<i32>>()?
                .value(i),
        ),
        DataType::LargeBinary => Some(
            a.as_any()
                .downcast_ref::<GenericBinaryArray<i64>>()?
                .value(i),
        ),
        DataType::BinaryView => Some(a.as_any().downcast_ref::<BinaryViewArray>()?.value(i)),
        _ => None,
    }
}

/// The text of a string (or binary, checked for UTF-8) cell; `None` if null.
fn string_at(a: &dyn Array, i: usize) -> Option<std::result::Result<&str, SkipReason>> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(Ok(a
            .as_any()
            .downcast_ref::<GenericStringArray<i32>>()?
            .value(i))),
        DataType::LargeUtf8 => Some(Ok(a
            .as_any()
            .downcast_ref::<GenericStringArray<i64>>()?
            .value(i))),
        DataType::Utf8View => Some(Ok(a.as_any().downcast_ref::<StringViewArray>()?.value(i))),
        _ => {
            binary_at(a, i).map(|b| std::str::from_utf8(b).map_err(|_| SkipReason::CaptionNotUtf8))
        }
    }
}

fn key_at(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Int32 => Some(
            a.as_primitive::<arrow::datatypes::Int32Type>()
                .value(i)
                .to_string(),
        ),
        DataType::Int64 => Some(
            a.as_primitive::<arrow::datatypes::Int64Type>()
                .value(i)
                .to_string(),
        ),
        DataType::UInt32 => Some(
            a.as_primitive::<arrow::datatypes::UInt32Type>()
                .value(i)
                .to_string(),
        ),
        DataType::UInt64 => Some(
            a.as_primitive::<arrow::datatypes::UInt64Type>()
                .value(i)
                .to_string(),
        ),
        _ => string_at(a, i).and_then(|r| r.ok()).map(str::to_owned),
    }
}

/// Captions of one row: a string cell gives one caption, a list cell several.
/// Blank captions are dropped; non-UTF-8 binary captions skip the row.
fn captions_at(a: &dyn Array, i: usize) -> std::result::Result<Vec<String>, SkipReason> {
    let mut out = Vec::new();
    let mut push =
        |s: std::result::Result<&str, SkipReason>| -> std::result::Result<(), SkipReason> {
            let s = s?;
            if !s.trim().is_empty() {
                out.push(s.to_owned());
            }
            Ok(())
        };
    if a.is_null(i) {
        return Ok(out);
    }
    match a.data_type() {
        DataType::List(_) => {
            let list = a.as_any().downcast_ref::<GenericListArray<i32>>();
            if let Some(list) = list {
                let items = list.value(i);
                for j in 0..items.len() {
                    if let Some(s) = string_at(items.as_ref(), j) {
                        push(s)?;
                    }
                }
            }
        }
        DataType::LargeList(_) => {
            let list = a.as_any().downcast_ref::<GenericListArray<i64>>();
            if let Some(list) = list {
                let items = list.value(i);
                for j in 0..items.len() {
                    if let Some(s) = string_at(items.as_ref(), j) {
                        push(s)?;
                    }
                }
            }
        }
        _ => {
            if let Some(s) = string_at(a, i) {
                push(s)?;
            }
        }
    }
    Ok(out)
}
