//! Live progress on stderr: an indicatif line (phase, elapsed, last serial line) on a TTY,
//! plain timestamped lines otherwise (a phase change, then a heartbeat every 15 s). vm-test
//! feeds it from the driver's events (`vm::events`).

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_secs(15);
const REDRAW: Duration = Duration::from_millis(200);

pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    phase: String,
    last_draw: Instant,
    last_plain: Instant,
}

impl Progress {
    pub fn new(fancy: bool, start: Instant) -> Progress {
        let bar = fancy.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>10} {elapsed:>4} {wide_msg}").expect("template"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress { bar, start, phase: String::new(), last_draw: start, last_plain: start }
    }

    fn stamp(&self) -> String {
        format!("{} +{:>6.1}s", jiff::Timestamp::now().strftime("%H:%M:%S"), self.start.elapsed().as_secs_f64())
    }

    pub fn phase(&mut self, phase: &str) {
        self.phase = phase.to_string();
        match &self.bar {
            Some(bar) => bar.set_prefix(phase.to_string()),
            None => eprintln!("[{}] phase {phase}", self.stamp()),
        }
        self.last_plain = Instant::now();
    }

    /// A message that should stay visible (above the live line on a TTY).
    pub fn note(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("[{}] {msg}", self.stamp()),
        }
    }

    /// Called from the read loop with the last serial line; rate-limited.
    pub fn tick(&mut self, last_line: &str) {
        let now = Instant::now();
        match &self.bar {
            Some(bar) if now - self.last_draw >= REDRAW => {
                self.last_draw = now;
                bar.set_message(last_line.chars().take(160).collect::<String>());
            }
            None if now - self.last_plain >= HEARTBEAT => {
                self.last_plain = now;
                let line: String = last_line.chars().take(120).collect();
                eprintln!("[{}] {} … last serial line: {line}", self.stamp(), self.phase);
            }
            _ => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
