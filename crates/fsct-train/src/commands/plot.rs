//! `fsct-train plot RUN_DIR... [--output PATH]`: the learning curves of several runs overlaid
//! (one colour and one legend entry per run), as PATH.svg and PATH.png.

use anyhow::Result;
use fsct_train::cli::PlotArgs;
use fsct_train::curves::{draw, read_run, CurveFiles};
use fsct_train::error::InputError;

/// Reads every run's `metrics.jsonl`, then draws.
///
/// # Errors
/// A folder without `metrics.jsonl` or with a line that is not a metrics line, an output file
/// that exists without `--overwrite` (all exit code 2).
pub fn plot(args: &PlotArgs) -> Result<()> {
    let files = CurveFiles::beside(&args.output);
    for path in [&files.svg, &files.png] {
        if path.exists() && !args.overwrite {
            return Err(InputError::new(format!(
                "--output `{}` already exists; pass --overwrite to replace it, or choose another --output",
                path.display()
            ))
            .into());
        }
    }
    let mut runs = args.runs.iter().map(|dir| read_run(dir)).collect::<Result<Vec<_>>>()?;
    // Runs in folders of the same name (`a/run`, `b/run`) are named by their paths instead.
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for (run, dir) in runs.iter_mut().zip(&args.runs) {
        if labels.iter().filter(|l| **l == run.label).count() > 1 {
            run.label = dir.display().to_string();
        }
    }
    for run in runs.iter().filter(|r| r.points.is_empty()) {
        tracing::warn!(run = %run.label, "no epoch finished yet: nothing to draw for it");
    }
    draw(&runs, &files)?;
    println!("wrote {} and {}", files.svg.display(), files.png.display());
    Ok(())
}
