//! `transcript.log`: what the harness did and what the guest answered, one
//! `[RFC3339 +secs] message` line each (multi-line messages are indented).

use anyhow::Result;
use camino::Utf8Path;
use std::io::Write;
use std::time::Instant;

pub struct Transcript {
    file: std::fs::File,
    start: Instant,
}

impl Transcript {
    pub fn create(path: &Utf8Path, start: Instant) -> Result<Transcript> {
        let file = fs_err::OpenOptions::new().create(true).append(true).open(path)?.into_parts().0;
        Ok(Transcript { file, start })
    }

    pub fn log(&mut self, message: &str) {
        let stamp = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
        let secs = self.start.elapsed().as_secs_f64();
        let body = message.trim_end().replace('\n', "\n    ");
        // Best effort: a full disk must not turn a boot verdict into an I/O error.
        let _ = writeln!(self.file, "[{stamp} +{secs:.3}] {body}");
    }
}
