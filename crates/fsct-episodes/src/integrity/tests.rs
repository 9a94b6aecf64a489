//! Whole files pass, files cut anywhere fail, damaged files never panic.

use super::check_complete;
use super::read::rfind;
use image::{ImageFormat, RgbImage};
use std::io::Cursor;

/// A noisy image (so compressed formats do not shrink it to a few bytes).
fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7919 + y * 104_729).wrapping_mul(2_654_435_761) >> 7;
        image::Rgb([v as u8, (v >> 8) as u8, (x * 4 + y) as u8])
    })
}

fn encode(format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    picture(64, 48).write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

fn check(bytes: &[u8]) -> Result<(), String> {
    check_complete(&mut Cursor::new(bytes), bytes.len() as u64)
}

const FORMATS: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Gif,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

#[test]
fn every_format_whole_passes_and_cut_anywhere_fails() {
    for format in FORMATS {
        let bytes = encode(format);
        check(&bytes).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        // Every cut point (a sample of them for speed), the middle included.
        let step = (bytes.len() / 97).max(1);
        let cuts = (16..bytes.len()).step_by(step).chain([bytes.len() / 2, bytes.len() - 1]);
        for cut in cuts {
            let err = check(&bytes[..cut]).err();
            let err =
                err.unwrap_or_else(|| panic!("{format:?} cut at {cut} of {} passed", bytes.len()));
            assert!(err.contains("truncated") || err.contains("corrupt"), "{format:?}: {err}");
        }
    }
}

#[test]
fn a_jpeg_cut_in_half_decodes_but_is_caught() {
    let bytes = encode(ImageFormat::Jpeg);
    let half = &bytes[..bytes.len() / 2];
    // The reason for this check: the decoder fills in the missing half.
    assert!(image::load_from_memory(half).is_ok(), "the decoder accepts it");
    let err = check(half).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("end-of-image marker"), "{err}");
}

/// APP1 (EXIF) segment holding a complete little JPEG, inserted after SOI.
fn with_thumbnail(jpeg: &[u8]) -> Vec<u8> {
    let mut thumb = Vec::new();
    RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .write_to(&mut Cursor::new(&mut thumb), ImageFormat::Jpeg)
        .unwrap();
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&thumb); // its own SOS … EOI
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn a_jpeg_thumbnail_does_not_count_as_the_images_end() {
    let bytes = with_thumbnail(&encode(ImageFormat::Jpeg));
    check(&bytes).unwrap();
    image::load_from_memory(&bytes).unwrap();
    // Cut just after the thumbnail's EOI, and in the middle of the image: both fail although
    // the thumbnail holds an SOS followed by an EOI.
    let thumb_end = rfind(&bytes[..bytes.len() - 2], &[0xFF, 0xD9]).unwrap();
    let err = check(&bytes[..thumb_end + 40]).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    let err = check(&bytes[..bytes.len() * 2 / 3]).unwrap_err();
    assert!(err.contains("end-of-image marker"), "{err}");
}

#[test]
fn trailing_bytes_after_the_end_are_allowed() {
    for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp] {
        for extra in [16usize, 200_000] {
            let mut bytes = encode(format);
            bytes.extend(std::iter::repeat_n(0u8, extra));
            check(&bytes).unwrap_or_else(|e| panic!("{format:?} + {extra} zeros: {e}"));
        }
    }
    // A big trailer after a truncated JPEG (no EOI at all) still fails, via the scan walk.
    let bytes = encode(ImageFormat::Jpeg);
    let mut cut = bytes[..bytes.len() / 2].to_vec();
    cut.extend(std::iter::repeat_n(0u8, 200_000));
    let err = check(&cut).unwrap_err();
    assert!(err.contains("end-of-image marker"), "{err}");
    // And a PNG whose IEND is far from the end is found by walking the chunks.
    let mut png = encode(ImageFormat::Png);
    png.extend(std::iter::repeat_n(7u8, 100_000));
    check(&png).unwrap();
}

#[test]
fn a_jpeg_with_a_large_trailer_is_walked_to_its_end() {
    // The scan walk on a complete JPEG with more than the searched tail after its EOI: the
    // entropy-coded data is crossed up to EOI.
    let mut bytes = with_thumbnail(&encode(ImageFormat::Jpeg));
    bytes.extend(std::iter::repeat_n(0xFFu8, 100_000));
    check(&bytes).unwrap();
}

#[test]
fn empty_and_unknown_files() {
    assert_eq!(check(b"").unwrap_err(), "the file is empty");
    check(b"plain text, not an image format this check knows").unwrap();
    let err = check(&[0xFF, 0xD8, 0xFF]).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Damaged headers (random bytes overwritten, then a random cut) never panic the check,
    /// whatever sizes and offsets they claim.
    #[test]
    fn damaged_files_never_panic(
        format in 0..FORMATS.len(),
        flips in proptest::collection::vec((0..64usize, proptest::prelude::any::<u8>()), 1..8),
        keep in 0.0..1.0f64,
    ) {
        let mut bytes = encode(FORMATS[format]);
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(((bytes.len() as f64) * keep) as usize + 1);
        let _ = check(&bytes);
    }
}
