//! Model configs that settings files may give in full, by preset name
//! (`backbone_config = "ViT-L-14"`, `captioner = "paper"`) or by the path of a
//! JSON file holding the fields, such as the ones the stages write
//! (`backbone_config = "runs/demo/evaluator/clip_config.json"`,
//! `captioner = "runs/demo/xe/captioner.json"`).

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserializer;

/// A config with named presets.
pub(crate) trait Preset: Sized {
    /// What the config is, for messages.
    const WHAT: &'static str;
    /// The preset names, for messages.
    const NAMES: &'static str;
    /// The preset called `name`.
    fn preset(name: &str) -> Option<Self>;
    /// The config from its fields (the derived deserializer).
    fn from_fields<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Deserializes `T` from a preset name or a JSON file's path (a string), or
/// from its fields (a map). A string that is no preset name is read as a path
/// (relative paths from the current directory); a file that cannot be read or
/// does not parse as `T` is an error naming the file and what was expected.
pub(crate) fn preset_or_fields<'de, D: Deserializer<'de>, T: Preset>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(PresetVisitor(PhantomData))
}

struct PresetVisitor<T>(PhantomData<T>);

impl<'de, T: Preset> Visitor<'de> for PresetVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} preset name ({}) or a table of its fields",
            T::WHAT,
            T::NAMES
        )
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
        if let Some(cfg) = T::preset(name) {
            return Ok(cfg);
        }
        from_json_file(Path::new(name)).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_fields(map)
    }
}

/// The config in the JSON file at `path` (the fields, as a stage writes them);
/// the error says what a string setting may be.
fn from_json_file<T: Preset>(path: &Path) -> Result<T, String> {
    let expected = || {
        format!(
            "expected a {} preset name ({}), the path of a JSON file of its fields (as a \
             stage writes them) or a table of its fields",
            T::WHAT,
            T::NAMES
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{} `{}` is no preset and cannot be read as a file ({e}); {}",
            T::WHAT,
            path.display(),
            expected()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON ({e}); {}", path.display(), expected()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!(
            "{}: a JSON object of {} fields was expected",
            path.display(),
            T::WHAT
        ));
    };
    T::from_fields(de::value::MapDeserializer::new(map.into_iter()))
        .map_err(|e: serde_json::Error| format!("{}: not a {}: {e}", path.display(), T::WHAT))
}

/// Serde for a config derived with `#[serde(remote = "Self")]` that settings
/// files may also give by preset name: serializes its fields, deserializes a
/// preset name (through the type's `preset(name)`) or its fields.
macro_rules! impl_preset_serde {
    ($config:ty, $what:literal, $names:literal) => {
        impl serde::Serialize for $config {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$config>::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $config {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::model::preset::preset_or_fields(d)
            }
        }

        impl $crate::model::preset::Preset for $config {
            const WHAT: &'static str = $what;
            const NAMES: &'static str = $names;

            fn preset(name: &str) -> Option<Self> {
                <$config>::preset(name)
            }

            fn from_fields<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                <$config>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
    };
}
pub(crate) use impl_preset_serde;
