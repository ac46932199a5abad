//! The synthetic world: dicoflow's embedded default dataset.
//!
//! No weights or datasets can be downloaded, so the default job trains on
//! small images of coloured shapes that the crate generates itself, each with
//! reference captions from a paraphrasing grammar, plus an oracle [`judge`]
//! that scores any caption for grammaticality and factual precision/recall.
//! The full specification (world, caption language, scoring) is
//! `datasets/synthetic_world.md`.
//!
//! ```
//! use dicoflow::data::synth::{judge, reference_captions, render, sample_scene, WorldConfig};
//! use dicoflow::rng::Rng;
//!
//! let cfg = WorldConfig::default();
//! let mut rng = Rng::new(42);
//! let scene = sample_scene(&mut rng, &cfg);
//! let image = render(&scene, &cfg);
//! assert_eq!(image.dimensions(), (64, 64));
//! for caption in reference_captions(&scene, &mut rng, cfg.captions_per_image) {
//!     let verdict = judge(&scene, &caption);
//!     assert!(verdict.grammatical && verdict.precision == 1.0);
//! }
//! ```
//!
//! The caption language, informally (`[x]` optional, `x | y` choice):
//!
//! ```text
//! caption  := list(clause)                       "a red circle on the left"
//!           | "there is" list(clause)            "there is a big blue box above a green cross"
//!           | COUNT NOUN ":" list(listed)        "two shapes: a red circle and a blue box"
//!           | list(def-clause)                   "the red circle is left of the blue box"
//! list(c)  := c | c ("," c)* "and" c
//! clause   := a-np [position | relation a-np]
//! listed   := a-np [position]
//! def-clause := the-np "is" (position | relation the-np)
//! a-np     := ("a" | "an") [size] colour shape   (article agrees with the next word)
//! the-np   := "the" [size] colour shape
//! ```
//!
//! plus article and count agreement, one introduction per referent, at most
//! five referents and 25 words; the judge accepts exactly this language.

mod config;
mod corrupt;
mod grammar;
mod labels;
mod lexicon;
mod oracle;
mod parse;
mod render;
mod scene;

pub use config::{WorldConfig, MAX_OBJECTS};
pub use corrupt::{corrupt, Corruption};
pub use grammar::{
    caption, reference_captions, BARE_PROBABILITY, PARTIAL_PROBABILITY, RELATION_PROBABILITY,
    SIZE_PROBABILITY,
};
pub use labels::{scene_labels, SCENE_LABELS};
pub use lexicon::{detokenize, tokenize, vocabulary, MAX_CAPTION_WORDS};
pub use oracle::{judge, FactCounts, FactKind, Judgement, SEARCH_BUDGET};
pub use parse::is_grammatical;
pub use render::render;
pub use scene::{
    layout_is_valid, sample_scene, Background, Col, Colour, GradientDirection, Object, Relation,
    Row, Scene, Shape, Size, ALIGN_TOLERANCE, BORDER, GRID_MARGIN, LARGE_RADIUS, OBJECT_GAP,
    POSITION_STEPS, RELATION_MARGIN, SMALL_RADIUS,
};
