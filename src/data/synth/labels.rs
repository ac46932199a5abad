//! Scene labels: which facts of position a scene holds, as a multi-hot
//! vector, the targets of the image tower's supervised pre-training
//! (`pretrain_image_tower`, [`crate::train::image_tower`]).
//!
//! For every object, three labels are on: (grid cell of its centre, colour),
//! (cell, shape) and (cell, size), the cell one of the 3×3 grid's
//! ([`Object::row`], [`Object::col`]). These are the facts a caption's
//! position words ("on the left", "at the top") and, through two objects'
//! cells, most of its relations state; a tower that predicts them has learnt
//! where each thing is, which contrastive training on this world's captions
//! alone does not teach it (docs/training.md, "Why the evaluator cannot
//! localise").

use super::scene::{Col, Colour, Object, Row, Scene, Shape, Size};

/// Cells of the position grid.
const CELLS: usize = 9;
/// Labels per cell: one per colour, shape and size.
const PER_CELL: usize = Colour::ALL.len() + Shape::ALL.len() + Size::ALL.len();
/// Length of [`scene_labels`]' vector: 9 × (6 + 5 + 2) = 117.
pub const SCENE_LABELS: usize = CELLS * PER_CELL;

/// The multi-hot labels of `scene`, `[SCENE_LABELS]` of 0.0 / 1.0: index
/// `cell × 13 + k` where `cell = 3 × row + column` (row 0 the top, column 0
/// the left) and `k` is the colour (0–5, [`Colour::ALL`] order), 6 + the
/// shape (0–4, [`Shape::ALL`] order) or 11 + the size (0–1, [`Size::ALL`]).
pub fn scene_labels(scene: &Scene) -> Vec<f32> {
    let mut labels = vec![0.0; SCENE_LABELS];
    for object in &scene.objects {
        let base = cell(object) * PER_CELL;
        let colour = position(&Colour::ALL, object.colour);
        let shape = Colour::ALL.len() + position(&Shape::ALL, object.shape);
        let size = Colour::ALL.len() + Shape::ALL.len() + position(&Size::ALL, object.size);
        for k in [colour, shape, size] {
            labels[base + k] = 1.0;
        }
    }
    labels
}

/// The grid cell of `object`'s centre, 0–8 in reading order.
fn cell(object: &Object) -> usize {
    let row = match object.row() {
        Row::Top => 0,
        Row::Middle => 1,
        Row::Bottom => 2,
    };
    let col = match object.col() {
        Col::Left => 0,
        Col::Middle => 1,
        Col::Right => 2,
    };
    3 * row + col
}

/// Index of `x` in `all` (every variant is listed there).
fn position<T: PartialEq>(all: &[T], x: T) -> usize {
    all.iter().position(|a| *a == x).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{sample_scene, WorldConfig};
    use crate::rng::Rng;

    #[test]
    fn every_object_turns_on_its_three_labels_and_nothing_else_is_on() {
        let cfg = WorldConfig::default();
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let scene = sample_scene(&mut rng, &cfg);
            let labels = scene_labels(&scene);
            assert_eq!(labels.len(), SCENE_LABELS);
            let mut expected = vec![0.0f32; SCENE_LABELS];
            for o in &scene.objects {
                let row = (o.y * 3.0).floor().min(2.0) as usize;
                let col = (o.x * 3.0).floor().min(2.0) as usize;
                let base = (3 * row + col) * 13;
                expected[base + Colour::ALL.iter().position(|c| *c == o.colour).unwrap()] = 1.0;
                expected[base + 6 + Shape::ALL.iter().position(|s| *s == o.shape).unwrap()] = 1.0;
                expected[base + 11 + Size::ALL.iter().position(|s| *s == o.size).unwrap()] = 1.0;
            }
            assert_eq!(labels, expected, "{scene:?}");
        }
    }
}
