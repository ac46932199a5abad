//! Image decoding and CLIP preprocessing (CPU stage), pixel for pixel as Pillow.
pub mod decode;
pub mod jpeg;
pub mod preprocess;
pub mod resample;

pub use decode::{decode, decode_rgb, DecodedImage, PilMode, Samples, DEFAULT_MAX_PIXELS};
pub use preprocess::{
    center_crop_box, resized_size, PreprocessConfig, Preprocessor, ResizePlan, CLIP_MEAN, CLIP_STD,
};
