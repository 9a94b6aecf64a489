//! Writes a grid of synthetic glyphs (rows = classes, columns = instances) to a PNG, to judge
//! the synthetic dataset by eye: `cargo run -p fsct-episodes --example glyph_grid -- 32 /tmp/g.png`.

use fsct_episodes::{synthetic_splits, Item, SyntheticConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let out = args.next().unwrap_or_else(|| format!("glyphs_{size}.png"));
    let splits =
        synthetic_splits(&SyntheticConfig { native_size: size, ..SyntheticConfig::default() });
    let (rows, cols) = (10usize, 8usize);
    let side = size as u32;
    let mut grid = image::RgbImage::new(cols as u32 * side, rows as u32 * side);
    for (r, class) in splits.base.classes.iter().take(rows).enumerate() {
        for (c, item) in class.items.iter().take(cols).enumerate() {
            if let Item::Synthetic(id) = item {
                let x = i64::from(c as u32 * side);
                let y = i64::from(r as u32 * side);
                image::imageops::replace(&mut grid, &id.render(), x, y);
            }
        }
    }
    match grid.save(&out) {
        Ok(()) => println!("wrote {out}"),
        Err(e) => eprintln!("cannot write {out}: {e}"),
    }
}
