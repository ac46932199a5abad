//! Image decoding and CLIP preprocessing (CPU stage).
pub mod decode;
pub mod parallel;
pub mod preprocess;

pub use decode::{decode_rgb, DEFAULT_MAX_PIXELS};
pub use preprocess::{
    center_crop_box, resized_size, PreprocessConfig, Preprocessor, CLIP_MEAN, CLIP_STD,
};
