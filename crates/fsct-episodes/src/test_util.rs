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
