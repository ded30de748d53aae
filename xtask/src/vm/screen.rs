//! The guest's screen as evidence: when the serial line says nothing, the VGA console often
//! shows the whole boot (`console=tty0` last, or no `console=ttyS0` at all). QMP `screendump`
//! writes a PNG (for people: the report links it); OCR turns it into text for the same detector
//! that reads the serial lines.
//!
//! OCR is optional at runtime (`tesseract` from Debian's `tesseract-ocr`; doctor says whether it
//! is there) and bounded: it runs in its own process group under a deadline. Before OCR the
//! screen is binarised (bright glyphs → black on white) and scaled up 3× with nearest
//! neighbour: on QEMU's 720×400 text console that turns tesseract's `Nix0S`, `ttyso`, dropped
//! lines into whole, mostly right lines (docs/vm-test.md has the measurement).

// Wired into vm-test by the next commit (screens on stall and verdict, OCR into the detector).
#![allow(dead_code)]

use std::time::{Duration, Instant};
use xshell::cmd;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::json;

use crate::process;
use crate::vm::qemu::Qmp;

/// Upscaling factor before OCR (3 measured best on QEMU's 8×16 VGA font).
const SCALE: usize = 3;
/// A channel brighter than this is ink: the VGA text console draws light glyphs on black.
const INK: u8 = 100;
/// Enough for a whole screen of text; OCR output beyond it is not kept.
const TEXT_CAP: usize = 64 * 1024;

/// Writes the guest's screen to `png` (QEMU ≥ 7.1 writes PNG itself).
pub fn capture(qmp: &mut Qmp, png: &Utf8Path) -> Result<()> {
    qmp.execute("screendump", Some(json!({ "filename": png.as_str(), "format": "png" })))
        .with_context(|| format!("QMP screendump to {png}"))?;
    Ok(())
}

/// The OCR program, when installed.
pub fn tesseract() -> Option<Utf8PathBuf> {
    which::which("tesseract").ok().and_then(|p| Utf8PathBuf::from_path_buf(p).ok())
}

/// What OCR read off one screenshot.
#[derive(Debug)]
pub struct ScreenText {
    pub text: String,
    pub seconds: f64,
}

/// Reads the text on the screenshot `png` with tesseract, killed after `limit`. The prepared
/// image is written next to the PNG (`<name>.ocr.pgm`) and removed afterwards.
pub fn read_text(tesseract: &Utf8Path, png: &Utf8Path, limit: Duration) -> Result<ScreenText> {
    let started = Instant::now();
    let prepared = png.with_extension("ocr.pgm");
    let bytes = fs_err::read(png)?;
    fs_err::write(&prepared, prepare_for_ocr(&bytes)?)?;
    // --psm 6: one uniform block of text, which a console is.
    let out = process::shell().and_then(|sh| {
        let ocr = cmd!(sh, "{tesseract} {prepared} stdout --psm 6");
        Ok(process::run_in_own_group(ocr, limit, TEXT_CAP)?)
    });
    let _ = std::fs::remove_file(&prepared);
    let out = out.with_context(|| format!("running {tesseract}"))?;
    let Some(status) = out.status else {
        bail!("OCR of {png} did not finish within {:.0}s (killed)", limit.as_secs_f64());
    };
    if !status.success() {
        bail!("{tesseract} failed on {png} ({status}): {}", String::from_utf8_lossy(out.stderr.bytes()).trim());
    }
    let text = String::from_utf8_lossy(out.stdout.bytes()).into_owned();
    Ok(ScreenText { text, seconds: started.elapsed().as_secs_f64() })
}

/// PNG → binary PGM (P5), ink black on white, scaled up `SCALE`× with nearest neighbour.
pub fn prepare_for_ocr(png_bytes: &[u8]) -> Result<Vec<u8>> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().context("reading the PNG header")?;
    let mut pixels = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let frame = reader.next_frame(&mut pixels).context("decoding the PNG")?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    let ink = |x: usize, y: usize| {
        let at = (y * w + x) * channels;
        let colour = &pixels[at..at + channels.min(3)];
        colour.iter().any(|&c| c > INK)
    };
    let mut out = format!("P5\n{} {}\n255\n", w * SCALE, h * SCALE).into_bytes();
    out.reserve(w * h * SCALE * SCALE);
    let mut row = Vec::with_capacity(w * SCALE);
    for y in 0..h {
        row.clear();
        for x in 0..w {
            let v = if ink(x, y) { 0 } else { 255 };
            row.extend(std::iter::repeat_n(v, SCALE));
        }
        for _ in 0..SCALE {
            out.extend_from_slice(&row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(rgb).unwrap();
        bytes
    }

    #[test]
    fn glyphs_become_black_on_white_and_three_times_larger() {
        // 2×1: a bright green pixel (the `OK` of systemd) and the black background.
        let pgm = prepare_for_ocr(&png(2, 1, &[0, 170, 0, 0, 0, 0])).unwrap();
        let header = b"P5\n6 3\n255\n";
        assert_eq!(&pgm[..header.len()], header);
        let body = &pgm[header.len()..];
        assert_eq!(body.len(), 6 * 3);
        for row in body.chunks(6) {
            assert_eq!(row, [0, 0, 0, 255, 255, 255]);
        }
    }

    #[test]
    fn not_a_png_is_an_error() {
        assert!(prepare_for_ocr(b"P6\n1 1\n255\n\0\0\0").is_err());
    }

    /// A screenshot QEMU took of the fixture's `no-serial-console` fault (committed): OCR reads
    /// the boot off it and the detector finds init and the multi-user target in that text.
    #[test]
    fn recorded_screenshot_reads_as_a_boot_that_reached_multi_user() {
        let Some(tesseract) = tesseract() else {
            assert!(std::env::var_os("CI").is_none(), "tesseract missing in CI: run scripts/install-deps.sh");
            eprintln!("SKIP: tesseract not installed (apt-get install tesseract-ocr)");
            return;
        };
        let png = crate::project::root().join("xtask/tests/data/screens/no-serial-console.png");
        let dir = tempfile::tempdir().unwrap();
        let copy = Utf8Path::from_path(dir.path()).unwrap().join("screen.png");
        fs_err::copy(&png, &copy).unwrap();
        let read = read_text(&tesseract, &copy, Duration::from_secs(60)).unwrap();
        assert!(read.text.contains("Reached target Multi-User System"), "{}", read.text);
        assert!(read.text.contains("Stage 2"), "{}", read.text);
        assert!(!copy.with_extension("ocr.pgm").exists(), "the prepared image is removed");
    }
}
