//! `dicoflow report`: PNG charts of every logged metric, the markdown summary
//! that links them, and what happens with logs that cannot be charted.

mod common;

use std::path::{Path, PathBuf};

use dicoflow::report::png_chart::{self, BACKGROUND, HEIGHT, PALETTE, WIDTH};
use dicoflow::report::{write_report, NamedSeries};

const METRICS: &str = "metrics.jsonl";

/// A log line as the training stages write it.
fn line(t: usize, metrics: &str) -> String {
    format!("{{\"time\":{t},\"samples\":16,\"metrics\":{{{metrics}}}}}\n")
}

fn write_log(dir: &Path, lines: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(METRICS), lines).unwrap();
}

/// Two phases like the demo's: a rising reward and a falling loss in each,
/// at different rates so that neither hides the other.
fn two_phase_run() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    for (phase, slope) in [("dico", 0.002), ("scst", 0.001)] {
        let mut log = String::new();
        for t in 0..40 {
            let reward = 1.5 + slope * t as f64;
            let loss = 0.7 - 5.0 * slope * t as f64;
            log += &line(
                t,
                &format!("\"evaluator/mean\":{reward},\"train/loss\":{loss}"),
            );
        }
        log += "{\"summary\":{\"batches\":40}}\n";
        write_log(&run.join(phase), &log);
    }
    (tmp, run)
}

fn close_to(p: [u8; 3], c: [u8; 3]) -> bool {
    p.iter()
        .zip(&c)
        .all(|(&a, &b)| (a as i32 - b as i32).abs() <= 24)
}

/// For each column of the plot area, the topmost row drawn in `colour`.
fn topmost_rows(chart: &png_chart::Chart, colour: [u8; 3]) -> Vec<(u32, u32)> {
    let p = chart.plot;
    (p.left + 1..p.right)
        .filter_map(|x| {
            (p.top + 1..p.bottom)
                .find(|&y| close_to(chart.image.get_pixel(x, y).0, colour))
                .map(|y| (x, y))
        })
        .collect()
}

#[test]
fn every_metric_gets_a_png_chart_linked_from_the_summary() {
    let (_tmp, run) = two_phase_run();
    let report = write_report(&run).unwrap();
    let metrics: Vec<&str> = report.png.keys().map(String::as_str).collect();
    assert_eq!(metrics, ["evaluator/mean", "train/loss"]);
    let summary = std::fs::read_to_string(&report.summary).unwrap();
    for (metric, file) in [
        ("evaluator/mean", "evaluator_mean.png"),
        ("train/loss", "train_loss.png"),
    ] {
        let path = &report.png[metric];
        assert_eq!(path, &run.join("report").join(file));
        let decoded = image::open(path).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (WIDTH, HEIGHT));
        // Both phases are drawn, each in its own colour.
        for colour in &PALETTE[..2] {
            let drawn = decoded.pixels().filter(|p| p.0 == *colour).count();
            assert!(drawn > 200, "{file}: only {drawn} pixels of {colour:?}");
        }
        assert!(
            summary.contains(&format!("![{metric}]({file})")),
            "{summary}"
        );
        assert!(report.svg[metric].is_file());
    }
    // Independently: dico's loss is 0.7 − 0.01 t over t = 0..39; last 10% = t 36..39.
    let tail = (36..40).map(|t| 0.7 - 0.01 * t as f64).sum::<f64>() / 4.0;
    let row = format!("| dico | train/loss | 40 | 0.7000 | {tail:.4} | 0.3100 | 0.7000 |");
    assert!(summary.contains(&row), "{row} not in\n{summary}");
    assert!(!summary.contains("Left out"), "{summary}");
}

#[test]
fn a_rising_series_is_drawn_rising_left_to_right_where_the_axes_put_it() {
    // y = 1 + 0.9 t for t in 0..=20: the step axis spans 0..20 and the value
    // axis, with its small margin, rounds to 0..20 as well; so the line runs
    // from 1/20 to 19/20 of the plot height, left to right.
    let series: Vec<NamedSeries> = vec![(
        "run".into(),
        (0..=20).map(|t| (t as f64, 1.0 + 0.9 * t as f64)).collect(),
    )];
    let chart = png_chart::render("rising", &series);
    let p = chart.plot;
    let rows = topmost_rows(&chart, PALETTE[0]);
    assert!(
        rows.len() as u32 >= p.width() * 95 / 100,
        "line has gaps: {} columns",
        rows.len()
    );
    for &(x, y) in &rows {
        let along = (x as f64 + 0.5 - p.left as f64) / p.width() as f64;
        let value = 1.0 + 18.0 * along;
        let expected = p.bottom as f64 - value / 20.0 * p.height() as f64;
        assert!(
            (y as f64 - expected).abs() <= 3.0,
            "column {x}: row {y}, expected {expected:.1}"
        );
    }
    for w in rows.windows(2) {
        assert!(
            w[1].1 <= w[0].1,
            "the line falls between columns {} and {}",
            w[0].0,
            w[1].0
        );
    }
    // Axis labels and the title are drawn outside the plot area.
    let inked = |x0: u32, x1: u32, y0: u32, y1: u32| {
        (y0..y1).any(|y| (x0..x1).any(|x| chart.image.get_pixel(x, y).0 != BACKGROUND))
    };
    assert!(inked(0, p.left - 2, p.top, p.bottom), "no y tick labels");
    assert!(
        inked(p.left, p.right, p.bottom + 2, HEIGHT),
        "no x tick labels"
    );
    assert!(inked(0, WIDTH, 0, p.top - 2), "no title or legend");
}

#[test]
fn a_falling_series_and_a_rising_one_keep_their_own_colours() {
    let falling: Vec<(f64, f64)> = (0..50).map(|t| (t as f64, 1.0 - 0.01 * t as f64)).collect();
    let rising: Vec<(f64, f64)> = (0..50).map(|t| (t as f64, 0.5 + 0.01 * t as f64)).collect();
    let chart = png_chart::render("two", &[("a".into(), falling), ("b".into(), rising)]);
    let mean_row =
        |rows: &[(u32, u32)]| rows.iter().map(|r| r.1 as f64).sum::<f64>() / rows.len() as f64;
    let quarter = chart.plot.width() / 4;
    for (colour, falls) in [(PALETTE[0], true), (PALETTE[1], false)] {
        let rows = topmost_rows(&chart, colour);
        let left: Vec<_> = rows
            .iter()
            .copied()
            .filter(|r| r.0 < chart.plot.left + quarter)
            .collect();
        let right: Vec<_> = rows
            .iter()
            .copied()
            .filter(|r| r.0 > chart.plot.right - quarter)
            .collect();
        assert!(
            !left.is_empty() && !right.is_empty(),
            "{colour:?} not drawn at both ends"
        );
        // Rows grow downwards: a falling series ends lower (larger row).
        assert_eq!(mean_row(&right) > mean_row(&left), falls, "{colour:?}");
    }
}

#[test]
fn logs_without_metrics_are_an_error_or_a_counted_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Nothing logged yet in any run: an error that says what to do.
    write_log(&run.join("xe"), "{\"summary\":{\"batches\":0}}\n");
    let err = write_report(&run).unwrap_err().to_string();
    assert!(
        err.contains("no per-step metrics") && err.contains("at least one step"),
        "{err}"
    );
    // One empty run beside a good one, and values that are not numbers: skipped and counted.
    let mut log = String::new();
    for t in 0..5 {
        log += &line(
            t,
            &format!(
                "\"train/loss\":{},\"kl\":null,\"phase\":\"warmup\"",
                1.0 / (t + 1) as f64
            ),
        );
    }
    write_log(&run.join("dico"), &log);
    let report = write_report(&run).unwrap();
    assert_eq!(report.empty_runs, ["xe"]);
    assert_eq!(report.non_numeric, 10);
    assert_eq!(report.png.keys().collect::<Vec<_>>(), ["train/loss"]);
    let summary = std::fs::read_to_string(&report.summary).unwrap();
    assert!(
        summary.contains("runs with no per-step metrics yet: xe"),
        "{summary}"
    );
    assert!(
        summary.contains("10 non-numeric metric values"),
        "{summary}"
    );
}

#[test]
fn missing_or_malformed_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = write_report(&tmp.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("not a folder"),
        "{err}"
    );
    let err = write_report(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no metrics.jsonl"), "{err}");
    write_log(
        &tmp.path().join("dico"),
        &(line(0, "\"train/loss\":1") + "{\"time\":1,\"metr"),
    );
    let err = write_report(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn the_command_writes_charts_and_reports_bad_folders() {
    let (_tmp, run) = two_phase_run();
    let out = common::dicoflow_command()
        .arg("report")
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wrote 2 charts"), "{stdout}");
    assert!(run.join("report/summary.md").is_file());
    let out = common::dicoflow_command()
        .arg("report")
        .arg(run.join("missing"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not a folder"),
        "{stderr}"
    );
}

#[test]
fn validation_curves_are_charted_and_their_bookkeeping_only_tabled() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("xe");
    let mut log = String::new();
    for t in 0..10 {
        let mut m = format!("\"train/loss\":{}", 1.0 / (t + 1) as f64);
        if t % 3 == 0 {
            m += &format!(
                ",\"val/CIDEr\":{},\"val/step\":{t},\"val/images\":200,\"val/skipped\":0",
                0.1 * t as f64
            );
        }
        log += &line(t, &m);
    }
    write_log(&run, &log);
    let report = write_report(&run).unwrap();
    assert!(report.png.contains_key("val/CIDEr"));
    for bookkeeping in ["val/step", "val/images", "val/skipped"] {
        assert!(
            !report.png.contains_key(bookkeeping),
            "{bookkeeping} charted"
        );
    }
    let summary = std::fs::read_to_string(&report.summary).unwrap();
    assert!(summary.contains("| val/CIDEr | 4 |"), "{summary}");
    assert!(summary.contains("| val/step | 4 |"), "{summary}");
}
