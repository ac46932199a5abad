//! COCO caption files: annotations (`captions_val2014.json` style) and
//! results (`[{"image_id": .., "caption": ..}]`), with the toolkit's checks.
//!
//! Behaviour on irregular input:
//! - Image ids may be integers or strings; `1` and `"1"` are different ids,
//!   as in the toolkit's Python dictionaries. A number with a zero fraction
//!   (`1.0`) is the integer id (Python hashes them alike); other numbers are
//!   rejected.
//! - If the annotations have no `images` list, the images are those that
//!   have captions, in order of appearance (the toolkit needs the list).
//! - A result for an image that is not in the annotations is an error naming
//!   the id; so is a second result for the same image and an empty results
//!   list (the toolkit fails on all three, less helpfully).
//! - Images without a result are not evaluated: the toolkit's documented use
//!   evaluates the images of the results file only.
//! - Empty captions are accepted and score as the toolkit scores them; so do
//!   captions that tokenize to nothing (only punctuation, only spaces) and
//!   captions with `|||` (the PTB tokenizer splits it into `| | |`, so it never
//!   reaches METEOR's line protocol) or `\n` (a space to the toolkit).
//! - A caption with another line break (`\r`, U+2028, U+2029, VT, FF, NEL) is
//!   an error naming the image: the toolkit silently misaligns every later
//!   caption on it (tests/fixtures/bad_input/make_fixture.py shows it).
//! - A file that is not UTF-8 is an error naming the byte position, as the
//!   toolkit's `json.load` reports it.
//! - Malformed JSON is an error naming the file, line and column.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::MetricsError;

/// A COCO image id: an integer in COCO itself, but strings are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageId::Int(i) => write!(f, "{i}"),
            ImageId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for ImageId {
    fn from(v: i64) -> Self {
        ImageId::Int(v)
    }
}

impl From<&str> for ImageId {
    fn from(v: &str) -> Self {
        ImageId::Str(v.to_string())
    }
}

impl Serialize for ImageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ImageId::Int(i) => s.serialize_i64(*i),
            ImageId::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ImageId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image id (integer or string)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ImageId, E> {
                Ok(ImageId::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ImageId, E> {
                i64::try_from(v)
                    .map(ImageId::Int)
                    .map_err(|_| E::custom(format!("image id {v} is too large")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ImageId, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(ImageId::Int(v as i64))
                } else {
                    Err(E::custom(format!("image id {v} is not an integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ImageId, E> {
                Ok(ImageId::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawImage {
    id: ImageId,
}

#[derive(Deserialize)]
struct RawCaption {
    image_id: ImageId,
    caption: String,
}

#[derive(Deserialize)]
struct RawAnnotations {
    images: Option<Vec<RawImage>>,
    annotations: Vec<RawCaption>,
}

/// Reference captions of a COCO caption dataset.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    /// Image ids in file order, without repeats.
    pub images: Vec<ImageId>,
    /// Reference captions per image, in file order.
    pub captions: HashMap<ImageId, Vec<String>>,
}

/// One generated caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionResult {
    /// The image.
    pub image_id: ImageId,
    /// The generated caption.
    pub caption: String,
}

/// Reads a UTF-8 text file: [`MetricsError::Io`] when it cannot be read,
/// [`MetricsError::NotUtf8`] (with the byte position) when it is not UTF-8.
pub fn read_text(path: &Path) -> Result<String, MetricsError> {
    let bytes = std::fs::read(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| MetricsError::NotUtf8 {
        path: path.to_path_buf(),
        position: e.utf8_error().valid_up_to(),
    })
}

fn read(path: &Path) -> Result<String, MetricsError> {
    read_text(path)
}

/// The first line break in `caption` that the toolkit does not turn into a
/// space (see [`MetricsError::LineBreakInCaption`]), named.
fn foreign_line_break(caption: &str) -> Option<String> {
    caption.chars().find_map(|c| {
        let name = match c {
            '\r' => "carriage return",
            '\u{0B}' => "vertical tab",
            '\u{0C}' => "form feed",
            '\u{85}' => "next line",
            '\u{2028}' => "line separator",
            '\u{2029}' => "paragraph separator",
            _ => return None,
        };
        Some(format!("U+{:04X} ({name})", c as u32))
    })
}

fn check_line_breaks(id: &ImageId, role: &'static str, caption: &str) -> Result<(), MetricsError> {
    match foreign_line_break(caption) {
        Some(character) => Err(MetricsError::LineBreakInCaption {
            id: id.clone(),
            role,
            character,
        }),
        None => Ok(()),
    }
}

fn json_error(path: &Path, e: serde_json::Error) -> MetricsError {
    // serde_json ends its message with " at line L column C"; the position
    // is already in `path:line:column`.
    let position = format!(" at line {} column {}", e.line(), e.column());
    let text = e.to_string();
    let message = text.strip_suffix(&position).unwrap_or(&text).to_owned();
    MetricsError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message,
    }
}

impl Annotations {
    /// Parses an annotations document; `path` is only used in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, MetricsError> {
        let raw: RawAnnotations = serde_json::from_str(text).map_err(|e| json_error(path, e))?;
        let mut out = Annotations::default();
        let mut seen = std::collections::HashSet::new();
        if let Some(images) = raw.images {
            for im in images {
                if seen.insert(im.id.clone()) {
                    out.images.push(im.id);
                }
            }
        }
        for a in raw.annotations {
            if seen.insert(a.image_id.clone()) {
                out.images.push(a.image_id.clone());
            }
            out.captions.entry(a.image_id).or_default().push(a.caption);
        }
        Ok(out)
    }

    /// Loads an annotations file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, MetricsError> {
        let path = path.as_ref();
        Self::from_json_str(&read(path)?, path)
    }
}

/// Parses a results document; `path` is only used in errors.
pub fn results_from_json_str(text: &str, path: &Path) -> Result<Vec<CaptionResult>, MetricsError> {
    let res: Vec<CaptionResult> = serde_json::from_str(text).map_err(|e| json_error(path, e))?;
    if res.is_empty() {
        return Err(MetricsError::EmptyResults {
            path: PathBuf::from(path),
        });
    }
    Ok(res)
}

/// Loads a results file.
pub fn load_results(path: impl AsRef<Path>) -> Result<Vec<CaptionResult>, MetricsError> {
    let path = path.as_ref();
    results_from_json_str(&read(path)?, path)
}

/// An image to evaluate: its references and the candidate caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image.
    pub image_id: ImageId,
    /// Reference captions (raw, untokenized).
    pub references: Vec<String>,
    /// The candidate caption (raw, untokenized).
    pub candidate: String,
}

/// Pairs results with references in the order the toolkit evaluates them:
/// the annotations' image order, restricted to images with a result.
///
/// Errors, each naming the image id: [`MetricsError::UnknownImage`],
/// [`MetricsError::DuplicateResult`], [`MetricsError::NoReferences`], and
/// [`MetricsError::LineBreakInCaption`] for a result or a used reference.
pub fn match_results(
    annotations: &Annotations,
    results: &[CaptionResult],
) -> Result<Vec<Sample>, MetricsError> {
    let known: std::collections::HashSet<&ImageId> = annotations.images.iter().collect();
    let mut by_image: HashMap<&ImageId, &str> = HashMap::new();
    for r in results {
        if !known.contains(&r.image_id) {
            return Err(MetricsError::UnknownImage {
                id: r.image_id.clone(),
            });
        }
        if by_image.insert(&r.image_id, &r.caption).is_some() {
            return Err(MetricsError::DuplicateResult {
                id: r.image_id.clone(),
            });
        }
    }
    let mut samples = Vec::with_capacity(by_image.len());
    for id in &annotations.images {
        if let Some(c) = by_image.get(id) {
            let refs = annotations.captions.get(id).cloned().unwrap_or_default();
            if refs.is_empty() {
                return Err(MetricsError::NoReferences { id: id.clone() });
            }
            check_line_breaks(id, "result", c)?;
            for r in &refs {
                check_line_breaks(id, "reference", r)?;
            }
            samples.push(Sample {
                image_id: id.clone(),
                references: refs,
                candidate: c.to_string(),
            });
        }
    }
    Ok(samples)
}
