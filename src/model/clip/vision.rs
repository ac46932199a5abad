//! CLIP vision tower (ViT) with OpenAI names under `visual.`: `conv1.weight` (no bias),
//! `class_embedding`, `positional_embedding`, `ln_pre`, `transformer.resblocks.{i}`,
//! `ln_post`, `proj`.

use tch::{nn, Kind, Tensor};

use super::config::ClipConfig;
use super::layers::{LayerNorm, Transformer};
use crate::model::ModelError;

/// Outputs of [`VisionTransformer::forward_features`].
#[derive(Debug)]
pub struct VisionOutput {
    /// Output of the last residual block, before `ln_post`: `[batch, tokens, width]`,
    /// token 0 is the class token (Hugging Face's `last_hidden_state`).
    pub last_hidden_state: Tensor,
    /// Projected class token, `ln_post(last_hidden_state[:, 0]) @ proj`: `[batch, embed_dim]`.
    pub image_embeds: Tensor,
}

/// The ViT image encoder.
#[derive(Debug)]
pub struct VisionTransformer {
    /// `[width, 3, patch, patch]`
    pub conv1: Tensor,
    /// `[width]`
    pub class_embedding: Tensor,
    /// `[grid * grid + 1, width]`
    pub positional_embedding: Tensor,
    pub ln_pre: LayerNorm,
    pub transformer: Transformer,
    pub ln_post: LayerNorm,
    /// `[width, embed_dim]`
    pub proj: Tensor,
    image_size: i64,
    patch_size: i64,
    width: i64,
}

impl VisionTransformer {
    /// Creates the tower's variables under `p` (normally `root / "visual"`),
    /// randomly initialised from libtorch's generator under its lock
    /// ([`crate::rng::with_torch_rng`]).
    pub fn new(p: nn::Path, cfg: &ClipConfig) -> Result<Self, ModelError> {
        crate::rng::with_torch_rng(|| Self::build(p, cfg))
    }

    fn build(p: nn::Path, cfg: &ClipConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let v = &cfg.vision;
        let scale = (v.width as f64).powf(-0.5);
        let randn = |stdev| nn::Init::Randn { mean: 0.0, stdev };
        let conv_std = (3.0 * (v.patch_size * v.patch_size) as f64).powf(-0.5);
        Ok(Self {
            conv1: (&p / "conv1").var(
                "weight",
                &[v.width, 3, v.patch_size, v.patch_size],
                randn(conv_std),
            ),
            class_embedding: p.var("class_embedding", &[v.width], randn(scale)),
            positional_embedding: p.var(
                "positional_embedding",
                &[cfg.vision_tokens(), v.width],
                randn(scale),
            ),
            ln_pre: LayerNorm::new(&p / "ln_pre", v.width),
            transformer: Transformer::new(
                &p / "transformer",
                v.width,
                v.layers,
                v.heads,
                v.mlp_ratio,
                cfg.quick_gelu,
            ),
            ln_post: LayerNorm::new(&p / "ln_post", v.width),
            proj: p.var("proj", &[v.width, cfg.embed_dim], randn(scale)),
            image_size: v.image_size,
            patch_size: v.patch_size,
            width: v.width,
        })
    }

    /// Checks `[batch, 3, image_size, image_size]` and casts to the weights' dtype.
    fn check_images(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let size = images.size();
        let ok = size.len() == 4
            && size[1] == 3
            && size[2] == self.image_size
            && size[3] == self.image_size
            && images.is_floating_point();
        if !ok {
            return Err(ModelError::BadInput {
                what: "CLIP vision tower",
                expected: format!(
                    "floating-point images [batch, 3, {0}, {0}] (the config's \
                     `vision.image_size`; in a pipeline, make the preprocess stage's `size` \
                     equal to it)",
                    self.image_size
                ),
                found: size,
                kind: format!("{:?}", images.kind()),
            });
        }
        Ok(images.f_to_kind(self.conv1.kind())?)
    }

    /// Output of the last residual block (before `ln_post`).
    /// `[batch, 3, H, W]` → `[batch, grid * grid + 1, width]`
    pub fn last_hidden_state(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.check_images(images)?;
        let b = x.size()[0];
        let x = x.f_conv2d::<Tensor>(
            &self.conv1,
            None,
            [self.patch_size, self.patch_size],
            [0, 0],
            [1, 1],
            1,
        )?; // [b, width, grid, grid]
        let x = x.f_flatten(2, 3)?.f_transpose(1, 2)?; // [b, grid*grid, width]
        let cls = self
            .class_embedding
            .f_reshape([1, 1, self.width])?
            .f_expand([b, 1, self.width], false)?; // [b, 1, width]
        let x = Tensor::f_cat(&[cls, x], 1)?; // [b, tokens, width]
        let x = x.f_add(&self.positional_embedding)?;
        let x = self.ln_pre.forward(&x)?;
        self.transformer.forward(&x, false) // [b, tokens, width]
    }

    /// Both the token features and the projected image embedding.
    pub fn forward_features(&self, images: &Tensor) -> Result<VisionOutput, ModelError> {
        let last_hidden_state = self.last_hidden_state(images)?; // [b, tokens, width]
        let cls = last_hidden_state.f_select(1, 0)?; // [b, width]
        let image_embeds = self.ln_post.forward(&cls)?.f_matmul(&self.proj)?; // [b, embed]
        Ok(VisionOutput {
            last_hidden_state,
            image_embeds,
        })
    }

    /// Projected image embedding, not normalised. `[batch, 3, H, W]` → `[batch, embed_dim]`
    pub fn forward(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.forward_features(images)?.image_embeds)
    }

    /// dtype of the tower's weights.
    pub fn kind(&self) -> Kind {
        self.conv1.kind()
    }
}
