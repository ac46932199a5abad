//! A chart as an SVG document: vector output that any browser or editor
//! renders, next to the PNG of the same chart. Lines ([`render`]) or
//! markers ([`render_scatter`]).

use std::fmt::Write as _;

use super::axis::{chart_axes, scatter_axes, Axis};
use super::png_chart::PALETTE;
use super::NamedSeries;

/// Render `series` (x = training step) on shared axes under `title`.
pub fn render(title: &str, series: &[NamedSeries]) -> String {
    let (x, y) = chart_axes(series, 5);
    draw(title, "step (batch)", series, x, y, false)
}

/// Render `series` as points (one circle per (x, y), one colour and legend
/// entry per series) under `title`, `x_title` naming the x axis; grey lines
/// mark x = 0 and y = 0 where they lie inside the axes.
pub fn render_scatter(title: &str, x_title: &str, series: &[NamedSeries]) -> String {
    let (x, y) = scatter_axes(series, 5);
    draw(title, x_title, series, x, y, true)
}

fn draw(
    title: &str,
    x_title: &str,
    series: &[NamedSeries],
    x: Axis,
    y: Axis,
    points: bool,
) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 36.0;
    const B: f64 = 40.0;
    let sx = |v: f64| L + x.fraction(v) * (W - L - R);
    let sy = |v: f64| H - B - y.fraction(v) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for t in y.ticks() {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/>"##,
            W - R,
            sy(t)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            L - 6.0,
            sy(t) + 4.0,
            y.label(t)
        );
    }
    for t in x.ticks() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            sx(t),
            H - B + 16.0,
            x.label(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="M{L} {T} V{} H{}" fill="none" stroke="#333"/>"##,
        H - B,
        W - R
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 6.0,
        escape(x_title)
    );
    if points {
        if x.lo < 0.0 && x.hi > 0.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{T}" y2="{1}" stroke="#aaa"/>"##,
                sx(0.0),
                H - B
            );
        }
        if y.lo < 0.0 && y.hi > 0.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{L}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#aaa"/>"##,
                W - R,
                sy(0.0)
            );
        }
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let [r, g, b] = PALETTE[i % PALETTE.len()];
        let colour = format!("#{r:02x}{g:02x}{b:02x}");
        if points {
            for &(a, v) in p {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}"/>"#,
                    sx(a),
                    sy(v)
                );
            }
        } else {
            let path: Vec<String> = p
                .iter()
                .enumerate()
                .map(|(j, &(a, v))| {
                    format!(
                        "{}{:.1} {:.1}",
                        if j == 0 { "M" } else { "L" },
                        sx(a),
                        sy(v)
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                path.join(" ")
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            L + 10.0,
            T + 14.0 * (i + 1) as f64,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_path_per_series_and_escapes_names() {
        let series = vec![
            ("a<b".to_owned(), vec![(0.0, 1.0), (1.0, 2.0)]),
            ("c".to_owned(), vec![(0.0, 2.0), (1.0, 1.0)]),
        ];
        let svg = render("loss & more", &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("stroke-width=\"1.5\"").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.contains("loss &amp; more"));
        assert!(svg.contains("#1f77b4") && svg.contains("#d62728"));
    }

    #[test]
    fn scatter_has_one_circle_per_point_and_zero_lines() {
        let series = vec![
            ("DiCO".to_owned(), vec![(-1.0, 0.1), (2.0, 0.2)]),
            ("SCST".to_owned(), vec![(10.0, -0.1)]),
        ];
        let svg = render_scatter("gain vs loss", "points lost", &series);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("stroke-width=\"1.5\"").count(), 0);
        assert_eq!(svg.matches("stroke=\"#aaa\"").count(), 2);
        assert!(svg.contains(">points lost</text>"));
    }
}
