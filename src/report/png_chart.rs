//! A chart as a raster image (written as PNG): title, legend, axes with
//! round tick labels, and one anti-aliased line per series ([`render`]) or
//! one marker per point ([`render_scatter`]).

use image::RgbImage;

use super::axis::{chart_axes, scatter_axes, Axis};
use super::canvas::{text_width, Align, Canvas, Colour, PixelRect, GLYPH};
use super::NamedSeries;

/// Width of a chart in pixels.
pub const WIDTH: u32 = 960;
/// Height of a chart in pixels.
pub const HEIGHT: u32 = 540;
/// Background colour of a chart.
pub const BACKGROUND: Colour = [255, 255, 255];
/// Line colour of the i-th series (cycling), also used by the SVG charts.
pub const PALETTE: [Colour; 6] = [
    [0x1f, 0x77, 0xb4],
    [0xd6, 0x27, 0x28],
    [0x2c, 0xa0, 0x2c],
    [0xff, 0x7f, 0x0e],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
];

const INK: Colour = [0x33, 0x33, 0x33];
const GRID: Colour = [0xe6, 0xe6, 0xe6];
const TITLE_SCALE: u32 = 3;
const LABEL_SCALE: u32 = 2;
const TICKS: usize = 5;
const LINE_WIDTH: f64 = 2.5;
const MARGIN: u32 = 16;
const SWATCH: u32 = 28;
/// Side of a scatter marker in pixels.
const MARKER: u32 = 11;
const ZERO_LINE: Colour = [0xa0, 0xa0, 0xa0];

/// A rendered chart and where its data area lies, for callers that inspect it.
#[derive(Debug)]
pub struct Chart {
    pub image: RgbImage,
    /// The pixels the axes span: the first tick at `left`/`bottom`, the last at
    /// `right`/`top`.
    pub plot: PixelRect,
}

/// Render `series` (x = training step) on shared axes under `title`.
pub fn render(title: &str, series: &[NamedSeries]) -> Chart {
    let (x, y) = chart_axes(series, TICKS);
    draw(title, "step (batch)", series, x, y, false)
}

/// Render `series` as points (one marker per (x, y), one colour and legend
/// entry per series) under `title`, `x_title` naming the x axis; grey lines
/// mark x = 0 and y = 0 where they lie inside the axes.
pub fn render_scatter(title: &str, x_title: &str, series: &[NamedSeries]) -> Chart {
    let (x, y) = scatter_axes(series, TICKS);
    draw(title, x_title, series, x, y, true)
}

fn draw(
    title: &str,
    x_title: &str,
    series: &[NamedSeries],
    x: Axis,
    y: Axis,
    points: bool,
) -> Chart {
    let x_labels: Vec<(f64, String)> = x.ticks().into_iter().map(|t| (t, x.label(t))).collect();
    let y_labels: Vec<(f64, String)> = y.ticks().into_iter().map(|t| (t, y.label(t))).collect();
    let line_h = GLYPH * LABEL_SCALE;

    let mut canvas = Canvas::new(WIDTH, HEIGHT, BACKGROUND);
    let title_h = GLYPH * TITLE_SCALE;
    canvas.text(
        (WIDTH / 2) as i64,
        MARGIN as i64,
        title,
        TITLE_SCALE,
        INK,
        Align::Centre,
    );

    // Legend: rows of swatch + name under the title, wrapped to the width.
    let mut legend_y = MARGIN + title_h + MARGIN / 2;
    let mut legend_x = MARGIN * 4;
    for (i, (name, _)) in series.iter().enumerate() {
        let entry_w = SWATCH + 8 + text_width(name, LABEL_SCALE) + 2 * MARGIN;
        if legend_x + entry_w > WIDTH - MARGIN && legend_x > MARGIN * 4 {
            legend_x = MARGIN * 4;
            legend_y += line_h + 6;
        }
        let colour = PALETTE[i % PALETTE.len()];
        let mid = (legend_y + line_h / 2) as f64;
        let all = PixelRect {
            left: 0,
            top: 0,
            right: WIDTH,
            bottom: HEIGHT,
        };
        if points {
            let c = legend_x + SWATCH / 2;
            canvas.fill(marker(c as f64, mid, all), colour);
        } else {
            let swatch = [(legend_x as f64, mid), ((legend_x + SWATCH) as f64, mid)];
            canvas.polyline(&swatch, LINE_WIDTH + 1.0, colour, all);
        }
        let name_x = (legend_x + SWATCH + 8) as i64;
        canvas.text(name_x, legend_y as i64, name, LABEL_SCALE, INK, Align::Left);
        legend_x += entry_w;
    }

    let widest_y_label = y_labels
        .iter()
        .map(|(_, l)| text_width(l, LABEL_SCALE))
        .max();
    let last_x_label = x_labels
        .last()
        .map_or(0, |(_, l)| text_width(l, LABEL_SCALE));
    let plot = PixelRect {
        left: MARGIN + widest_y_label.unwrap_or(0) + 10,
        top: legend_y + line_h + MARGIN + line_h / 2,
        right: WIDTH - MARGIN - last_x_label / 2,
        bottom: HEIGHT - MARGIN - 2 * line_h - 14,
    };
    let px = |v: f64| plot.left as f64 + x.fraction(v) * plot.width() as f64;
    let py = |v: f64| plot.bottom as f64 - y.fraction(v) * plot.height() as f64;

    for (t, label) in &y_labels {
        let row = (py(*t).round() as u32).min(plot.bottom);
        let grid = PixelRect {
            left: plot.left,
            top: row,
            right: plot.right,
            bottom: row + 1,
        };
        canvas.fill(grid, GRID);
        let label_y = row as i64 - (line_h / 2) as i64;
        canvas.text(
            (plot.left - 10) as i64,
            label_y,
            label,
            LABEL_SCALE,
            INK,
            Align::Right,
        );
    }
    for (t, label) in &x_labels {
        let col = (px(*t).round() as u32).min(plot.right);
        let grid = PixelRect {
            left: col,
            top: plot.top,
            right: col + 1,
            bottom: plot.bottom,
        };
        canvas.fill(grid, GRID);
        let label_y = (plot.bottom + 8) as i64;
        canvas.text(col as i64, label_y, label, LABEL_SCALE, INK, Align::Centre);
    }
    let axis_title_y = (HEIGHT - MARGIN - line_h) as i64;
    let centre = ((plot.left + plot.right) / 2) as i64;
    canvas.text(
        centre,
        axis_title_y,
        x_title,
        LABEL_SCALE,
        INK,
        Align::Centre,
    );

    // The frame spans one pixel past the last tick so that it lies on it.
    let frame = PixelRect {
        bottom: plot.bottom + 1,
        right: plot.right + 1,
        ..plot
    };
    canvas.outline(frame, INK);
    if points {
        if x.lo < 0.0 && x.hi > 0.0 {
            let col = px(0.0).round() as u32;
            let line = PixelRect {
                left: col,
                right: col + 1,
                top: plot.top + 1,
                bottom: plot.bottom,
            };
            canvas.fill(line, ZERO_LINE);
        }
        if y.lo < 0.0 && y.hi > 0.0 {
            let row = py(0.0).round() as u32;
            let line = PixelRect {
                left: plot.left + 1,
                right: plot.right,
                top: row,
                bottom: row + 1,
            };
            canvas.fill(line, ZERO_LINE);
        }
    }
    for (i, (_, p)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pixels: Vec<(f64, f64)> = p.iter().map(|&(a, b)| (px(a), py(b))).collect();
        if points {
            for (a, b) in pixels {
                canvas.fill(marker(a, b, frame), colour);
            }
        } else {
            canvas.polyline(&pixels, LINE_WIDTH, colour, frame);
        }
    }
    Chart {
        image: canvas.into_image(),
        plot,
    }
}

/// The square marker centred on (x, y), clipped to `clip`.
fn marker(x: f64, y: f64, clip: PixelRect) -> PixelRect {
    let half = (MARKER / 2) as f64;
    let at = |v: f64, lo: u32, hi: u32| (v.round().max(lo as f64) as u32).min(hi);
    PixelRect {
        left: at(x - half, clip.left, clip.right),
        right: at(x + half + 1.0, clip.left, clip.right),
        top: at(y - half, clip.top, clip.bottom),
        bottom: at(y + half + 1.0, clip.top, clip.bottom),
    }
}
