//! Helpers shared by the unit tests: tiny image files in a temporary folder.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};

/// A `w`×`h` image of one colour.
pub fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

/// Saves `image` as `dir/name` (format from the extension), creating folders.
pub fn save(dir: &Path, name: &str, image: &RgbImage) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    image.save(&path).unwrap();
    path
}

/// Saves a one-channel PNG.
pub fn save_gray(dir: &Path, name: &str, w: u32, h: u32, level: u8) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    GrayImage::from_pixel(w, h, Luma([level])).save(&path).unwrap();
    path
}

/// The colour that encodes (class, item) in the loader tests.
pub fn code(class: usize, item: usize) -> [u8; 3] {
    [(class * 30) as u8, (item * 20) as u8, 128]
}

/// `root/c<class>/<item>.png` for `classes` classes of `items` solid 8×8 images coloured by
/// [`code`].
pub fn coded_folder(root: &Path, classes: usize, items: usize) {
    for c in 0..classes {
        for i in 0..items {
            save(root, &format!("c{c}/{i:02}.png"), &solid(8, 8, code(c, i)));
        }
    }
}

/// A `w`×`h` image of deterministic noise: compressed formats cannot shrink it to a few bytes,
/// so cutting the file in half cuts the pixel data.
pub fn noisy(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7919 + y * 104_729).wrapping_mul(2_654_435_761) >> 7;
        Rgb([v as u8, (v >> 8) as u8, (x * 4 + y) as u8])
    })
}

/// Cuts the file at `path` to half its length.
pub fn cut_in_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Every extension of [`crate::IMAGE_EXTENSIONS`], each a format the `image` crate encodes.
pub const ALL_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Runs `f` with a subscriber that records every event at DEBUG or above, and returns the
/// records as text (one line per event, fields included).
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let sink = Sink(Arc::default());
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (out, text)
}
