//! Write fsct's synthetic glyph dataset out as PNG files plus the reference's JSON split files
//! (`base.json`, `val.json`, `novel.json`; spec §3.3), so that fsct (`data.kind = "json"`) and
//! a PyTorch trainer read the very same images.
//!
//!     cargo run --release --example write_glyph_dataset -- --out target/fidelity/glyphs \
//!         [--classes 100] [--images-per-class 40] [--native-size 32] [--seed 4040]
//!
//! The class split is fsct's own ([`synthetic_splits`]: 64 / 16 / 20 % base / val / novel,
//! classes numbered across the splits), and each image is the glyph fsct renders for
//! `data.kind = "synthetic"` with `run.seed = --seed`. Files are `DIR/images/glyph_CCC/IIII.png`;
//! the split files list them relative to `DIR` (fsct resolves relative names against the JSON
//! file's folder; `tools/torch_episodic_train.py` does the same). Labels are the global class
//! numbers, and every split file lists all class names in `label_names`, as the reference's
//! `write_*_filelist.py` scripts do.

use std::path::PathBuf;

use fsct_episodes::{synthetic_splits, Dataset, SyntheticConfig};

struct Args {
    out: PathBuf,
    config: SyntheticConfig,
}

fn usage() -> ! {
    eprintln!(
        "usage: write_glyph_dataset --out DIR [--classes 100] [--images-per-class 40] \
         [--native-size 32] [--seed 4040]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut out = None;
    let mut config =
        SyntheticConfig { seed: 4040, classes: 100, images_per_class: 40, native_size: 32 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let mut number = |flag: &str| -> u64 {
            let v = value();
            v.parse().unwrap_or_else(|_| {
                eprintln!("{flag}: `{v}` is not a whole number");
                usage()
            })
        };
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value())),
            "--classes" => config.classes = number("--classes") as usize,
            "--images-per-class" => config.images_per_class = number("--images-per-class") as usize,
            "--native-size" => config.native_size = number("--native-size") as usize,
            "--seed" => config.seed = number("--seed"),
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument `{other}`");
                usage()
            }
        }
    }
    Args { out: out.unwrap_or_else(|| usage()), config }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { out, config } = parse_args();
    let splits = synthetic_splits(&config);
    let datasets: [(&str, &Dataset); 3] =
        [("base", &splits.base), ("val", &splits.val), ("novel", &splits.novel)];
    // Every class name, in global class order (base, then val, then novel).
    let label_names: Vec<&str> =
        datasets.iter().flat_map(|(_, d)| d.classes.iter().map(|c| c.name.as_str())).collect();

    let mut label = 0usize;
    for (split, dataset) in datasets {
        let mut image_names = Vec::new();
        let mut image_labels = Vec::new();
        for (c, class) in dataset.classes.iter().enumerate() {
            let folder = out.join("images").join(&class.name);
            std::fs::create_dir_all(&folder)?;
            for i in 0..class.items.len() {
                let name = format!("images/{}/{i:04}.png", class.name);
                dataset.load(c, i)?.save(out.join(&name))?;
                image_names.push(name);
                image_labels.push(label);
            }
            label += 1;
        }
        let json = serde_json::json!({
            "label_names": label_names,
            "image_names": image_names,
            "image_labels": image_labels,
        });
        std::fs::write(out.join(format!("{split}.json")), serde_json::to_string(&json)?)?;
        println!(
            "{split}: {} classes, {} images -> {}",
            dataset.num_classes(),
            image_names.len(),
            out.join(format!("{split}.json")).display()
        );
    }
    Ok(())
}
