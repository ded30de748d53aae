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

use std::sync::mpsc;
use std::time::{Duration, Instant};
use xshell::cmd;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::json;

use crate::diagnose::{Detector, Finding, Phase, Source};
use crate::process;
use crate::vm::qemu::Qmp;
use crate::vm::record::Screen;

/// Upscaling factor before OCR (3 measured best on QEMU's 8×16 VGA font).
const SCALE: usize = 3;
/// A channel brighter than this is ink: the VGA text console draws light glyphs on black.
const INK: u8 = 100;
/// Enough for a whole screen of text; OCR output beyond it is not kept.
const TEXT_CAP: usize = 64 * 1024;
/// OCR takes ~3.5 s for a screen here; this bounds what a run can lose to it.
pub const OCR_LIMIT: Duration = Duration::from_secs(30);

/// `--screens`: when vm-test takes screenshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Off,
    /// One when the run fails, before QEMU stops (the default).
    Verdict,
    /// That, and one every interval (a series to look at a boot later).
    Every(Duration),
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "off" => Ok(Policy::Off),
            "verdict" => Ok(Policy::Verdict),
            _ => match s.strip_prefix("every:").map(str::parse::<u64>) {
                Some(Ok(secs)) if secs > 0 => Ok(Policy::Every(Duration::from_secs(secs))),
                _ => Err(format!("`{s}`: expected verdict, off or every:SECS (SECS ≥ 1)")),
            },
        }
    }
}

/// The screenshot of a failed run, taken while QEMU still runs: `screen-<phase>.png`.
pub fn take_verdict_shot(qmp_sock: &Utf8Path, dir: &Utf8Path, phase: Phase, seconds: f64) -> Result<Screen> {
    let file = format!("screen-{}.png", phase.name());
    let mut qmp = Qmp::connect(qmp_sock, Duration::from_secs(3))?;
    capture(&mut qmp, &dir.join(&file))?;
    Ok(Screen { file, reason: "verdict".into(), phase: Some(phase), seconds, ..Screen::default() })
}

/// Reads a screenshot with OCR into `<name>.txt` beside it and interprets the text; `None`
/// when tesseract is not installed.
pub fn read_shot(dir: &Utf8Path, screen: &mut Screen) -> Result<Option<(Reading, f64)>> {
    let Some(tesseract) = tesseract() else { return Ok(None) };
    let read = read_text(&tesseract, &dir.join(&screen.file), OCR_LIMIT)?;
    let text_file = Utf8Path::new(&screen.file).with_extension("txt").to_string();
    fs_err::write(dir.join(&text_file), &read.text)?;
    let reading = interpret(&read.text);
    screen.text_file = Some(text_file);
    screen.text_phase = Some(reading.phase);
    Ok(Some((reading, read.seconds)))
}

/// `--screens every:N`: a screenshot every interval into `screens/`, on a thread of its own
/// that sleeps on a channel between shots (no polling) and ends when finished or when QEMU
/// no longer answers. Each shot holds QMP (one client at a time) for a few milliseconds.
pub struct Series {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<Screen>>,
}

impl Series {
    pub fn start(qmp_sock: Utf8PathBuf, dir: Utf8PathBuf, every: Duration, started: Instant) -> Result<Series> {
        fs_err::create_dir_all(dir.join("screens"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut shots = Vec::new();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let seconds = started.elapsed().as_secs_f64();
                let file = format!("screens/{:04.0}s.png", seconds);
                let taken =
                    Qmp::connect(&qmp_sock, Duration::from_secs(2)).and_then(|mut q| capture(&mut q, &dir.join(&file)));
                if taken.is_err() {
                    break; // QEMU is gone
                }
                shots.push(Screen { file, reason: "every".into(), seconds, ..Screen::default() });
            }
            shots
        });
        Ok(Series { stop, thread })
    }

    pub fn finish(self) -> Vec<Screen> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

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
/// image (~2.6 MB) goes to the temp directory, not the run directory (which may be the very
/// filesystem that is full), and is removed whatever happens.
pub fn read_text(tesseract: &Utf8Path, png: &Utf8Path, limit: Duration) -> Result<ScreenText> {
    let started = Instant::now();
    let bytes = fs_err::read(png)?;
    let prepared = Prepared::new()?;
    fs_err::write(&prepared.0, prepare_for_ocr(&bytes)?)?;
    // --psm 6: one uniform block of text, which a console is.
    let input = &prepared.0;
    let out = process::shell().and_then(|sh| {
        let ocr = cmd!(sh, "{tesseract} {input} stdout --psm 6");
        Ok(process::run_in_own_group(ocr, limit, TEXT_CAP)?)
    });
    drop(prepared);
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

/// What the screen's text says about the boot, read by the same detector as the serial lines
/// (with `Source::Screen`: OCR confusions of systemd's fixed words are repaired first).
#[derive(Debug)]
pub struct Reading {
    /// The furthest boot phase the text shows.
    pub phase: Phase,
    /// Failure signatures in the text, each marked as screen text.
    pub findings: Vec<Finding>,
    /// The line that shows `phase` (the last phase marker), as OCR read it.
    pub evidence: Option<String>,
    /// The screen shows systemd's multi-user target reached.
    pub multi_user: bool,
}

pub fn interpret(text: &str) -> Reading {
    let mut detector = Detector::with_source(Some(Source::Screen));
    let lines: Vec<&str> = text.lines().collect();
    let mut findings = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        findings.extend(detector.feed_line(i + 1, line));
    }
    let multi_user_line = lines.iter().find(|l| l.to_ascii_lowercase().contains("multi-user system"));
    let evidence = multi_user_line
        .or_else(|| detector.timeline().last().and_then(|t| lines.get(t.line.saturating_sub(1))))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty());
    let multi_user = multi_user_line.is_some();
    Reading { phase: detector.phase(), findings, evidence, multi_user }
}

impl Reading {
    /// One sentence for the verdict when the screen shows what serial did not: the boot got
    /// further there, or (`console-not-last`) systemd's progress went to the screen only.
    pub fn beyond_serial(&self, serial_phase: Phase, finding: &str) -> Option<String> {
        if finding == "console-not-last" && (self.multi_user || self.phase >= Phase::Init) {
            let shown = self.evidence.as_deref().map(|l| format!(" `{l}`")).unwrap_or_default();
            return Some(format!("the screen shows what serial missed:{shown} (systemd's progress went to tty0)"));
        }
        if self.phase <= serial_phase && !(self.multi_user && serial_phase < Phase::Login) {
            return None;
        }
        let shown = self.evidence.as_deref().map(|l| format!(" (`{l}`)")).unwrap_or_default();
        Some(if self.multi_user {
            format!("the screen shows the system booted to multi-user{shown}; only the serial console is missing")
        } else if self.phase >= Phase::Init {
            format!("the screen shows the boot reached {}{shown}, which serial never showed", self.phase)
        } else {
            format!("the screen shows the boot stopped in phase {}{shown}", self.phase)
        })
    }
}

/// The OCR input file in the temp directory, removed on drop (also after a partial write).
struct Prepared(Utf8PathBuf);

impl Prepared {
    fn new() -> Result<Prepared> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let dir = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .map_err(|p| anyhow::anyhow!("TMPDIR is not UTF-8: {}", p.display()))?;
        Ok(Prepared(dir.join(format!("xtask-ocr-{}-{nanos}.pgm", std::process::id()))))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

    #[test]
    fn screen_text_that_reached_multi_user_explains_a_silent_serial_line() {
        let text =
            "<<< NixOS Stage 2 >>>\nWelcome to Nix0S 25.05 (Warbler)!\n[ OK 1 Reached target Multi-User System.\n";
        let r = interpret(text);
        assert!(r.phase >= Phase::Init, "{r:?}");
        assert!(r.multi_user);
        let said = r.beyond_serial(Phase::Bootloader, "serial-silent-after-bootloader").unwrap();
        assert!(said.starts_with("the screen shows the system booted to multi-user"), "{said}");
        assert!(said.contains("only the serial console is missing"), "{said}");
        assert_eq!(r.beyond_serial(Phase::Checks, "check-failed"), None, "nothing to add when serial got as far");
        let missed = r.beyond_serial(Phase::Checks, "console-not-last").unwrap();
        assert!(missed.contains("Reached target Multi-User System"), "{missed}");
    }

    #[test]
    fn screen_text_of_a_kernel_that_stopped_says_where() {
        let text = "[    0.000000] Linux version 6.1.0-57-amd64\n[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";
        let r = interpret(text);
        assert_eq!(r.phase, Phase::Kernel, "{r:?}");
        assert!(r.findings.iter().any(|f| f.id == "kernel-panic" && f.source == Source::Screen), "{:?}", r.findings);
        let said = r.beyond_serial(Phase::Bootloader, "serial-silent-after-bootloader").unwrap();
        assert!(said.starts_with("the screen shows the boot stopped in phase kernel"), "{said}");
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
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "nothing but the screenshot in its directory: {left:?}");
        let reading = interpret(&read.text);
        assert!(reading.phase >= Phase::Init && reading.multi_user, "{reading:?}");
    }
}
