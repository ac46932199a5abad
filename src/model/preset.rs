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
