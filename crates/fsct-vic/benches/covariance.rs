//! Peak memory and time of the covariance penalty's Gram form against the naive d×d form.
//!
//! `cargo bench -p fsct-vic` runs the full size (d = 25088, the flattened ResNet feature size,
//! with n = 25 and 105 rows: a 5-way 5-shot support set and a 5-way 5-shot + 16-query episode).
//! `FSCT_BENCH_QUICK=1` or `--quick` runs a small d with one iteration, for CI.
//!
//! Peak memory is measured with a counting global allocator: the peak is reset to the current
//! usage before each run, and the figure is the peak above that baseline (the input is allocated
//! beforehand and not counted). The table is printed and written to
//! `target/fsct-vic-covariance.md`.

use std::alloc::System;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use fsct_vic::{covariance_term, CovarianceForm};

// The benches' one counting allocator (shared with the root memory bench).
#[path = "../../../benches/common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::CountingAlloc<System> = counting_alloc::CountingAlloc::new(System);

struct Measurement {
    peak_bytes: usize,
    median: Duration,
    value: f64,
}

fn measure(x: &Tensor<Flex, 2>, form: CovarianceForm, iterations: usize) -> Measurement {
    let mut times = Vec::with_capacity(iterations);
    let mut peak_bytes = 0;
    let mut value = f64::NAN;
    for _ in 0..iterations {
        let baseline = counting_alloc::reset_peak();
        let start = Instant::now();
        value = covariance_term(x.clone(), form).into_scalar() as f64;
        times.push(start.elapsed());
        peak_bytes = peak_bytes.max(counting_alloc::peak().saturating_sub(baseline));
    }
    times.sort();
    Measurement { peak_bytes, median: times[times.len() / 2], value }
}

/// The same penalty in f64 on the host, through the (exact-arithmetic-equivalent) Gram form:
/// the yardstick for both f32 forms' rounding error.
fn reference_f64(x: &Tensor<Flex, 2>) -> f64 {
    let [rows, dim] = x.dims();
    let data: Vec<f64> = x.to_data().iter::<f64>().collect();
    let mut xc = data;
    for j in 0..dim {
        let mean = (0..rows).map(|r| xc[r * dim + j]).sum::<f64>() / rows as f64;
        (0..rows).for_each(|r| xc[r * dim + j] -= mean);
    }
    let m = (rows - 1) as f64;
    let mut fro = 0.0;
    for a in 0..rows {
        for b in 0..rows {
            let g: f64 = (0..dim).map(|j| xc[a * dim + j] * xc[b * dim + j]).sum::<f64>() / m;
            fro += g * g;
        }
    }
    let diag: f64 = (0..dim)
        .map(|j| ((0..rows).map(|r| xc[r * dim + j].powi(2)).sum::<f64>() / m).powi(2))
        .sum();
    (fro - diag) / dim as f64
}

fn mib(bytes: usize) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 10.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.2} MiB")
    }
}

fn report_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("fsct-vic-covariance.md");
    }
    // The bench binary lives in <target>/<profile>/deps/.
    let from_exe =
        std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from));
    from_exe
        .filter(|dir| dir.join("CACHEDIR.TAG").exists() || dir.ends_with("target"))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
        .join("fsct-vic-covariance.md")
}

fn main() {
    let quick = std::env::var("FSCT_BENCH_QUICK").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--quick");
    let (dim, gram_iterations, naive_iterations) = if quick { (2048, 1, 1) } else { (25088, 7, 3) };
    let device = Default::default();

    let mut table = String::new();
    table.push_str(&format!(
        "Covariance penalty Σ_{{i≠j}} Cov_ij² / d on Flex (f32, forward only), d = {dim}{}.\n\n",
        if quick { " (quick mode, 1 iteration)" } else { "" }
    ));
    table.push_str("| d | n | form | peak memory | median time | relative error vs f64 | Gram / naive memory | Gram / naive time |\n");
    table.push_str("|---|---|---|---|---|---|---|---|\n");
    for rows in [25, 105] {
        let x = Tensor::<Flex, 2>::random([rows, dim], Distribution::Normal(0.0, 1.0), &device);
        let gram = measure(&x, CovarianceForm::Gram, gram_iterations);
        let naive = measure(&x, CovarianceForm::Naive, naive_iterations);
        let memory_ratio = gram.peak_bytes as f64 / naive.peak_bytes as f64;
        let time_ratio = gram.median.as_secs_f64() / naive.median.as_secs_f64();
        let exact = reference_f64(&x);
        for (name, m) in [("Gram n×n", &gram), ("naive d×d", &naive)] {
            let error = (m.value - exact).abs() / exact.abs();
            table.push_str(&format!(
                "| {dim} | {rows} | {name} | {} | {:.1} ms | {error:.1e} |",
                mib(m.peak_bytes),
                m.median.as_secs_f64() * 1e3
            ));
            if name.starts_with("Gram") {
                table.push_str(&format!(" {:.3}% | {:.4} |\n", memory_ratio * 100.0, time_ratio));
            } else {
                table.push_str(" | |\n");
            }
        }
        if !quick && memory_ratio >= 0.01 {
            eprintln!("issue 3 criterion NOT met: the Gram form used {:.3}% of the naive form's memory at n = {rows}", memory_ratio * 100.0);
        }
    }
    println!("{table}");
    let path = report_path();
    match std::fs::write(&path, &table) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
