//! PyTorch zip checkpoints (`torch.save` since PyTorch 1.6) read without executing pickle
//! code.
//!
//! Layout (PyTorch `torch/serialization.py`, `_save`): a zip archive whose entries sit under
//! one folder `<name>/`: `data.pkl` (the pickled object, protocol 2), `data/<key>` (each
//! storage's raw bytes, in the byte order of `byteorder`, little-endian when absent),
//! `version`, and a few bookkeeping records. The pickle refers to storages through
//! persistent ids `('storage', torch.<Type>Storage, key, location, numel)` and builds
//! tensors with `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
//!
//! The pickle is read by [`crate::model::pickle`], which records calls instead of making
//! them. This module then interprets only these names (the whitelist):
//!
//! | name | read as |
//! |---|---|
//! | `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_tensor` | a tensor: storage, element offset, size, stride |
//! | `torch._utils._rebuild_parameter`, `torch._utils._rebuild_parameter_with_state` | the tensor they wrap |
//! | `torch._tensor._rebuild_from_type_v2` | the tensor its inner rebuild call makes |
//! | `collections.OrderedDict` | a dict of its items |
//! | `torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage` | the storage's element type |
//!
//! Every other call (`argparse.Namespace`, `torch.device`, `os.system`, a pickled
//! `nn.Module`) stays opaque data: it is never run, and it is ignored unless it sits where
//! a tensor is expected, in which case reading fails with an error naming it.
//!
//! Tensors are rebuilt from (storage, offset, size, stride) with bounds checked against
//! the storage, so views (transposes, slices, tied weights sharing a storage) read as
//! PyTorch reads them; each result is a fresh contiguous CPU tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::model::pickle::{self, Object, Value};
use crate::model::ModelError;

/// Keys under which training scripts nest the weights, tried when the top-level dict is
/// not itself a dict of tensors.
pub const NESTED_KEYS: [&str; 3] = ["state_dict", "model", "module"];

/// The four bytes every zip archive (and so every `torch.save` file since PyTorch 1.6 and
/// every TorchScript archive) starts with.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

/// Where the tensors of a checkpoint were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorDictSource {
    /// The pickled object is the dict of tensors.
    TopLevel,
    /// The dict of tensors is the value of this top-level key (one of [`NESTED_KEYS`]).
    Nested(String),
}

impl std::fmt::Display for TensorDictSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TopLevel => f.write_str("the top-level dict"),
            Self::Nested(key) => write!(f, "the `{key}` entry"),
        }
    }
}

/// The tensors of a checkpoint, under their names in the file, in file order.
#[derive(Debug)]
pub struct TorchCheckpoint {
    /// `(name, tensor)`: CPU, contiguous, the file's dtype.
    pub tensors: Vec<(String, Tensor)>,
    /// Which dict they came from.
    pub source: TensorDictSource,
}

/// Whether the file starts like a zip archive (a `torch.save` file of PyTorch ≥ 1.6 or a
/// TorchScript archive; older `torch.save` files are bare pickles).
pub fn is_zip(path: &Path) -> Result<bool, ModelError> {
    let mut f = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == ZIP_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether a zip file is a TorchScript archive (`torch.jit.save`: `code/` and
/// `constants.pkl` records next to `data.pkl`).
///
/// Errors: [`ModelError::BadCheckpoint`] when the file is no readable zip archive with one
/// `<name>/data.pkl` record.
pub fn is_torchscript(path: &Path) -> Result<bool, ModelError> {
    Ok(Archive::open(path)?.is_torchscript())
}

fn bad(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::BadCheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// An open checkpoint archive: the entry folder and the storages read so far.
struct Archive<'p> {
    path: &'p Path,
    zip: zip::ZipArchive<File>,
    /// Names of the archive's records.
    names: Vec<String>,
    /// `<name>/` of `<name>/data.pkl`.
    prefix: String,
    /// Storages by key: element type and a 1-D tensor of all its elements.
    storages: BTreeMap<String, (Kind, Tensor)>,
}

impl<'p> Archive<'p> {
    fn open(path: &'p Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let zip = zip::ZipArchive::new(file)
            .map_err(|e| bad(path, format!("not a readable zip archive: {e}")))?;
        let names = zip
            .file_names()
            .map(|n| n.map(|n| n.into_owned()))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| bad(path, format!("not a readable zip archive: {e}")))?;
        let pickles: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| {
                n.strip_suffix("data.pkl")
                    .is_some_and(|p| p.ends_with('/') && p.matches('/').count() == 1)
            })
            .collect();
        let prefix = match pickles.as_slice() {
            [one] => one.trim_end_matches("data.pkl").to_owned(),
            [] => return Err(bad(path, "the archive has no `<name>/data.pkl` record")),
            many => {
                return Err(bad(
                    path,
                    format!("the archive has several pickles: {}", many.join(", ")),
                ))
            }
        };
        Ok(Self {
            path,
            zip,
            names,
            prefix,
            storages: BTreeMap::new(),
        })
    }

    /// Whether the archive is TorchScript (`torch.jit.save`: code and constants records).
    fn is_torchscript(&self) -> bool {
        let constants = format!("{}constants.pkl", self.prefix);
        let code = format!("{}code/", self.prefix);
        self.names
            .iter()
            .any(|n| *n == constants || n.starts_with(&code))
    }

    fn entry(&mut self, name: &str) -> Result<Option<Vec<u8>>, ModelError> {
        let full = format!("{}{name}", self.prefix);
        let mut f = match self.zip.by_name(&full) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(bad(self.path, format!("record `{full}`: {e}"))),
        };
        let mut buf = Vec::with_capacity(usize::try_from(f.size()).unwrap_or(0));
        f.read_to_end(&mut buf)
            .map_err(|e| bad(self.path, format!("record `{full}`: {e}")))?;
        Ok(Some(buf))
    }

    fn check_byte_order(&mut self) -> Result<(), ModelError> {
        match self.entry("byteorder")? {
            None => Ok(()),
            Some(b) if b.trim_ascii() == b"little" => Ok(()),
            Some(b) => Err(bad(
                self.path,
                format!(
                    "storages are stored `{}`-endian; only little-endian checkpoints are \
                     read (load and re-save it on a little-endian machine)",
                    String::from_utf8_lossy(b.trim_ascii())
                ),
            )),
        }
    }

    /// The storage a persistent id names: its element type and its elements `[numel]`.
    fn storage(&mut self, pid: &Value, at: &str) -> Result<(Kind, Tensor), ModelError> {
        let fields = match pid {
            Value::Tuple(f) => f.as_slice(),
            other => {
                return Err(bad(
                    self.path,
                    format!("{at}: persistent id is {}", other.describe()),
                ))
            }
        };
        let [tag, ty, key, _location, numel] = fields else {
            return Err(bad(
                self.path,
                format!(
                    "{at}: persistent id has {} fields, expected 5",
                    fields.len()
                ),
            ));
        };
        if tag.as_str() != Some("storage") {
            return Err(bad(
                self.path,
                format!("{at}: persistent id is not a storage"),
            ));
        }
        let kind = storage_kind(ty).ok_or_else(|| {
            bad(
                self.path,
                format!(
                    "{at}: storage type {} is not one of the element types read \
                     (float32/16, bfloat16, float64, int64/32/16/8, uint8, bool)",
                    ty.describe()
                ),
            )
        })?;
        let key = key
            .as_str()
            .ok_or_else(|| bad(self.path, format!("{at}: storage key is not a string")))?
            .to_owned();
        let numel = numel
            .as_int()
            .filter(|&n| n >= 0)
            .ok_or_else(|| bad(self.path, format!("{at}: storage size is not a count")))?;
        if let Some((k, t)) = self.storages.get(&key) {
            if *k != kind {
                return Err(bad(
                    self.path,
                    format!("{at}: storage {key} is read as {k:?} and as {kind:?}"),
                ));
            }
            return Ok((*k, t.shallow_clone()));
        }
        let bytes = self.entry(&format!("data/{key}"))?.ok_or_else(|| {
            bad(
                self.path,
                format!("{at}: storage record `data/{key}` is missing"),
            )
        })?;
        let need = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(kind.elt_size_in_bytes()))
            .ok_or_else(|| bad(self.path, format!("{at}: storage size {numel} overflows")))?;
        if bytes.len() < need {
            return Err(bad(
                self.path,
                format!(
                    "{at}: storage `data/{key}` has {} bytes, {numel} {kind:?} elements need {need}",
                    bytes.len()
                ),
            ));
        }
        let t = Tensor::f_from_data_size(&bytes[..need], &[numel], kind)?;
        self.storages.insert(key, (kind, t.shallow_clone()));
        Ok((kind, t))
    }

    /// The tensor a value rebuilds, or `None` when it is no tensor record.
    fn tensor(&mut self, v: &Value, at: &str) -> Result<Option<Tensor>, ModelError> {
        let Value::Object(o) = v else {
            return Ok(None);
        };
        let o = o.borrow().clone();
        let Some(name) = o.callable_name() else {
            return Ok(None);
        };
        let args = o.arg_slice();
        match name.as_str() {
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                self.rebuild(args, at).map(Some)
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match args.first() {
                    Some(inner) => self.tensor(inner, at),
                    None => Err(bad(self.path, format!("{at}: {name} without a tensor"))),
                }
            }
            "torch._tensor._rebuild_from_type_v2" => match (args.first(), args.get(2)) {
                (Some(func), Some(inner_args)) => {
                    let inner = Value::Object(std::rc::Rc::new(std::cell::RefCell::new(Object {
                        callable: func.clone(),
                        args: inner_args.clone(),
                        state: None,
                        dict_items: Vec::new(),
                        list_items: Vec::new(),
                    })));
                    self.tensor(&inner, at)
                }
                _ => Err(bad(
                    self.path,
                    format!("{at}: {name} with too few arguments"),
                )),
            },
            _ => Ok(None),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild(&mut self, args: &[Value], at: &str) -> Result<Tensor, ModelError> {
        let [storage, offset, size, stride, ..] = args else {
            return Err(bad(
                self.path,
                format!("{at}: tensor record has {} arguments", args.len()),
            ));
        };
        let Value::PersistentId(pid) = storage else {
            return Err(bad(
                self.path,
                format!("{at}: tensor storage is {}", storage.describe()),
            ));
        };
        let (kind, data) = self.storage(pid, at)?;
        let ints = |v: &Value, what: &str| -> Result<Vec<i64>, ModelError> {
            match v {
                Value::Tuple(items) => items
                    .iter()
                    .map(|x| x.as_int().filter(|&i| i >= 0))
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| {
                        bad(
                            self.path,
                            format!("{at}: tensor {what} is not a tuple of counts"),
                        )
                    }),
                other => Err(bad(
                    self.path,
                    format!("{at}: tensor {what} is {}", other.describe()),
                )),
            }
        };
        let size = ints(size, "size")?;
        let stride = ints(stride, "stride")?;
        let offset = offset
            .as_int()
            .filter(|&o| o >= 0)
            .ok_or_else(|| bad(self.path, format!("{at}: tensor offset is not a count")))?;
        if size.len() != stride.len() {
            return Err(bad(
                self.path,
                format!("{at}: size {size:?} and stride {stride:?} differ in rank"),
            ));
        }
        let available = data.size()[0];
        if size.iter().all(|&s| s > 0) {
            // Last element's index: offset + Σ (size_i − 1) · stride_i.
            let last = size.iter().zip(&stride).try_fold(offset, |acc, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|d| acc.checked_add(d))
            });
            match last {
                Some(last) if last < available => {}
                _ => {
                    return Err(bad(
                        self.path,
                        format!(
                            "{at}: tensor of size {size:?}, stride {stride:?} at offset \
                             {offset} reaches past its storage of {available} elements"
                        ),
                    ))
                }
            }
        }
        let mut out = Tensor::f_empty(size.as_slice(), (kind, Device::Cpu))?;
        if out.numel() > 0 {
            let view = data.f_as_strided(size.as_slice(), stride.as_slice(), offset)?;
            out.f_copy_(&view)?;
        }
        Ok(out)
    }
}

/// Element type of a `torch.<Type>Storage` global.
fn storage_kind(ty: &Value) -> Option<Kind> {
    let Value::Global { module, name } = ty else {
        return None;
    };
    if module != "torch" {
        return None;
    }
    Some(match name.as_str() {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// The items of a dict or an `OrderedDict` record; `None` for any other value.
fn dict_items(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Some(d.borrow().clone()),
        Value::Object(o) => {
            let o = o.borrow();
            (o.callable_name().as_deref() == Some("collections.OrderedDict")).then(|| {
                // `OrderedDict(pairs)` carries its items as an argument, pickles use SETITEMS.
                let mut items = Vec::new();
                if let Some(Value::List(l)) = o.arg_slice().first() {
                    for pair in l.borrow().iter() {
                        if let Value::Tuple(kv) = pair {
                            if let [k, v] = kv.as_slice() {
                                items.push((k.clone(), v.clone()));
                            }
                        }
                    }
                }
                items.extend(o.dict_items.iter().cloned());
                items
            })
        }
        _ => None,
    }
}

/// [`Value::describe`], with `OrderedDict`s described as dicts.
fn describe(v: &Value) -> String {
    match (v, dict_items(v)) {
        (Value::Object(_), Some(items)) => format!("dict of {} entries", items.len()),
        _ => v.describe(),
    }
}

/// What a dict holds: all tensors, some, or none.
enum Content {
    Tensors(Vec<(String, Tensor)>),
    /// Keys (up to a few) whose values are not tensors, with what they are.
    Mixed {
        tensors: usize,
        others: Vec<String>,
    },
    NoTensors,
}

fn content(
    ar: &mut Archive<'_>,
    items: &[(Value, Value)],
    at: &str,
) -> Result<Content, ModelError> {
    let mut tensors = Vec::new();
    let mut others = Vec::new();
    for (k, v) in items {
        let name = match k {
            Value::Str(s) => s.clone(),
            other => format!("<{}>", other.describe()),
        };
        match ar.tensor(v, &format!("{at}`{name}`"))? {
            Some(t) if matches!(k, Value::Str(_)) => tensors.push((name, t)),
            _ => others.push(format!("`{name}` ({})", describe(v))),
        }
    }
    Ok(if tensors.is_empty() {
        Content::NoTensors
    } else if others.is_empty() {
        Content::Tensors(tensors)
    } else {
        Content::Mixed {
            tensors: tensors.len(),
            others,
        }
    })
}

fn shown(items: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", items.len() - SHOWN));
    }
    s
}

/// Reads the tensors of a `torch.save` zip checkpoint without executing its pickle.
///
/// The tensors are those of the top-level dict when every value of it is a tensor,
/// otherwise those of the one key of [`NESTED_KEYS`] whose value is such a dict (a PAC-S
/// `clip_ViT-B-32.pth` keeps them under `state_dict`, next to `epoch` and `optimizer`).
/// Other entries (epochs, optimizer state, `argparse.Namespace` arguments) are ignored.
///
/// Errors: [`ModelError::BadCheckpoint`] for a file that is no such checkpoint (a
/// TorchScript archive, a malformed pickle, a storage out of bounds, a big-endian file),
/// [`ModelError::NoTensorDict`] when no dict of tensors is found (the message lists what
/// the file holds), [`ModelError::AmbiguousTensorDict`] when several of [`NESTED_KEYS`]
/// hold one.
pub fn read_pth(path: &Path) -> Result<TorchCheckpoint, ModelError> {
    let mut ar = Archive::open(path)?;
    if ar.is_torchscript() {
        return Err(bad(
            path,
            "this is a TorchScript archive (torch.jit.save); read it with --format torchscript",
        ));
    }
    ar.check_byte_order()?;
    let program = ar
        .entry("data.pkl")?
        .ok_or_else(|| bad(path, "the `data.pkl` record is missing"))?;
    let root = pickle::read(&program).map_err(|e| bad(path, format!("data.pkl: {e}")))?;
    let Some(items) = dict_items(&root) else {
        return Err(ModelError::NoTensorDict {
            path: path.to_path_buf(),
            found: format!("the file holds {}, not a dict", root.describe()),
        });
    };
    let top = content(&mut ar, &items, "")?;
    if let Content::Tensors(tensors) = top {
        return Ok(TorchCheckpoint {
            tensors,
            source: TensorDictSource::TopLevel,
        });
    }
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for key in NESTED_KEYS {
        let Some((_, v)) = items.iter().find(|(k, _)| k.as_str() == Some(key)) else {
            continue;
        };
        match dict_items(v) {
            Some(inner) => match content(&mut ar, &inner, &format!("`{key}`."))? {
                Content::Tensors(t) => found.push((key, t)),
                Content::Mixed { tensors, others } => notes.push(format!(
                    "`{key}` holds {tensors} tensors and {} other values: {}",
                    others.len(),
                    shown(&others)
                )),
                Content::NoTensors => notes.push(format!("`{key}` holds no tensors")),
            },
            None => notes.push(format!("`{key}` is {}", describe(v))),
        }
    }
    match found.len() {
        1 => {
            let (key, tensors) = found.pop().expect("one entry");
            Ok(TorchCheckpoint {
                tensors,
                source: TensorDictSource::Nested(key.to_owned()),
            })
        }
        0 => {
            let listing: Vec<String> = items
                .iter()
                .map(|(k, v)| match k {
                    Value::Str(s) => format!("`{s}` ({})", describe(v)),
                    other => format!("<{}> ({})", other.describe(), describe(v)),
                })
                .collect();
            let mut found = format!("top-level entries: {}", shown(&listing));
            if let Content::Mixed { tensors, others } = top {
                found.push_str(&format!(
                    "; the top level mixes {tensors} tensors with {}",
                    shown(&others)
                ));
            }
            for n in notes {
                found.push_str("; ");
                found.push_str(&n);
            }
            Err(ModelError::NoTensorDict {
                path: path.to_path_buf(),
                found,
            })
        }
        _ => Err(ModelError::AmbiguousTensorDict {
            path: path.to_path_buf(),
            keys: found.iter().map(|(k, _)| (*k).to_owned()).collect(),
        }),
    }
}
