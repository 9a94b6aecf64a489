//! Learning curves: the loss and the accuracies of one run or several, read from their
//! `metrics.jsonl` and drawn with plotters as SVG and PNG — a run's `curves.svg`/`curves.png`,
//! redrawn after every epoch, and `fsct-train plot RUN_DIR...`, which overlays runs with a legend.
//!
//! Two panels side by side: the training loss per epoch (with VIC on, its cross-entropy part as a
//! lighter line), and the accuracies in percent — validation as a line with a point per epoch and
//! its 95% confidence interval as a band, training as a lighter line. One colour per run. Every
//! curve is one line through one point per epoch (an SVG `polyline`), so a reader (or a test) can
//! take the values back from the file. Text uses the embedded DejaVu Sans (its licence:
//! `assets/DejaVuSans-LICENSE`), so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::InputError;
use crate::outputs::{write_new_file, EpochMetrics, MetricsLine};

/// A run's SVG curves, in its output folder.
pub const SVG_NAME: &str = "curves.svg";
/// A run's PNG curves, in its output folder.
pub const PNG_NAME: &str = "curves.png";

/// The image size in pixels (both formats): two panels of 600 × 420.
const SIZE: (u32, u32) = (1200, 420);

/// Where a drawing goes: an SVG and a PNG of the same picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveFiles {
    /// The SVG file.
    pub svg: PathBuf,
    /// The PNG file.
    pub png: PathBuf,
}

impl CurveFiles {
    /// A run's `curves.svg` and `curves.png` in `dir`.
    pub fn in_folder(dir: &Path) -> Self {
        Self { svg: dir.join(SVG_NAME), png: dir.join(PNG_NAME) }
    }

    /// `stem.svg` and `stem.png` for `path` with or without one of those extensions
    /// (`plots/cub` and `plots/cub.svg` both give `plots/cub.svg` and `plots/cub.png`).
    pub fn beside(path: &Path) -> Self {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let stem = match ext.as_deref() {
            Some("svg" | "png") => path.with_extension(""),
            _ => path.to_path_buf(),
        };
        let with = |ext: &str| {
            let mut name = stem.clone().into_os_string();
            name.push(".");
            name.push(ext);
            PathBuf::from(name)
        };
        Self { svg: with("svg"), png: with("png") }
    }
}

/// One epoch of a run, as the curves show it (accuracies in percent, epochs from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Mean training loss (classification plus VIC).
    pub train_loss: f64,
    /// Its classification part, when the line gives it separately (VIC on).
    pub train_ce_loss: Option<f64>,
    /// Mean training accuracy (%).
    pub train_acc: f64,
    /// Validation accuracy (%).
    pub val_acc: f64,
    /// Its 95% confidence half-width (%).
    pub val_ci95: f64,
}

impl From<&EpochMetrics> for CurvePoint {
    fn from(m: &EpochMetrics) -> Self {
        Self {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_ce_loss: m.train_vic_loss.map(|_| m.train_ce_loss),
            train_acc: m.train_acc,
            val_acc: m.val_acc,
            val_ci95: m.val_ci95,
        }
    }
}

/// The curves of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// The legend's name of the run (its folder's name).
    pub label: String,
    /// Its epochs in order.
    pub points: Vec<CurvePoint>,
}

/// The curves of the run in `dir`, from its `metrics.jsonl`; the run is labelled with the folder's
/// name. Lines written before epochs counted from 1 (no `kind`: epochs from 0, training accuracy
/// as a fraction) are converted.
///
/// # Errors
/// An [`InputError`] (exit code 2) when `dir` has no `metrics.jsonl` or a line of it is not a
/// metrics line, naming the file and the line.
pub fn read_run(dir: &Path) -> Result<RunCurves> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        InputError::new(format!(
            "`{}`: cannot read it ({e}); pass run folders written by fsct-train (they hold metrics.jsonl)",
            path.display()
        ))
    })?;
    let label = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(RunCurves { label, points: parse_metrics(&text, &path)? })
}

/// The epoch points of a `metrics.jsonl` text (`source` names it in errors); test lines are
/// skipped.
///
/// # Errors
/// An [`InputError`] naming `source` and the line that is not a metrics line.
pub fn parse_metrics(text: &str, source: &Path) -> Result<Vec<CurvePoint>> {
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: String| {
            InputError::new(format!(
                "`{}` line {}: {why}; it is not a metrics line written by fsct-train",
                source.display(),
                i + 1
            ))
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if value.get("kind").is_some() {
            match serde_json::from_value::<MetricsLine>(value).map_err(|e| bad(e.to_string()))? {
                MetricsLine::Epoch(m) => points.push(CurvePoint::from(&m)),
                MetricsLine::Test(_) => {}
            }
        } else {
            points.push(legacy_point(&value).ok_or_else(|| bad("a field is missing".into()))?);
        }
    }
    Ok(points)
}

/// A line of the first format: `epoch` from 0, `train_acc` a fraction.
fn legacy_point(value: &serde_json::Value) -> Option<CurvePoint> {
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_f64);
    Some(CurvePoint {
        epoch: value.get("epoch")?.as_u64()? as usize + 1,
        train_loss: number("train_loss")?,
        train_ce_loss: None,
        train_acc: 100.0 * number("train_acc")?,
        val_acc: number("val_acc")?,
        val_ci95: number("val_ci95")?,
    })
}

/// Draws `runs` into `files` (both replaced atomically): one run in a run folder, several
/// overlaid for `fsct-train plot`.
///
/// # Errors
/// A file that cannot be written (an [`InputError`] naming it), or plotters failing to draw.
pub fn draw(runs: &[RunCurves], files: &CurveFiles) -> Result<()> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        render(&root, runs).map_err(|e| anyhow::anyhow!("drawing {}: {e}", files.svg.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("drawing {}: {e}", files.svg.display()))?;
    }
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        render(&root, runs).map_err(|e| anyhow::anyhow!("drawing {}: {e}", files.png.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("drawing {}: {e}", files.png.display()))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    write_new_file(&files.svg, svg.as_bytes(), true, "curves")?;
    write_new_file(&files.png, &png, true, "curves")?;
    Ok(())
}

/// Redraws the curves of the run in `dir` (after an epoch). A failure is logged, not returned:
/// the curves are a view of `metrics.jsonl`, never a reason to stop training.
pub fn redraw_run(dir: &Path, files: &CurveFiles) {
    if let Err(err) = read_run(dir).and_then(|run| draw(&[run], files)) {
        tracing::warn!("learning curves not drawn: {}", crate::error::render(&err));
    }
}

/// DejaVu Sans as plotters' `sans-serif` (once per process).
fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        let bytes = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            tracing::warn!("the embedded font could not be read: the curves have no text");
        }
    });
}

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The two panels.
fn render<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunCurves]) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let many = runs.len() > 1;
    let name = |run: &RunCurves, what: &str| {
        if many {
            format!("{} {what}", run.label)
        } else {
            what.to_string()
        }
    };
    let last = runs.iter().flat_map(|r| r.points.iter().map(|p| p.epoch)).max().unwrap_or(1);
    let epochs = 0.5..last as f64 + 0.5;

    // Loss.
    let losses = runs.iter().flat_map(|r| {
        r.points.iter().flat_map(|p| std::iter::once(p.train_loss).chain(p.train_ce_loss))
    });
    let mut chart = ChartBuilder::on(&left)
        .caption("Training loss", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(epochs.clone(), padded(losses, None))?;
    mesh(&mut chart, "loss", last)?;
    for (i, run) in runs.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> =
            run.points.iter().map(|p| (p.epoch as f64, p.train_loss)).collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name(run, "training loss"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        if run.points.iter().all(|p| p.train_ce_loss.is_some()) && !run.points.is_empty() {
            let light = colour.mix(0.45);
            let ce: Vec<(f64, f64)> = run
                .points
                .iter()
                .filter_map(|p| p.train_ce_loss.map(|l| (p.epoch as f64, l)))
                .collect();
            chart
                .draw_series(LineSeries::new(ce, light.stroke_width(2)))?
                .label(name(run, "cross-entropy part"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], light.stroke_width(2))
                });
        }
    }
    // A loss falls: the upper right is where its curves are not.
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    // Accuracies.
    let accuracies = runs.iter().flat_map(|r| {
        r.points.iter().flat_map(|p| [p.train_acc, p.val_acc - p.val_ci95, p.val_acc + p.val_ci95])
    });
    let mut chart = ChartBuilder::on(&right)
        .caption("Accuracy (%)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(epochs, padded(accuracies, Some((0.0, 100.0))))?;
    mesh(&mut chart, "accuracy (%)", last)?;
    for (i, run) in runs.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let at = |p: &CurvePoint, v: f64| (p.epoch as f64, v);
        // The band: upper edge left to right, lower edge back.
        let band: Vec<(f64, f64)> = run
            .points
            .iter()
            .map(|p| at(p, p.val_acc + p.val_ci95))
            .chain(run.points.iter().rev().map(|p| at(p, p.val_acc - p.val_ci95)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.18).filled())))?;
        let val: Vec<(f64, f64)> = run.points.iter().map(|p| at(p, p.val_acc)).collect();
        chart
            .draw_series(LineSeries::new(val.clone(), colour.stroke_width(2)))?
            .label(name(run, "validation (95% CI band)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(val.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        let light = colour.mix(0.45);
        let train: Vec<(f64, f64)> = run.points.iter().map(|p| at(p, p.train_acc)).collect();
        chart
            .draw_series(LineSeries::new(train, light.stroke_width(2)))?
            .label(name(run, "training"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], light.stroke_width(2)));
    }
    // Accuracies rise: the lower right is where their curves are not.
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Axes and grid: whole epochs only on the x axis (at most about 12 labels).
fn mesh<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, y: &str, last: usize) -> Drawn<DB> {
    let whole = |x: &f64| {
        if x.fract().abs() < 1e-9 && *x >= 1.0 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y)
        .x_labels((last + 1).min(12))
        .x_label_formatter(&whole)
        .light_line_style(WHITE)
        .draw()
}

/// The legend box at `position`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Drawn<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
}

/// A value range around `values` with 5% room each side (a unit wide when they are all equal),
/// clipped to `bounds`.
fn padded(values: impl Iterator<Item = f64>, bounds: Option<(f64, f64)>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    let (lo, hi) = (lo - pad, hi + pad);
    match bounds {
        Some((min, max)) => lo.max(min)..hi.min(max).max(lo.max(min) + 1.0),
        None => lo..hi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_gives_both_formats_whatever_the_extension() {
        for given in ["plots/cub", "plots/cub.svg", "plots/cub.PNG"] {
            let files = CurveFiles::beside(Path::new(given));
            assert_eq!(files.svg, PathBuf::from("plots/cub.svg"), "{given}");
            assert_eq!(files.png, PathBuf::from("plots/cub.png"), "{given}");
        }
        let files = CurveFiles::beside(Path::new("run.v2"));
        assert_eq!(files.svg, PathBuf::from("run.v2.svg"));
    }

    #[test]
    fn padded_leaves_room_and_keeps_within_bounds() {
        let r = padded([10.0, 30.0].into_iter(), None);
        assert!((r.start - 9.0).abs() < 1e-12 && (r.end - 31.0).abs() < 1e-12, "{r:?}");
        let r = padded([0.0, 100.0].into_iter(), Some((0.0, 100.0)));
        assert_eq!(r, 0.0..100.0);
        let r = padded([5.0].into_iter(), None);
        assert_eq!(r, 4.5..5.5);
        let r = padded(std::iter::empty(), None);
        assert!(r.start < r.end);
    }

    #[test]
    fn legacy_lines_count_epochs_from_one_and_accuracies_in_percent() {
        let text = r#"{"epoch":0,"train_loss":1.5,"train_acc":0.25,"val_acc":40.0,"val_ci95":2.0}"#;
        let points = parse_metrics(text, Path::new("m.jsonl")).unwrap();
        assert_eq!(
            points,
            vec![CurvePoint {
                epoch: 1,
                train_loss: 1.5,
                train_ce_loss: None,
                train_acc: 25.0,
                val_acc: 40.0,
                val_ci95: 2.0
            }]
        );
        let err = parse_metrics("{\"epoch\":0}\nnot json", Path::new("m.jsonl")).unwrap_err();
        let message = crate::error::render(&err);
        assert!(message.contains("`m.jsonl` line 1") && message.contains("missing"), "{message}");
    }
}
