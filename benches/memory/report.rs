//! The markdown tables (columns as the memory guide's), the header naming the machine, and where
//! the report is written.

use std::path::PathBuf;

use crate::measure::{Measured, Steps};

/// The Burn release the workspace pins (`=0.21.0` in the root Cargo.toml).
pub const BURN_VERSION: &str = "0.21.0";

/// A measured (or failed) configuration.
pub struct Row {
    pub name: &'static str,
    pub note: String,
    pub result: Result<Measured, String>,
    /// The memory planner's prediction (`fsct_train::plan`; CPU rows), when made.
    pub predicted: Option<Result<Predicted, String>>,
}

/// What the memory planner predicted for a row's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Predicted {
    /// The step's peak above its start (the "peak memory" column's measure).
    pub above_start: u64,
    /// Its peak in all: parameters, AdamW's moments, the episode and the step.
    pub total: u64,
}

/// What the header says about the run.
pub struct RunInfo {
    pub device: String,
    pub image_size: usize,
    pub n_query: usize,
    pub steps: Steps,
    pub quick: bool,
    pub load_before: String,
}

pub fn header(info: &RunInfo) -> String {
    let profile = if cfg!(debug_assertions) {
        "dev profile (debug assertions on)"
    } else {
        "optimised (bench) profile"
    };
    format!(
        "Measured {} UTC on {}; {}.\n\
         Burn {BURN_VERSION}, {profile}{}. FS-CT cosine, 5-way 5-shot {} queries ({} images per episode) at {} px, \
         random-normal episodes, reference transformer defaults (depth 1, 8 heads × 64, FFN 512), AdamW; \
         ResNets trained end to end. {} warm-up + {} measured training steps per configuration, each on a fresh model; \
         load average before: {}, after: {}.\n",
        today(),
        info.device,
        threads(),
        if info.quick { ", quick mode (CI: proves the bench runs, the figures mean little)" } else { "" },
        info.n_query,
        5 * (5 + info.n_query),
        info.image_size,
        info.steps.warmup,
        info.steps.measured,
        info.load_before,
        load_average(),
    )
}

/// The CPU table: peak heap bytes from the counting allocator.
pub fn cpu_table(title: &str, rows: &[Row]) -> String {
    let base = rows.first().and_then(|r| r.result.as_ref().ok());
    let mut out = format!(
        "\n### {title}\n\n\
         | Configuration | median step (s) | time vs baseline | CPU time (s) | CPU time vs baseline | peak memory (MiB) | predicted (MiB) | predicted / measured | memory vs baseline | heap peak in all (MiB) | heap peak vs baseline | note |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for row in rows {
        match &row.result {
            Ok(m) => out.push_str(&format!(
                "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.name,
                m.median_seconds,
                ratio(m.median_seconds, base.map(|b| b.median_seconds)),
                m.median_cpu_seconds.map_or("n/a".into(), |s| format!("{s:.2}")),
                ratio(
                    m.median_cpu_seconds.unwrap_or(f64::NAN),
                    base.and_then(|b| b.median_cpu_seconds)
                ),
                mib(m.memory.above_start),
                match &row.predicted {
                    Some(Ok(p)) => mib(p.above_start),
                    Some(Err(_)) => "failed".into(),
                    None => "n/a".into(),
                },
                match &row.predicted {
                    Some(Ok(p)) if m.memory.above_start > 0 => {
                        format!("{:.3}", p.above_start as f64 / m.memory.above_start as f64)
                    }
                    _ => "n/a".into(),
                },
                ratio(m.memory.above_start as f64, base.map(|b| b.memory.above_start as f64)),
                mib(m.memory.absolute),
                ratio(m.memory.absolute as f64, base.map(|b| b.memory.absolute as f64)),
                note(row, m),
            )),
            Err(why) => out.push_str(&format!(
                "| {} | failed | | | | | | | | | | {} |\n",
                row.name,
                why.replace('|', "/")
            )),
        }
    }
    out
}

/// The GPU table: the allocator's bytes in use and reserved, sampled after the backward pass,
/// and the card's used memory from nvidia-smi.
#[cfg_attr(not(any(feature = "cuda", feature = "vulkan")), allow(dead_code))]
pub fn gpu_table(title: &str, rows: &[Row]) -> String {
    let base = rows.first().and_then(|r| r.result.as_ref().ok());
    let mut out = format!(
        "\n### {title}\n\n\
         | Configuration | median step (s) | time vs baseline | peak memory in use (MiB) | memory vs baseline | above step start (MiB) | reserved (MiB) | nvidia-smi used (MiB) | note |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for row in rows {
        match &row.result {
            Ok(m) => out.push_str(&format!(
                "| {} | {:.3} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.name,
                m.median_seconds,
                ratio(m.median_seconds, base.map(|b| b.median_seconds)),
                mib(m.memory.absolute),
                ratio(m.memory.absolute as f64, base.map(|b| b.memory.absolute as f64)),
                mib(m.memory.above_start),
                m.memory.reserved.map_or("n/a".into(), mib),
                m.memory.nvml.map_or("n/a".into(), mib),
                note(row, m),
            )),
            Err(why) => out.push_str(&format!(
                "| {} | failed | | | | | | | {} |\n",
                row.name,
                why.replace('|', "/")
            )),
        }
    }
    out
}

fn note(row: &Row, m: &Measured) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !row.note.is_empty() {
        parts.push(row.note.clone());
    }
    if m.extra_warmup > 0 {
        parts.push(format!(
            "{} extra warm-up step(s) until the loss scale stopped overflowing",
            m.extra_warmup
        ));
    }
    if let Some(scale) = m.loss_scale {
        parts.push(format!("loss scale {scale}"));
    }
    if m.skipped_steps > 0 {
        parts.push(format!(
            "{} measured step(s) skipped by the loss scaler (no optimizer update)",
            m.skipped_steps
        ));
    }
    parts.push(format!("last loss {:.4}", m.last_loss));
    parts.join("; ")
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 100.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.1}")
    }
}

fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 && value.is_finite() => format!("{:.2}×", value / b),
        _ => "n/a".into(),
    }
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn threads() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var("RAYON_NUM_THREADS") {
        Ok(r) => format!("{n} hardware threads, RAYON_NUM_THREADS={r}"),
        Err(_) => format!("{n} threads"),
    }
}

/// The 1-minute load average: other work on the machine slows the steps down.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into())
}

/// Today's date (UTC), from the system clock: days since 1970 to a civil date.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `<target>/<file>`, as the other benches find it.
pub fn report_path(file: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join(file);
    }
    // The bench binary lives in <target>/<profile>/deps/.
    let from_exe =
        std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from));
    from_exe
        .filter(|dir| dir.join("CACHEDIR.TAG").exists() || dir.ends_with("target"))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join(file)
}
