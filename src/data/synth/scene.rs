//! Scenes: the ground truth behind each synthetic image, and their sampler.
//!
//! A scene is stored in normalised coordinates (`0..1` on both axes, `y`
//! pointing down) so it is independent of the rendered resolution. Every fact a
//! caption can state (grid cell, pairwise relation) is a pure function of the
//! stored scene, and the sampler only keeps layouts where each such fact is
//! visually unambiguous.

use serde::{Deserialize, Serialize};

use super::config::WorldConfig;
use crate::rng::Rng;

/// Half-extent of a small object (fraction of the image side): 7 px at 64 px.
pub const SMALL_RADIUS: f64 = 0.11;
/// Half-extent of a large object: 12.8 px at 64 px, so "large" is obvious.
pub const LARGE_RADIUS: f64 = 0.2;
/// Least distance between an object's box and the image border.
pub const BORDER: f64 = 0.02;
/// Least gap between the boxes of two objects, so they never touch.
pub const OBJECT_GAP: f64 = 0.04;
/// Least centre offset for a relation ("left of", "above", …) to hold.
pub const RELATION_MARGIN: f64 = 0.15;
/// Centre offsets below this count as "aligned"; offsets between this and
/// [`RELATION_MARGIN`] are never sampled, so a relation is either clearly true
/// or clearly false.
pub const ALIGN_TOLERANCE: f64 = 0.05;
/// Least distance between a centre and a 3×3 grid line, so the cell is clear.
pub const GRID_MARGIN: f64 = 0.04;
/// Centres lie on a grid of `1 / POSITION_STEPS`: such values print and parse
/// exactly in JSON, so a scene round-trips bit for bit.
pub const POSITION_STEPS: u32 = 1024;

/// Attempts to place one object before the whole layout is restarted.
const PLACE_ATTEMPTS: usize = 64;
/// Layout restarts before the sampler settles for one object fewer.
const LAYOUT_ATTEMPTS: usize = 32;

/// The outline of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// An axis-aligned filled square.
    Square,
    /// An upward-pointing isosceles triangle.
    Triangle,
    /// A square standing on a corner.
    Diamond,
    /// A plus sign with thick arms.
    Cross,
}

impl Shape {
    /// Every shape, in a fixed order.
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
    ];
}

/// The fill colour of an object: saturated, so it cannot be confused with the
/// muted, nearly grey backgrounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Pure-ish red.
    Red,
    /// Mid green.
    Green,
    /// Strong blue.
    Blue,
    /// Bright yellow.
    Yellow,
    /// Purple ("violet" in captions too).
    Purple,
    /// Orange, halfway between red and yellow in hue.
    Orange,
}

impl Colour {
    /// Every colour, in a fixed order.
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    /// The exact fill colour used by the renderer.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 170, 50],
            Colour::Blue => [30, 70, 225],
            Colour::Yellow => [240, 220, 30],
            Colour::Purple => [145, 45, 195],
            Colour::Orange => [250, 135, 20],
        }
    }
}

/// The size class of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Half-extent [`SMALL_RADIUS`].
    Small,
    /// Half-extent [`LARGE_RADIUS`].
    Large,
}

impl Size {
    /// Both sizes.
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// Half-extent of the object's bounding box, as a fraction of the image side.
    pub fn radius(self) -> f64 {
        match self {
            Size::Small => SMALL_RADIUS,
            Size::Large => LARGE_RADIUS,
        }
    }
}

/// Row of the 3×3 grid that holds an object's centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Row {
    /// `y < 1/3`.
    Top,
    /// `1/3 <= y < 2/3`.
    Middle,
    /// `y >= 2/3`.
    Bottom,
}

/// Column of the 3×3 grid that holds an object's centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Col {
    /// `x < 1/3`.
    Left,
    /// `1/3 <= x < 2/3`.
    Middle,
    /// `x >= 2/3`.
    Right,
}

/// A spatial relation from one object to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The subject's centre is at least [`RELATION_MARGIN`] left of the other's.
    LeftOf,
    /// The subject's centre is at least [`RELATION_MARGIN`] right of the other's.
    RightOf,
    /// The subject's centre is at least [`RELATION_MARGIN`] above the other's.
    Above,
    /// The subject's centre is at least [`RELATION_MARGIN`] below the other's.
    Below,
}

impl Relation {
    /// Every relation, in a fixed order.
    pub const ALL: [Relation; 4] = [
        Relation::LeftOf,
        Relation::RightOf,
        Relation::Above,
        Relation::Below,
    ];
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Outline.
    pub shape: Shape,
    /// Fill colour.
    pub colour: Colour,
    /// Size class.
    pub size: Size,
    /// Centre, normalised: 0 is the left edge, 1 the right edge.
    pub x: f64,
    /// Centre, normalised: 0 is the top edge, 1 the bottom edge.
    pub y: f64,
}

impl Object {
    /// Half-extent of the bounding box (normalised).
    pub fn radius(&self) -> f64 {
        self.size.radius()
    }

    /// Grid row of the centre.
    pub fn row(&self) -> Row {
        if self.y < 1.0 / 3.0 {
            Row::Top
        } else if self.y < 2.0 / 3.0 {
            Row::Middle
        } else {
            Row::Bottom
        }
    }

    /// Grid column of the centre.
    pub fn col(&self) -> Col {
        if self.x < 1.0 / 3.0 {
            Col::Left
        } else if self.x < 2.0 / 3.0 {
            Col::Middle
        } else {
            Col::Right
        }
    }

    /// Whether `self <relation> other` holds (e.g. `self` is left of `other`).
    pub fn holds(&self, relation: Relation, other: &Object) -> bool {
        match relation {
            Relation::LeftOf => other.x - self.x >= RELATION_MARGIN,
            Relation::RightOf => self.x - other.x >= RELATION_MARGIN,
            Relation::Above => other.y - self.y >= RELATION_MARGIN,
            Relation::Below => self.y - other.y >= RELATION_MARGIN,
        }
    }
}

/// Direction in which the background gradient runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientDirection {
    /// `from` at the left edge, `to` at the right edge.
    Horizontal,
    /// `from` at the top edge, `to` at the bottom edge.
    Vertical,
    /// `from` at the top-left corner, `to` at the bottom-right corner.
    Diagonal,
    /// `from` at the top-right corner, `to` at the bottom-left corner.
    AntiDiagonal,
}

/// A muted gradient with grey noise: varied enough that an evaluator cannot
/// key on a constant background, grey enough never to look like an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Background {
    /// Colour at the start of the gradient.
    pub from: [u8; 3],
    /// Colour at the end of the gradient.
    pub to: [u8; 3],
    /// Where the gradient runs.
    pub direction: GradientDirection,
    /// Amplitude of the per-pixel grey noise (added to all channels alike).
    pub noise: u8,
    /// Seed of the noise stream, so rendering is deterministic.
    pub noise_seed: u32,
}

/// Everything that is true of one synthetic image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// The objects, in sampling order (no other meaning).
    pub objects: Vec<Object>,
    /// The background behind them.
    pub background: Background,
}

impl Scene {
    /// The relations that hold from object `a` to object `b`, in
    /// [`Relation::ALL`] order (empty when `a == b` or an index is out of range).
    pub fn relations(&self, a: usize, b: usize) -> Vec<Relation> {
        match (self.objects.get(a), self.objects.get(b)) {
            (Some(oa), Some(ob)) if a != b => Relation::ALL
                .into_iter()
                .filter(|&r| oa.holds(r, ob))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The scene as compact JSON (the form stored next to each image).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a scene always serialises")
    }

    /// Reads a scene written by [`Scene::to_json`].
    pub fn from_json(json: &str) -> Result<Scene, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// Samples a scene: object count uniform in the configured range, attributes
/// uniform with no two objects sharing both shape and colour (so a colour and a
/// shape always name one object), and a layout obeying the margins above.
pub fn sample_scene(rng: &mut Rng, cfg: &WorldConfig) -> Scene {
    let (min, max) = cfg.object_range();
    let mut count = min + rng.index(max - min + 1);
    let background = sample_background(rng);
    loop {
        for _ in 0..LAYOUT_ATTEMPTS {
            if let Some(objects) = try_layout(rng, count) {
                return Scene {
                    objects,
                    background,
                };
            }
        }
        // A single object always fits on the first attempt, so this ends.
        count = count.saturating_sub(1).max(1);
    }
}

fn sample_background(rng: &mut Rng) -> Background {
    let endpoint = |rng: &mut Rng| {
        let level = 70 + rng.below(91) as i32; // 70..=160
        let mut c = [0u8; 3];
        for ch in &mut c {
            *ch = (level + rng.below(21) as i32 - 10) as u8; // tint of ±10
        }
        c
    };
    let from = endpoint(rng);
    let to = endpoint(rng);
    let direction = *rng.choose(&[
        GradientDirection::Horizontal,
        GradientDirection::Vertical,
        GradientDirection::Diagonal,
        GradientDirection::AntiDiagonal,
    ]);
    Background {
        from,
        to,
        direction,
        noise: rng.below(9) as u8,
        noise_seed: rng.next_u64() as u32,
    }
}

/// Places `count` objects one by one; `None` when one of them finds no spot.
fn try_layout(rng: &mut Rng, count: usize) -> Option<Vec<Object>> {
    let mut objects: Vec<Object> = Vec::with_capacity(count);
    for _ in 0..count {
        let (shape, colour) = sample_identity(rng, &objects);
        let size = *rng.choose(&Size::ALL);
        let r = size.radius();
        let mut placed = None;
        for _ in 0..PLACE_ATTEMPTS {
            let candidate = Object {
                shape,
                colour,
                size,
                x: sample_coordinate(rng, r),
                y: sample_coordinate(rng, r),
            };
            if objects.iter().all(|o| compatible(o, &candidate)) {
                placed = Some(candidate);
                break;
            }
        }
        objects.push(placed?);
    }
    Some(objects)
}

/// A (shape, colour) pair not used by any object yet.
fn sample_identity(rng: &mut Rng, objects: &[Object]) -> (Shape, Colour) {
    let free: Vec<(Shape, Colour)> = Shape::ALL
        .iter()
        .flat_map(|&s| Colour::ALL.iter().map(move |&c| (s, c)))
        .filter(|&(s, c)| !objects.iter().any(|o| o.shape == s && o.colour == c))
        .collect();
    *rng.choose(&free)
}

/// A centre coordinate for an object of half-extent `r`: inside the border and
/// at least [`GRID_MARGIN`] from both grid lines, on the `1/POSITION_STEPS` grid.
fn sample_coordinate(rng: &mut Rng, r: f64) -> f64 {
    let steps = POSITION_STEPS as f64;
    let lo = r + BORDER;
    let hi = 1.0 - r - BORDER;
    let cuts = [1.0 / 3.0, 2.0 / 3.0];
    // Allowed integer ranges (inclusive) between the excluded bands.
    let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(3);
    let mut start = lo;
    for cut in cuts.iter().copied().chain(std::iter::once(f64::INFINITY)) {
        let end = if cut.is_finite() {
            (cut - GRID_MARGIN).min(hi)
        } else {
            hi
        };
        let a = (start * steps).ceil() as u32;
        let b = (end * steps).floor() as u32;
        if a <= b {
            ranges.push((a, b));
        }
        if cut.is_finite() {
            start = start.max(cut + GRID_MARGIN);
        }
    }
    let total: u32 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let mut k = rng.below(total as u64) as u32;
    for (a, b) in ranges {
        let len = b - a + 1;
        if k < len {
            return (a + k) as f64 / steps;
        }
        k -= len;
    }
    unreachable!("k is below the total length of the ranges")
}

/// Whether two objects may share a scene: boxes apart by [`OBJECT_GAP`] and
/// centre offsets outside the ambiguous band on both axes.
fn compatible(a: &Object, b: &Object) -> bool {
    let dx = (a.x - b.x).abs();
    let dy = (a.y - b.y).abs();
    let reach = a.radius() + b.radius() + OBJECT_GAP;
    let separated = dx >= reach || dy >= reach;
    let clear = |d: f64| d <= ALIGN_TOLERANCE || d >= RELATION_MARGIN;
    separated && clear(dx) && clear(dy)
}

/// Whether a scene obeys every layout rule the sampler enforces (used by tests
/// and by readers that want to reject hand-edited scenes).
pub fn layout_is_valid(scene: &Scene) -> bool {
    let inside = |o: &Object| {
        let r = o.radius();
        let ok = |c: f64| {
            c - r >= BORDER - 1e-12
                && c + r <= 1.0 - BORDER + 1e-12
                && (c - 1.0 / 3.0).abs() >= GRID_MARGIN - 1e-12
                && (c - 2.0 / 3.0).abs() >= GRID_MARGIN - 1e-12
        };
        ok(o.x) && ok(o.y)
    };
    let unique = scene.objects.iter().enumerate().all(|(i, a)| {
        scene.objects[..i]
            .iter()
            .all(|b| (a.shape, a.colour) != (b.shape, b.colour))
    });
    unique
        && scene.objects.iter().all(inside)
        && scene
            .objects
            .iter()
            .enumerate()
            .all(|(i, a)| scene.objects[..i].iter().all(|b| compatible(a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_avoid_grid_lines_and_borders() {
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            for size in Size::ALL {
                let c = sample_coordinate(&mut rng, size.radius());
                assert!(c - size.radius() >= BORDER && c + size.radius() <= 1.0 - BORDER);
                assert!((c - 1.0 / 3.0).abs() >= GRID_MARGIN, "{c}");
                assert!((c - 2.0 / 3.0).abs() >= GRID_MARGIN, "{c}");
            }
        }
    }

    #[test]
    fn every_valid_pair_has_a_relation() {
        // Separation along one axis is at least two small radii plus the gap,
        // which exceeds the relation margin: no pair is relation-less.
        const { assert!(2.0 * SMALL_RADIUS + OBJECT_GAP >= RELATION_MARGIN) };
        let mut rng = Rng::new(9);
        let cfg = WorldConfig::default();
        for _ in 0..300 {
            let s = sample_scene(&mut rng, &cfg);
            for a in 0..s.objects.len() {
                for b in 0..s.objects.len() {
                    if a != b {
                        assert!(!s.relations(a, b).is_empty());
                    }
                }
            }
        }
    }
}
