//! Loader throughput from JPEG files on disk: episodes per second, 5-way 5-shot 16-query at
//! 84 px, eval transform and train augmentation, 1 and 2 worker threads (and 2 threads with the
//! in-memory cache, once warm).
//!
//! `cargo bench -p fsct-episodes` (release). `FSCT_BENCH_QUICK=1` runs a few episodes only (CI).
//! The table is printed and written to `target/fsct-episodes-loader.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fsct_episodes::{
    Dataset, EpisodeLoader, EpisodeSpec, GlyphId, LoaderConfig, TransformConfig, TransformMode,
};

const CLASSES: u32 = 20;
const IMAGES: u32 = 30;
const SIDE: u32 = 100;

/// `root/c<class>/<i>.jpg`: 100×100 synthetic glyphs, JPEG quality 90.
fn write_dataset(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for class in 0..CLASSES {
        let dir = root.join(format!("c{class:02}"));
        std::fs::create_dir_all(&dir)?;
        for instance in 0..IMAGES {
            let image = GlyphId { seed: 7, class, instance, size: SIDE }.render();
            let file = std::io::BufWriter::new(std::fs::File::create(
                dir.join(format!("{instance:02}.jpg")),
            )?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90).encode_image(&image)?;
        }
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

struct Row {
    pipeline: &'static str,
    threads: usize,
    cache: bool,
    episodes: u64,
    seconds: f64,
}

fn measure(
    data: &Arc<Dataset>,
    mode: TransformMode,
    threads: usize,
    cache: bool,
    episodes: u64,
) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    let spec = EpisodeSpec { n_way: 5, k_shot: 5, n_query: 16 };
    let config = LoaderConfig { threads, prefetch: 4, seed: 1, cache };
    if cache {
        // Fill the cache first (it is shared by loaders of the same Arc<Dataset> and size), so
        // the timed run shows the warm, cached rate.
        for episode in EpisodeLoader::new(
            Arc::clone(data),
            spec,
            TransformConfig::new(84, mode),
            config.clone(),
            1000..1000 + 3 * episodes,
        )? {
            episode?;
        }
    }
    let loader = EpisodeLoader::new(
        Arc::clone(data),
        spec,
        TransformConfig::new(84, mode),
        config,
        0..episodes,
    )?;
    let start = Instant::now();
    let mut count = 0;
    for episode in loader {
        let episode = episode?;
        assert_eq!(episode.shape, [5, 21, 3, 84, 84]);
        count += 1;
    }
    Ok((count, start.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var("FSCT_BENCH_QUICK").is_ok_and(|v| v == "1");
    let episodes: u64 = if quick { 4 } else { 60 };
    let dir = tempfile::tempdir()?;
    write_dataset(dir.path())?;
    let data = Arc::new(Dataset::open_folder(dir.path(), None)?);

    // Warm the OS page cache so every row reads from memory, as training on a warm disk would.
    measure(&data, TransformMode::Eval, 2, false, episodes.min(8))?;

    let mut rows = Vec::new();
    for (pipeline, mode) in [("eval", TransformMode::Eval), ("train aug", TransformMode::Train)] {
        for (threads, cache) in [(1, false), (2, false), (2, true)] {
            let (episodes, seconds) = measure(&data, mode, threads, cache, episodes)?;
            rows.push(Row { pipeline, threads, cache, episodes, seconds });
        }
    }

    let mut table = format!(
        "Loader throughput, 5-way 5-shot 16-query (105 images/episode), 84 px, from {CLASSES}×{IMAGES} \
         JPEG files of {SIDE}×{SIDE} px{}\n\n\
         | pipeline | threads | cache | episodes | episodes/s | images/s | ms/episode |\n\
         |---|---|---|---|---|---|---|\n",
        if quick { " (quick mode)" } else { "" }
    );
    for r in &rows {
        let rate = r.episodes as f64 / r.seconds;
        table += &format!(
            "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} |\n",
            r.pipeline,
            r.threads,
            if r.cache { "warm" } else { "off" },
            r.episodes,
            rate,
            rate * 105.0,
            1000.0 / rate,
        );
    }
    println!("{table}");
    let out = target_dir().join("fsct-episodes-loader.md");
    match std::fs::write(&out, &table) {
        Ok(()) => println!("written to {}", out.display()),
        Err(e) => eprintln!("could not write {}: {e}", out.display()),
    }
    Ok(())
}
