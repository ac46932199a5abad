//! Image decoding and CLIP preprocessing (CPU stage), pixel for pixel as Pillow.
pub(crate) mod decode;
pub mod jpeg;
pub(crate) mod mode;
pub(crate) mod preprocess;
pub(crate) mod resample;

pub use decode::{decode, decode_rgb, DEFAULT_MAX_PIXELS};
pub use mode::{DecodedImage, PilMode, Samples};
pub use preprocess::{
    center_crop_box, resized_size, PreprocessConfig, Preprocessor, ResizePlan, CLIP_MEAN, CLIP_STD,
};
