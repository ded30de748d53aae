//! Showing build progress: a live status line (indicatif) on a terminal, plain lines otherwise
//! (one per build start/finish/phase, a status line every `PLAIN_EVERY`). Everything goes to
//! stderr; stdout carries only the result.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::events::{drv_name, Tracker, Update};

const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Display {
    bar: Option<ProgressBar>,
    print_logs: bool,
    started: Instant,
    last_plain: Instant,
}

impl Display {
    pub fn new(fancy: bool, print_logs: bool) -> Self {
        let bar = fancy.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}").expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar.set_message("evaluating…");
            bar
        });
        let now = Instant::now();
        Display { bar, print_logs, started: now, last_plain: now }
    }

    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn plain(&mut self, text: &str) {
        eprintln!("build-image: [{:>6.1}s] {text}", self.started.elapsed().as_secs_f64());
        self.last_plain = Instant::now();
    }

    pub fn update(&mut self, update: &Update, t: &Tracker) {
        match update {
            Update::LogLine { drv, line } if self.print_logs => self.line(&format!("{}> {line}", drv_name(drv))),
            // Warnings reach the user at once; errors come in the final report (not twice);
            // info and chattier messages go to build.log only.
            Update::Message { level: 1, text } => self.line(text),
            _ => {}
        }
        if let Some(bar) = &self.bar {
            bar.set_message(t.status());
            return;
        }
        match update {
            Update::BuildStarted { drv, machine } => {
                let on = machine.as_deref().map(|m| format!(" on {m}")).unwrap_or_default();
                self.plain(&format!("building {}{on} ({})", drv_name(drv), t.status()));
            }
            Update::Phase { drv, phase } => self.plain(&format!("{}: {phase}", drv_name(drv))),
            Update::Substituting { path, from } => {
                self.plain(&format!("fetching {} from {from} ({})", drv_name(path), t.status()))
            }
            Update::BuildStopped { drv, failed } => {
                let verb = if *failed { "FAILED" } else { "finished" };
                self.plain(&format!("{verb} {} ({})", drv_name(drv), t.status()))
            }
            _ => self.tick(t),
        }
    }

    /// Called about once a second while nothing else happens.
    pub fn tick(&mut self, t: &Tracker) {
        if self.bar.is_none() && self.last_plain.elapsed() >= PLAIN_EVERY {
            self.plain(&t.status());
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}
