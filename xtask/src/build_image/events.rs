//! Reading nix's `--log-format internal-json` stream: one `@nix {json}` line per event on
//! stderr. `Tracker` keeps what the user wants to see (builds done/total, the derivation being
//! built and its phase, downloads) and what a failure report needs (each build's last log lines,
//! error messages). Pure: fed lines, returns updates; no I/O.
//!
//! Codes (nix's `ActivityType` / `ResultType`, stable since 2.0):
//! activities 100 copy-path (progress in NAR bytes), 101 file-transfer, 102 realise, 103 copy-paths
//! (progress in paths), 104 builds, 105 build (fields: drv, machine, round, rounds),
//! 108 substitute (fields: path, cache);
//! results 101 build log line ([line]), 104 set-phase ([phase]), 105 progress
//! ([done, expected, running, failed]), 106 set-expected ([activity type, count]),
//! 107 post-build log line ([line]).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::Value;

use crate::strip_escapes::clean_all;

/// How many log lines of each build are kept for a failure report.
pub const TAIL_LINES: usize = 30;

const ACT_COPY_PATH: u64 = 100;
const ACT_COPY_PATHS: u64 = 103;
const ACT_BUILDS: u64 = 104;
const ACT_BUILD: u64 = 105;
const ACT_SUBSTITUTE: u64 = 108;

const RES_BUILD_LOG_LINE: u64 = 101;
const RES_SET_PHASE: u64 = 104;
const RES_PROGRESS: u64 = 105;
const RES_POST_BUILD_LOG_LINE: u64 = 107;

/// What changed, for the display.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    BuildStarted {
        drv: String,
        machine: Option<String>,
    },
    /// `failed`: nix's failed-builds counter rose while it ran.
    BuildStopped {
        drv: String,
        failed: bool,
    },
    Phase {
        drv: String,
        phase: String,
    },
    LogLine {
        drv: String,
        line: String,
    },
    Substituting {
        path: String,
        from: String,
    },
    /// A nix message: level 0 error, 1 warning, 2 notice, 3 info, then chattier levels.
    Message {
        level: u64,
        text: String,
    },
    /// Counters changed.
    Progress,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub done: u64,
    pub expected: u64,
    pub running: u64,
    pub failed: u64,
}

#[derive(Debug)]
struct Build {
    drv: String,
    phase: Option<String>,
    failed_before: u64,
}

#[derive(Default, Debug)]
pub struct Tracker {
    kinds: HashMap<u64, u64>,
    builds_running: Vec<(u64, Build)>,
    /// Running copies: (bytes done, bytes expected).
    copies: HashMap<u64, (u64, u64)>,
    pub builds: Counts,
    pub downloads: Counts,
    /// NAR bytes of finished and running path copies (substitutions, also copies to or from
    /// remote builders). Counted on copy-path activities, which every store type reports;
    /// http file transfers would count the same bytes again, compressed.
    pub bytes_downloaded: u64,
    bytes_finished: u64,
    /// Last log lines of every build seen, by derivation path.
    tails: HashMap<String, VecDeque<String>>,
    /// Every derivation whose build started, in order.
    pub started: Vec<String>,
    /// Every phase seen, as (derivation name, phase), in order.
    pub phases: Vec<(String, String)>,
    /// nix's own error and warning messages (level-0 events, plain `error:`/`warning:` lines),
    /// escape-free, in arrival order.
    pub messages: Vec<String>,
    /// Lines on stderr that were not JSON events (e.g. nix falling back to plain logging).
    pub plain_lines: Vec<String>,
}

/// An `error:` or `warning:` line of nix's.
fn is_diagnostic(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with("error:") || t.starts_with("warning:")
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one stderr line (without its newline).
    pub fn feed(&mut self, line: &str) -> Vec<Update> {
        let Some(json) = line.strip_prefix("@nix ") else {
            let text = clean_all(line.as_bytes());
            if text.trim().is_empty() {
                return vec![];
            }
            if is_diagnostic(&text) {
                self.messages.push(text.clone());
            }
            self.plain_lines.push(text.clone());
            let level = if text.trim_start().starts_with("error:") { 0 } else { 1 };
            return vec![Update::Message { level, text }];
        };
        let Ok(v) = serde_json::from_str::<Value>(json) else {
            return vec![];
        };
        let id = v["id"].as_u64().unwrap_or(0);
        match v["action"].as_str().unwrap_or("") {
            "start" => self.start(id, &v),
            "stop" => self.stop(id),
            "result" => self.result(id, &v),
            "msg" => {
                let level = v["level"].as_u64().unwrap_or(3);
                let text = clean_all(v["msg"].as_str().unwrap_or("").as_bytes());
                if level == 0 || is_diagnostic(&text) {
                    self.messages.push(text.clone());
                }
                vec![Update::Message { level, text }]
            }
            _ => vec![],
        }
    }

    fn start(&mut self, id: u64, v: &Value) -> Vec<Update> {
        let kind = v["type"].as_u64().unwrap_or(0);
        self.kinds.insert(id, kind);
        let field = |i: usize| v["fields"].get(i).and_then(Value::as_str).map(str::to_string);
        match kind {
            ACT_BUILD => {
                let drv = field(0).unwrap_or_else(|| v["text"].as_str().unwrap_or("?").to_string());
                let machine = field(1).filter(|m| !m.is_empty());
                let failed_before = self.builds.failed;
                self.builds_running.push((id, Build { drv: drv.clone(), phase: None, failed_before }));
                self.started.push(drv.clone());
                self.tails.entry(drv.clone()).or_default();
                vec![Update::BuildStarted { drv, machine }]
            }
            ACT_SUBSTITUTE => match field(0) {
                Some(path) => vec![Update::Substituting { path, from: field(1).unwrap_or_default() }],
                None => vec![],
            },
            _ => vec![],
        }
    }

    fn stop(&mut self, id: u64) -> Vec<Update> {
        match self.kinds.remove(&id) {
            Some(ACT_BUILD) => {
                let Some(pos) = self.builds_running.iter().position(|(i, _)| *i == id) else {
                    return vec![];
                };
                let (_, build) = self.builds_running.remove(pos);
                let failed = self.builds.failed > build.failed_before;
                vec![Update::BuildStopped { drv: build.drv, failed }]
            }
            Some(ACT_COPY_PATH) => {
                // A finished copy moved all its bytes; the last progress report may be older.
                if let Some((done, expected)) = self.copies.remove(&id) {
                    self.bytes_finished += done.max(expected);
                }
                vec![]
            }
            _ => vec![],
        }
    }

    fn result(&mut self, id: u64, v: &Value) -> Vec<Update> {
        let rtype = v["type"].as_u64().unwrap_or(0);
        let fields = v["fields"].as_array().cloned().unwrap_or_default();
        let num = |i: usize| fields.get(i).and_then(Value::as_u64).unwrap_or(0);
        match rtype {
            RES_BUILD_LOG_LINE | RES_POST_BUILD_LOG_LINE => {
                let raw = fields.first().and_then(Value::as_str).unwrap_or("");
                let line = clean_all(raw.as_bytes());
                let drv = self.drv_of(id).unwrap_or_else(|| "nix".to_string());
                let tail = self.tails.entry(drv.clone()).or_default();
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                vec![Update::LogLine { drv, line }]
            }
            RES_SET_PHASE => {
                let phase = fields.first().and_then(Value::as_str).unwrap_or("?").to_string();
                let Some((_, build)) = self.builds_running.iter_mut().find(|(i, _)| *i == id) else {
                    return vec![];
                };
                build.phase = Some(phase.clone());
                let drv = build.drv.clone();
                self.phases.push((drv_name(&drv).to_string(), phase.clone()));
                vec![Update::Phase { drv, phase }]
            }
            RES_PROGRESS => {
                let counts = Counts { done: num(0), expected: num(1), running: num(2), failed: num(3) };
                match self.kinds.get(&id) {
                    Some(&ACT_BUILDS) => self.builds = counts,
                    Some(&ACT_COPY_PATHS) => self.downloads = counts,
                    Some(&ACT_COPY_PATH) => {
                        self.copies.insert(id, (counts.done, counts.expected));
                    }
                    _ => return vec![],
                }
                self.bytes_downloaded = self.bytes_finished + self.copies.values().map(|c| c.0).sum::<u64>();
                vec![Update::Progress]
            }
            _ => vec![],
        }
    }

    fn drv_of(&self, id: u64) -> Option<String> {
        self.builds_running.iter().find(|(i, _)| *i == id).map(|(_, b)| b.drv.clone())
    }

    /// The derivations building now, with their phase.
    pub fn running(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.builds_running.iter().map(|(_, b)| (b.drv.as_str(), b.phase.as_deref()))
    }

    /// The last log lines of `drv` (at most `TAIL_LINES`).
    pub fn tail(&self, drv: &str) -> Vec<String> {
        self.tails.get(drv).map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }

    /// The derivation whose builder failed, from nix's error messages
    /// (`builder for '/nix/store/…drv' failed …`), else the build that was running last.
    pub fn failed_drv(&self) -> Option<String> {
        let re = regex::Regex::new(r"/nix/store/[0-9a-z]{32}-[^\s'`]+\.drv").expect("valid regex");
        for e in &self.messages {
            if e.contains("builder for") || e.contains("build of") || e.contains("failed with exit code") {
                if let Some(m) = re.find(e) {
                    return Some(m.as_str().to_string());
                }
            }
        }
        if self.builds.failed > 0 {
            return self.started.last().cloned();
        }
        None
    }

    /// A one-line status: builds, downloads, what is building now.
    pub fn status(&self) -> String {
        let mut parts = vec![format!("builds {}/{}", self.builds.done, self.builds.expected)];
        if self.builds.failed > 0 {
            parts.push(format!("{} failed", self.builds.failed));
        }
        if self.downloads.expected > 0 || self.bytes_downloaded > 0 {
            parts.push(format!(
                "downloads {}/{} ({})",
                self.downloads.done,
                self.downloads.expected,
                crate::ui::human_bytes(self.bytes_downloaded)
            ));
        }
        let current: Vec<String> = self
            .running()
            .map(|(drv, phase)| match phase {
                Some(p) => format!("{} ({p})", drv_name(drv)),
                None => drv_name(drv).to_string(),
            })
            .collect();
        if !current.is_empty() {
            parts.push(format!("building {}", current.join(", ")));
        }
        parts.join(" · ")
    }
}

/// `/nix/store/<hash>-nixos-minimal.iso.drv` → `nixos-minimal.iso`.
pub fn drv_name(drv: &str) -> &str {
    let base = drv.rsplit('/').next().unwrap_or(drv);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => rest,
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV: &str = "/nix/store/qyxjmc8p7431394mbrvaz07zc47rh5hg-test-image-bad.drv";

    fn feed_all(t: &mut Tracker, lines: &[&str]) -> Vec<Update> {
        lines.iter().flat_map(|l| t.feed(l)).collect()
    }

    #[test]
    fn follows_a_failing_build_as_nix_2_8_reports_it() {
        // Recorded from nix 2.8.0 (`nix build --log-format internal-json`), shortened.
        let mut t = Tracker::new();
        let ups = feed_all(
            &mut t,
            &[
                r#"@nix {"action":"start","id":9,"level":0,"text":"","type":104}"#,
                r#"@nix {"action":"start","id":10,"level":0,"text":"","type":103}"#,
                r#"@nix {"action":"result","fields":[0,1,0,0],"id":9,"type":105}"#,
                r#"@nix {"action":"start","fields":["/nix/store/qyxjmc8p7431394mbrvaz07zc47rh5hg-test-image-bad.drv","",1,1],"id":13,"level":3,"text":"building '/nix/store/qyxjmc8p7431394mbrvaz07zc47rh5hg-test-image-bad.drv'","type":105}"#,
                r#"@nix {"action":"result","fields":[0,1,1,0],"id":9,"type":105}"#,
                r#"@nix {"action":"result","fields":["buildPhase"],"id":13,"type":104}"#,
                r#"@nix {"action":"result","fields":["line \u001b[1m1\u001b[0m"],"id":13,"type":101}"#,
                r#"@nix {"action":"result","fields":["boom"],"id":13,"type":101}"#,
                r#"@nix {"action":"result","fields":[0,0,0,1],"id":9,"type":105}"#,
                r#"@nix {"action":"stop","id":13}"#,
                r#"@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\u001b[31;1merror:\u001b[0m \u001b[35;1m\u001b[0mbuilder for '\u001b[35;1m/nix/store/qyxjmc8p7431394mbrvaz07zc47rh5hg-test-image-bad.drv\u001b[0m' failed with exit code 3\u001b[0m"}"#,
            ],
        );
        assert!(ups.contains(&Update::BuildStarted { drv: DRV.into(), machine: None }));
        assert!(ups.contains(&Update::Phase { drv: DRV.into(), phase: "buildPhase".into() }));
        assert!(ups.contains(&Update::LogLine { drv: DRV.into(), line: "line 1".into() }));
        assert_eq!(t.builds, Counts { done: 0, expected: 0, running: 0, failed: 1 });
        assert!(ups.contains(&Update::BuildStopped { drv: DRV.into(), failed: true }));
        assert_eq!(t.tail(DRV), vec!["line 1", "boom"]);
        assert_eq!(t.failed_drv().as_deref(), Some(DRV));
        assert!(t.messages[0].starts_with("error: builder for '/nix/store/"), "{:?}", t.messages);
        assert_eq!(t.phases, vec![("test-image-bad".to_string(), "buildPhase".to_string())]);
    }

    #[test]
    fn keeps_only_the_last_lines_of_a_build() {
        let mut t = Tracker::new();
        t.feed(&format!(r#"@nix {{"action":"start","fields":["{DRV}","",1,1],"id":1,"type":105}}"#));
        for i in 0..100 {
            t.feed(&format!(r#"@nix {{"action":"result","fields":["l{i}"],"id":1,"type":101}}"#));
        }
        let tail = t.tail(DRV);
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "l99");
        assert_eq!(tail[0], "l70");
    }

    #[test]
    fn counts_downloads_and_bytes() {
        let mut t = Tracker::new();
        feed_all(
            &mut t,
            &[
                r#"@nix {"action":"start","id":2,"type":103}"#,
                r#"@nix {"action":"start","id":3,"type":100,"text":"copying path"}"#,
                r#"@nix {"action":"result","fields":[1048576,2097152,0,0],"id":3,"type":105}"#,
                r#"@nix {"action":"stop","id":3}"#,
                r#"@nix {"action":"start","id":4,"type":100,"text":"copying path"}"#,
                r#"@nix {"action":"start","id":5,"type":101,"text":"downloading"}"#,
                r#"@nix {"action":"result","fields":[999,0,0,0],"id":5,"type":105}"#,
                r#"@nix {"action":"result","fields":[1048576,0,0,0],"id":4,"type":105}"#,
                r#"@nix {"action":"result","fields":[1,5,1,0],"id":2,"type":105}"#,
            ],
        );
        assert_eq!(t.downloads, Counts { done: 1, expected: 5, running: 1, failed: 0 });
        assert_eq!(t.bytes_downloaded, 2097152 + 1048576, "a finished copy counts its full size");
        assert!(t.status().contains("downloads 1/5 (3.0 MiB)"), "{}", t.status());
    }

    #[test]
    fn plain_stderr_lines_are_kept_and_errors_recognised() {
        let mut t = Tracker::new();
        let ups = t.feed("\x1b[31;1merror:\x1b[0m unrecognised flag '--bogus'");
        assert_eq!(ups, vec![Update::Message { level: 0, text: "error: unrecognised flag '--bogus'".into() }]);
        assert_eq!(t.messages.len(), 1);
        t.feed("warning: unable to download 'https://cache.nixos.org/nix-cache-info'");
        t.feed("these 2 paths will be fetched");
        assert_eq!(t.messages.len(), 2, "warnings are kept, other plain lines are not: {:?}", t.messages);
        assert!(t.feed("@nix {not json").is_empty());
    }

    #[test]
    fn names_derivations_without_hash() {
        assert_eq!(drv_name(DRV), "test-image-bad");
        assert_eq!(drv_name("foo.drv"), "foo");
    }
}
