//! Safetensors weights: strict loading into a `VarStore` whose variable names follow the
//! OpenAI CLIP state dict (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`,
//! ...), conversion from the Hugging Face `CLIPModel` naming, and saving.
//!
//! Loading is all-or-nothing: every model variable must be present with the same shape and
//! no file tensor may be left over (except buffers listed in [`is_ignored_buffer`]),
//! otherwise an error names the offending keys and nothing is copied.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{nn::VarStore, Device, Tensor};

use crate::model::ModelError;

/// Naming convention of a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightNaming {
    /// Hugging Face naming if any key starts with `vision_model.` or `text_model.`,
    /// OpenAI naming otherwise.
    Auto,
    /// OpenAI CLIP / open_clip / PAC-S state-dict names (the `VarStore` names).
    OpenAi,
    /// Hugging Face `transformers` `CLIPModel` names.
    HuggingFace,
}

/// Non-parameter tensors some exporters include: Hugging Face `position_ids` buffers and
/// a persisted text `attn_mask`. They carry no weights and are skipped.
pub fn is_ignored_buffer(key: &str) -> bool {
    key == "attn_mask" || key.ends_with(".position_ids") || key == "position_ids"
}

fn read_raw(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    Tensor::read_safetensors(path).map_err(|e| ModelError::NotSafetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads a safetensors file and returns its tensors under OpenAI names.
pub fn read_openai_named(
    path: impl AsRef<Path>,
    naming: WeightNaming,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let path = path.as_ref();
    let tensors = read_raw(path)?;
    let hf = match naming {
        WeightNaming::OpenAi => false,
        WeightNaming::HuggingFace => true,
        WeightNaming::Auto => tensors
            .iter()
            .any(|(k, _)| k.starts_with("vision_model.") || k.starts_with("text_model.")),
    };
    if hf {
        hf_to_openai(tensors, path)
    } else {
        Ok(tensors)
    }
}

/// Loads the safetensors file at `path`, written under `vs`'s own variable
/// names (as [`save_safetensors`] and training checkpoints write them), into
/// `vs` (strict: every variable present with its shape, no other key; see the
/// module docs). tch's `VarStore::load` does the same copy but reports a
/// missing file or key as libtorch's debug text; this names the file.
///
/// Errors: [`ModelError::Io`] when the file cannot be read,
/// [`ModelError::NotSafetensors`] when it is not a safetensors file, and the
/// key and shape errors of [`load_named_tensors`].
pub fn load_var_store(vs: &mut VarStore, path: impl AsRef<Path>) -> Result<(), ModelError> {
    let path = path.as_ref();
    load_named_tensors(vs, read_raw(path)?, path)
}

/// Loads a safetensors file into `vs` (strict; see the module docs).
pub fn load_safetensors(
    vs: &mut VarStore,
    path: impl AsRef<Path>,
    naming: WeightNaming,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let tensors = read_openai_named(path, naming)?;
    load_named_tensors(vs, tensors, path)
}

/// Copies OpenAI-named tensors into `vs` (strict; see the module docs). `source` only
/// names the origin in error messages.
pub fn load_named_tensors(
    vs: &mut VarStore,
    tensors: Vec<(String, Tensor)>,
    source: &Path,
) -> Result<(), ModelError> {
    let vars = vs.variables();
    let mut file: HashMap<String, Tensor> = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        if !is_ignored_buffer(&k) {
            file.insert(k, t);
        }
    }
    let mut missing: Vec<String> = vars
        .keys()
        .filter(|k| !file.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(ModelError::MissingKeys {
            path: source.to_path_buf(),
            keys: missing,
        });
    }
    let mut unexpected: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(ModelError::UnexpectedKeys {
            path: source.to_path_buf(),
            keys: unexpected,
        });
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in &names {
        let (var, src) = (&vars[*name], &file[*name]);
        if var.size() != src.size() {
            return Err(ModelError::ShapeMismatch {
                path: source.to_path_buf(),
                key: (*name).clone(),
                expected: var.size(),
                found: src.size(),
            });
        }
    }
    tch::no_grad(|| -> Result<(), ModelError> {
        for name in names {
            let mut var = vars[name].shallow_clone();
            let src = file[name]
                .f_to_kind(var.kind())?
                .f_to_device(var.device())?;
            var.f_copy_(&src)?;
        }
        Ok(())
    })
}

/// Writes every variable of `vs` (OpenAI names, CPU, contiguous) to a safetensors file.
pub fn save_safetensors(vs: &VarStore, path: impl AsRef<Path>) -> Result<(), ModelError> {
    save_safetensors_where(vs, path, |_| true)
}

/// Writes the variables of `vs` whose name `keep` accepts, as
/// [`save_safetensors`] writes them all.
pub fn save_safetensors_where(
    vs: &VarStore,
    path: impl AsRef<Path>,
    keep: impl Fn(&str) -> bool,
) -> Result<(), ModelError> {
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| keep(name))
        .collect();
    let mut named = Vec::with_capacity(vars.len());
    for (name, t) in vars {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        named.push((name, t));
    }
    Ok(Tensor::write_safetensors(&named, path.as_ref())?)
}

/// One Hugging Face layer's q/k/v tensors waiting to be packed into `in_proj_*`.
#[derive(Default)]
struct Qkv {
    q: Option<(String, Tensor)>,
    k: Option<(String, Tensor)>,
    v: Option<(String, Tensor)>,
}

/// Renames (and where needed transposes or packs) Hugging Face `CLIPModel` tensors into
/// the OpenAI naming:
///
/// | Hugging Face | OpenAI |
/// |---|---|
/// | `vision_model.embeddings.patch_embedding.weight` | `visual.conv1.weight` |
/// | `vision_model.embeddings.class_embedding` | `visual.class_embedding` |
/// | `vision_model.embeddings.position_embedding.weight` | `visual.positional_embedding` |
/// | `vision_model.pre_layrnorm.*` / `post_layernorm.*` | `visual.ln_pre.*` / `visual.ln_post.*` |
/// | `visual_projection.weight` `[E, W]` | `visual.proj` `[W, E]` (transposed) |
/// | `text_model.embeddings.token_embedding.weight` | `token_embedding.weight` |
/// | `text_model.embeddings.position_embedding.weight` | `positional_embedding` |
/// | `text_model.final_layer_norm.*` | `ln_final.*` |
/// | `text_projection.weight` `[E, W]` | `text_projection` `[W, E]` (transposed) |
/// | `*.encoder.layers.N.self_attn.{q,k,v}_proj.{weight,bias}` | `*.transformer.resblocks.N.attn.in_proj_{weight,bias}` (q, k, v concatenated) |
/// | `*.encoder.layers.N.self_attn.out_proj.*` | `*.transformer.resblocks.N.attn.out_proj.*` |
/// | `*.encoder.layers.N.layer_norm1.*` / `layer_norm2.*` | `*.ln_1.*` / `*.ln_2.*` |
/// | `*.encoder.layers.N.mlp.fc1.*` / `fc2.*` | `*.mlp.c_fc.*` / `*.mlp.c_proj.*` |
/// | `logit_scale` | `logit_scale` |
///
/// `position_ids` buffers are dropped; any other key is reported as unexpected.
/// Recent `transformers` versions pool the text tower at the first `eos_token_id`; this
/// crate pools at the largest token id, which is the same position for CLIP's vocabulary
/// (EOT 49407 is the largest id).
pub fn hf_to_openai(
    tensors: Vec<(String, Tensor)>,
    path: &Path,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mut out = Vec::with_capacity(tensors.len());
    let mut qkv: BTreeMap<String, Qkv> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for (key, t) in tensors {
        if is_ignored_buffer(&key) {
            continue;
        }
        match map_hf_key(&key) {
            HfKey::Plain(name) => out.push((name, t)),
            HfKey::Transposed(name) => out.push((name, t.f_transpose(0, 1)?.f_contiguous()?)),
            HfKey::Packed { target, part } => {
                let entry = qkv.entry(target).or_default();
                let slot = match part {
                    'q' => &mut entry.q,
                    'k' => &mut entry.k,
                    _ => &mut entry.v,
                };
                *slot = Some((key, t));
            }
            HfKey::Unknown => unexpected.push(key),
        }
    }
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(ModelError::UnexpectedKeys {
            path: path.to_path_buf(),
            keys: unexpected,
        });
    }
    for (target, parts) in qkv {
        let present = [&parts.q, &parts.k, &parts.v]
            .iter()
            .find_map(|p| p.as_ref().map(|(k, _)| k.clone()))
            .unwrap_or_else(|| target.clone());
        match (parts.q, parts.k, parts.v) {
            (Some((_, q)), Some((_, k)), Some((_, v))) => {
                if q.size() != k.size() || q.size() != v.size() {
                    return Err(ModelError::BadKey {
                        path: path.to_path_buf(),
                        key: present,
                        reason: "q_proj, k_proj and v_proj have different shapes",
                    });
                }
                out.push((target, Tensor::f_cat(&[q, k, v], 0)?));
            }
            _ => {
                return Err(ModelError::BadKey {
                    path: path.to_path_buf(),
                    key: present,
                    reason: "q_proj, k_proj and v_proj must all be present",
                })
            }
        }
    }
    Ok(out)
}

enum HfKey {
    Plain(String),
    Transposed(String),
    Packed { target: String, part: char },
    Unknown,
}

fn map_hf_key(key: &str) -> HfKey {
    match key {
        "logit_scale" => return HfKey::Plain(key.to_owned()),
        "visual_projection.weight" => return HfKey::Transposed("visual.proj".to_owned()),
        "text_projection.weight" => return HfKey::Transposed("text_projection".to_owned()),
        _ => {}
    }
    let (tower, rest) = if let Some(rest) = key.strip_prefix("vision_model.") {
        ("visual.", rest)
    } else if let Some(rest) = key.strip_prefix("text_model.") {
        ("", rest)
    } else {
        return HfKey::Unknown;
    };
    let vision = !tower.is_empty();
    let plain = |name: &str| HfKey::Plain(format!("{tower}{name}"));
    match rest {
        "embeddings.class_embedding" if vision => return plain("class_embedding"),
        "embeddings.patch_embedding.weight" if vision => return plain("conv1.weight"),
        "embeddings.position_embedding.weight" => return plain("positional_embedding"),
        "embeddings.token_embedding.weight" if !vision => return plain("token_embedding.weight"),
        _ => {}
    }
    let norms: [(&str, &str, bool); 3] = [
        ("pre_layrnorm.", "ln_pre.", true),
        ("post_layernorm.", "ln_post.", true),
        ("final_layer_norm.", "ln_final.", false),
    ];
    for (hf, oa, vision_only) in norms {
        if let Some(param) = rest.strip_prefix(hf) {
            if vision_only == vision && matches!(param, "weight" | "bias") {
                return plain(&format!("{oa}{param}"));
            }
            return HfKey::Unknown;
        }
    }
    let Some(layer_rest) = rest.strip_prefix("encoder.layers.") else {
        return HfKey::Unknown;
    };
    let Some((index, sub)) = layer_rest.split_once('.') else {
        return HfKey::Unknown;
    };
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return HfKey::Unknown;
    }
    let Some((module, param)) = sub.rsplit_once('.') else {
        return HfKey::Unknown;
    };
    if !matches!(param, "weight" | "bias") {
        return HfKey::Unknown;
    }
    let block = format!("{tower}transformer.resblocks.{index}.");
    let part = match module {
        "self_attn.q_proj" => Some('q'),
        "self_attn.k_proj" => Some('k'),
        "self_attn.v_proj" => Some('v'),
        _ => None,
    };
    if let Some(part) = part {
        return HfKey::Packed {
            target: format!("{block}attn.in_proj_{param}"),
            part,
        };
    }
    let oa = match module {
        "self_attn.out_proj" => "attn.out_proj",
        "layer_norm1" => "ln_1",
        "layer_norm2" => "ln_2",
        "mlp.fc1" => "mlp.c_fc",
        "mlp.fc2" => "mlp.c_proj",
        _ => return HfKey::Unknown,
    };
    HfKey::Plain(format!("{block}{oa}.{param}"))
}
