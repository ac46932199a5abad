//! Model configs that settings files may give either in full or by preset name
//! (`backbone_config = "ViT-L-14"`, `captioner = "paper"`).

use std::fmt;
use std::marker::PhantomData;

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

/// Deserializes `T` from a preset name (a string) or from its fields (a map).
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
        T::preset(name).ok_or_else(|| {
            E::custom(format!(
                "unknown {} preset `{name}`: use one of {} or give the fields",
                T::WHAT,
                T::NAMES
            ))
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_fields(map)
    }
}
