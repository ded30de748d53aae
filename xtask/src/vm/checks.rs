//! The boot-image checks, run as root over the framed shell (issue 4):
//! tools present, pre-nixos's outcome for the attached disks (`/run/pre-nixos/storage-status`,
//! VG `main` with LVs `swap` and `slash` where it provisions, see `vm::disks`), IPv4 on `lan`, the pre-nixos unit finished (where systemd exists), and the
//! console line `LAN IPv4 address:` seen on serial. A failed check carries its evidence.

use crate::diagnose::Phase;
use crate::vm::disks::Expect;
use crate::vm::events::Event;
use crate::vm::guest::{Guest, Output};
use crate::vm::login::command_failure;
use crate::vm::record::{Check, CheckStatus};
use crate::vm::serial::{Stop, Wait};
use crate::vm::verdict::Failure;
use camino::Utf8Path;
use std::time::{Duration, Instant};

pub const TOOLS: [&str; 4] = ["lsblk", "findmnt", "wipefs", "lvm"];
/// The serial watch name for the console line pre-nixos prints once the LAN has an address.
pub const LAN_LINE: &str = "lan-ipv4";
const POLL_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub command: Duration,
    pub storage: Duration,
    pub network: Duration,
    pub unit: Duration,
    pub serial_line: Duration,
}

/// Runs every check (a failing check does not stop the others), each reported as it starts
/// and finishes; evidence goes under `run_dir/diagnostics`. `Err` only when the guest stops
/// answering, QEMU exits or the user interrupts; failed checks are among those returned.
pub fn run_all(guest: &mut Guest, run_dir: &Utf8Path, t: &Timeouts, expect: Expect) -> Result<Vec<Check>, Failure> {
    let mut c = Checker { guest, t, expect, evidence_no: 0, dir: run_dir.join("diagnostics") };
    let mut done = Vec::new();
    const CHECKS: [&str; 7] =
        ["tools", "storage-status", "lvm", "lan-ipv4", "pre-nixos-unit", "failed-units", "serial-lan-line"];
    for name in CHECKS {
        let started = Instant::now();
        c.guest.emit(Event::CheckStarted(name));
        let mut check = match name {
            "tools" => c.tools(),
            "storage-status" => c.storage_status(),
            "lvm" => c.lvm(),
            "lan-ipv4" => c.lan_ipv4(),
            "pre-nixos-unit" => c.unit(),
            "failed-units" => c.failed_units(),
            _ => c.serial_line(),
        }?;
        check.name = name.to_string();
        check.seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
        c.guest.emit(Event::CheckFinished(&check));
        done.push(check);
    }
    Ok(done)
}

/// A command of the user's (`vm-test --run CMD`, `--run-file FILE`), run as root after the
/// built-in checks and recorded like one.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnCommand {
    pub command: String,
    /// Written `allow-fail: CMD`: a non-zero exit is recorded but does not fail the run.
    pub allow_fail: bool,
}

/// The prefix that lets a command fail without failing the run.
pub const ALLOW_FAIL: &str = "allow-fail:";
/// The longest check name a command gives (report tables, JUnit); the transcript has it whole.
const NAME_MAX: usize = 72;
/// The output kept as a command's evidence (the transcript has all of it).
const OUTPUT_MAX: usize = 64 * 1024;

impl std::str::FromStr for OwnCommand {
    type Err = String;
    fn from_str(line: &str) -> Result<OwnCommand, String> {
        let (allow_fail, command) = match line.trim().strip_prefix(ALLOW_FAIL) {
            Some(rest) => (true, rest.trim()),
            None => (false, line.trim()),
        };
        if command.is_empty() {
            return Err(format!("`{line}`: an empty command"));
        }
        if command.contains('\n') {
            return Err("a command is one line (put several in a --run-file, one per line)".into());
        }
        Ok(OwnCommand { command: command.to_string(), allow_fail })
    }
}

/// A `--run-file`: one command per line; blank lines and lines starting with `#` are skipped.
pub fn parse_run_file(text: &str) -> Result<Vec<OwnCommand>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| l.parse().map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// Runs the user's commands as root, framed like every other command, each reported as a
/// check (`run: CMD`): exit code in the detail, output as evidence. `Err` only when the guest
/// stops answering (a command that outlives `--command-timeout` does that).
pub fn run_own(guest: &mut Guest, commands: &[OwnCommand], timeout: Duration) -> Result<Vec<Check>, Failure> {
    let mut done = Vec::new();
    for c in commands {
        let mut name = format!("run: {}", c.command);
        if name.chars().count() > NAME_MAX {
            name = name.chars().take(NAME_MAX - 1).collect::<String>() + "…";
        }
        guest.emit(Event::CheckStarted(&name));
        // A subshell: `exit`, `cd`, `set -e` in a user's command cannot touch the harness's
        // root shell. Newlines (not `( CMD )`) so a trailing `# comment` cannot eat the `)`.
        let out = guest
            .run(&format!("(\n{}\n)", c.command), timeout)
            .map_err(|f| command_failure(Phase::Checks, f, guest))?;
        let status = if out.code == 0 || c.allow_fail { CheckStatus::Pass } else { CheckStatus::Fail };
        let allowed = if out.code != 0 && c.allow_fail { " (allowed to fail)" } else { "" };
        let mut evidence = out.text;
        if evidence.len() > OUTPUT_MAX {
            let cut = evidence.floor_char_boundary(OUTPUT_MAX);
            evidence.truncate(cut);
            evidence.push_str("\n[… cut: transcript.log has the whole output]");
        }
        let check = Check {
            name,
            status,
            detail: format!("exit {}{allowed}", out.code),
            evidence,
            seconds: (out.seconds * 100.0).round() / 100.0,
            finding: None,
        };
        guest.emit(Event::CheckFinished(&check));
        done.push(check);
    }
    Ok(done)
}

struct Checker<'a, 's> {
    guest: &'a mut Guest<'s>,
    t: &'a Timeouts,
    expect: Expect,
    evidence_no: usize,
    dir: camino::Utf8PathBuf,
}

fn check(status: CheckStatus, detail: impl Into<String>) -> Check {
    Check { name: String::new(), status, detail: detail.into(), evidence: String::new(), seconds: 0.0, finding: None }
}

impl Checker<'_, '_> {
    fn run(&mut self, command: &str) -> Result<Output, Failure> {
        self.guest.run(command, self.t.command).map_err(|f| command_failure(Phase::Checks, f, self.guest))
    }

    fn has(&mut self, tool: &str) -> Result<bool, Failure> {
        Ok(self.run(&format!("command -v {tool}"))?.code == 0)
    }

    /// Runs `command` every 2 s until `done` says so or `timeout` passes; returns the last output.
    fn poll(
        &mut self,
        command: &str,
        timeout: Duration,
        done: &dyn Fn(&Output) -> bool,
    ) -> Result<(Output, bool), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.run(command)?;
            if done(&out) {
                return Ok((out, true));
            }
            if Instant::now() + POLL_EVERY > deadline {
                return Ok((out, false));
            }
            // Keep reading serial while waiting (console lines, detector findings).
            match self.guest.serial.wait_until(Wait::new(POLL_EVERY, None), &mut |_| false) {
                Err(Stop::Deadline) | Ok(()) => {}
                Err(s) => return Err(Failure::from_stop(Phase::Checks, s, &mut self.guest.serial, command)),
            }
        }
    }

    /// Runs evidence commands, files each under diagnostics/, and returns them joined.
    fn evidence(&mut self, label: &str, commands: &[&str]) -> Result<String, Failure> {
        let _ = fs_err::create_dir_all(&self.dir);
        let mut all = String::new();
        for cmd in commands {
            let out = match self.guest.run(cmd, self.t.command) {
                Ok(o) => o,
                Err(f) => return Err(command_failure(Phase::Checks, f, self.guest)),
            };
            self.evidence_no += 1;
            let body = format!("$ {cmd}\n(exit {})\n{}", out.code, out.text);
            let _ = fs_err::write(self.dir.join(format!("{label}-{:02}.log", self.evidence_no)), &body);
            all.push_str(&body);
            all.push('\n');
        }
        Ok(all)
    }

    /// The evidence for anything storage- or unit-related.
    fn storage_evidence(&mut self) -> Result<String, Failure> {
        let mut cmds = vec!["cat /run/pre-nixos/storage-status", "lsblk -f", "dmesg | tail -n 30"];
        if self.has("journalctl")? {
            cmds.insert(1, "journalctl -b -u pre-nixos --no-pager | tail -n 60");
        }
        if self.has("systemctl")? {
            cmds.insert(1, "systemctl status pre-nixos --no-pager");
        }
        self.evidence("storage", &cmds)
    }

    fn tools(&mut self) -> Result<Check, Failure> {
        let list = TOOLS.join(" ");
        let out = self
            .run(&format!(r#"for t in {list}; do printf '%s=%s\n' "$t" "$(command -v "$t" || echo MISSING)"; done"#))?;
        let missing: Vec<&str> = out.text.lines().filter_map(|l| l.strip_suffix("=MISSING")).collect();
        let found = out.text.lines().filter(|l| l.contains('=') && !l.ends_with("=MISSING")).count();
        Ok(if missing.is_empty() && found == TOOLS.len() {
            check(CheckStatus::Pass, format!("{list} present"))
        } else {
            let mut c = check(CheckStatus::Fail, format!("missing: {}", missing.join(" ")));
            c.evidence = out.text;
            c.finding = Some("check-failed".into());
            c
        })
    }

    fn storage_status(&mut self) -> Result<Check, Failure> {
        // A unit that failed before writing the status will never write it: stop waiting.
        let cmd = "cat /run/pre-nixos/storage-status 2>/dev/null || \
                   { systemctl is-failed --quiet pre-nixos.service >/dev/null 2>&1 && echo 'UNIT FAILED'; }";
        let (out, done) =
            self.poll(cmd, self.t.storage, &|o| o.text.lines().any(|l| l.starts_with("STATE=") || l == "UNIT FAILED"))?;
        let value = |key: &str| out.text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").trim().to_string();
        let (state, detail) = (value("STATE="), value("DETAIL="));
        let want = format!("STATE={} DETAIL={}", self.expect.state, self.expect.detail);
        if done && state == self.expect.state && detail == self.expect.detail {
            return Ok(check(CheckStatus::Pass, want));
        }
        let unit_failed = out.text.lines().any(|l| l == "UNIT FAILED");
        let (what, finding) = if unit_failed {
            // The console often names why (`Unit systemd-networkd.service not found.`).
            let not_found = self.guest.serial.findings().iter().any(|f| f.id == "unit-not-found");
            (
                "pre-nixos.service failed before writing /run/pre-nixos/storage-status".to_string(),
                if not_found { "unit-not-found" } else { "provisioning-failed" },
            )
        } else if !done {
            (
                format!("no STATE= in /run/pre-nixos/storage-status after {:.0} s", self.t.storage.as_secs_f64()),
                "unit-stuck",
            )
        } else if detail == "detection-error" {
            (format!("STATE={state} DETAIL={detail}"), "storage-detection-error")
        } else if state == "plan-only" && self.expect.state != "plan-only" {
            (format!("STATE={state} DETAIL={detail}"), "storage-plan-only")
        } else if state == "failed" {
            (format!("STATE={state} DETAIL={detail}"), "provisioning-failed")
        } else {
            (format!("STATE={state} DETAIL={detail} (want {want})"), "check-failed")
        };
        let mut c = check(CheckStatus::Fail, what);
        c.finding = Some(finding.into());
        c.evidence = self.storage_evidence()?;
        Ok(c)
    }

    /// VG `main` with LVs `swap` and `slash` on the expected disk, or no VG `main` at all;
    /// disks that must stay blank carry no signature.
    fn lvm(&mut self) -> Result<Check, Failure> {
        let rows = |text: &str| -> Vec<String> {
            text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
        };
        let lvs = self.run("lvs --noheadings --separator '|' -o lv_name,vg_name 2>&1")?;
        let pvs = self.run("pvs --noheadings --separator '|' -o pv_name,vg_name 2>&1")?;
        let (lvs, pvs) = (rows(&lvs.text), rows(&pvs.text));
        let seen = format!("lvs: {}; pvs: {}", lvs.join(", "), pvs.join(", "));
        let mut problems = Vec::new();
        match self.expect.vg_on {
            Some(pv) => {
                for lv in ["swap|main", "slash|main"] {
                    if !lvs.iter().any(|l| l == lv) {
                        problems.push(format!("no LV {} in VG main", &lv[..lv.len() - 5]));
                    }
                }
                let on: Vec<&String> = pvs.iter().filter(|p| p.ends_with("|main")).collect();
                if on.len() != 1 || !on[0].starts_with(&format!("{pv}|")) {
                    problems.push(format!("VG main is not on {pv} alone"));
                }
            }
            None if lvs.iter().chain(&pvs).any(|l| l.ends_with("|main")) => {
                problems.push("a VG main exists although pre-nixos must not provision".into())
            }
            None => {}
        }
        for disk in self.expect.blank {
            let out = self.run(&format!("wipefs --noheadings --output TYPE {disk}"))?;
            if out.code != 0 || !out.text.trim().is_empty() {
                problems.push(format!("{disk} is not blank (wipefs exit {}: {})", out.code, out.text.trim()));
            }
        }
        let what = match self.expect.vg_on {
            Some(pv) => format!("VG main on {pv} with LVs swap and slash"),
            None => "no VG main".to_string(),
        };
        let blank = if self.expect.blank.is_empty() {
            String::new()
        } else {
            format!(", {} blank", self.expect.blank.join(" "))
        };
        if problems.is_empty() {
            return Ok(check(CheckStatus::Pass, format!("{what}{blank} ({seen})")));
        }
        let mut c = check(CheckStatus::Fail, format!("{} ({seen})", problems.join("; ")));
        c.finding = Some("check-failed".into());
        c.evidence = self.evidence("lvm", &["vgs", "lsblk -f"])?;
        Ok(c)
    }

    fn lan_ipv4(&mut self) -> Result<Check, Failure> {
        let (out, done) = self.poll("ip -o -4 addr show dev lan", self.t.network, &|o| o.text.contains(" inet "))?;
        if done {
            let addr = out.text.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or("?").to_string();
            return Ok(check(CheckStatus::Pass, format!("lan has {addr}")));
        }
        let mut c =
            check(CheckStatus::Fail, format!("no IPv4 address on `lan` after {:.0} s", self.t.network.as_secs_f64()));
        c.finding = Some("check-failed".into());
        c.evidence = format!(
            "$ ip -o -4 addr show dev lan\n{}\n{}",
            out.text,
            self.evidence("network", &["ip addr", "ip route"])?
        );
        Ok(c)
    }

    fn unit(&mut self) -> Result<Check, Failure> {
        if !self.has("systemctl")? {
            return Ok(check(CheckStatus::Skip, "no systemd in the guest (`command -v systemctl` failed)"));
        }
        let cmd = "systemctl show -p LoadState -p ActiveState -p SubState -p Result pre-nixos.service";
        let (out, done) = self.poll(cmd, self.t.unit, &|o| {
            o.text.contains("LoadState=not-found")
                || o.text.contains("ActiveState=inactive")
                || o.text.contains("ActiveState=failed")
        })?;
        let props = out.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let (status, finding) = if out.text.contains("LoadState=not-found") {
            (CheckStatus::Fail, Some("unit-not-found"))
        } else if !done {
            (CheckStatus::Fail, Some("unit-stuck"))
        } else if out.text.contains("ActiveState=failed") {
            (CheckStatus::Fail, Some("provisioning-failed"))
        } else {
            (CheckStatus::Pass, None)
        };
        let mut c = check(status, props);
        if let Some(f) = finding {
            c.finding = Some(f.into());
            let mut ev = self.storage_evidence()?;
            if f == "unit-stuck" {
                ev.push_str(&self.evidence("unit", &["systemctl list-jobs --no-pager"])?);
            }
            c.evidence = ev;
        }
        Ok(c)
    }

    /// No unit in the `failed` state (`[FAILED] Failed to start …` at boot, or later).
    fn failed_units(&mut self) -> Result<Check, Failure> {
        let out = self.run("systemctl list-units --state=failed --no-legend --plain --no-pager")?;
        if out.code != 0 {
            return Ok(check(
                CheckStatus::Skip,
                format!("`systemctl list-units` is not available here (exit {})", out.code),
            ));
        }
        let units: Vec<&str> = out.text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        if units.is_empty() {
            return Ok(check(CheckStatus::Pass, "no failed units"));
        }
        let mut c = check(CheckStatus::Fail, format!("failed: {}", units.join(" ")));
        c.finding = Some("unit-failed".into());
        let status: Vec<String> =
            units.iter().take(3).map(|u| format!("systemctl status {u} --no-pager --lines=20")).collect();
        c.evidence = self.evidence("failed-units", &status.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(c)
    }

    fn serial_line(&mut self) -> Result<Check, Failure> {
        let waited =
            self.guest.serial.wait_until(Wait::new(self.t.serial_line, None), &mut |s| s.seen(LAN_LINE).is_some());
        match waited {
            Ok(()) | Err(Stop::Deadline) => {}
            Err(s) => {
                return Err(Failure::from_stop(
                    Phase::Checks,
                    s,
                    &mut self.guest.serial,
                    "waiting for `LAN IPv4 address:`",
                ))
            }
        }
        Ok(match self.guest.serial.seen(LAN_LINE) {
            Some((line, text)) => check(CheckStatus::Pass, format!("serial line {line}: {}", text.trim())),
            None => {
                let mut c = check(
                    CheckStatus::Fail,
                    format!("no `LAN IPv4 address:` line on serial within {:.0} s", self.t.serial_line.as_secs_f64()),
                );
                // The line went to /dev/console; with ttyS0 not last that is not the serial port.
                let console_not_last = self.guest.serial.findings().iter().any(|f| f.id == "console-not-last");
                c.finding = Some(if console_not_last { "console-not-last" } else { "check-failed" }.into());
                c
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_commands_parse_with_and_without_allow_fail() {
        let c: OwnCommand = "journalctl -u pre-nixos --no-pager".parse().unwrap();
        assert_eq!(c, OwnCommand { command: "journalctl -u pre-nixos --no-pager".into(), allow_fail: false });
        let c: OwnCommand = "allow-fail:  systemctl status sshd".parse().unwrap();
        assert_eq!(c, OwnCommand { command: "systemctl status sshd".into(), allow_fail: true });
        assert!("   ".parse::<OwnCommand>().is_err());
        assert!("allow-fail:".parse::<OwnCommand>().is_err());
        let file = "# evidence\nlsblk -f\n\n  # indented comment\nallow-fail: false\n";
        let all = parse_run_file(file).unwrap();
        let got: Vec<_> = all.iter().map(|c| (c.command.as_str(), c.allow_fail)).collect();
        assert_eq!(got, [("lsblk -f", false), ("false", true)]);
        assert_eq!(parse_run_file("ok\nallow-fail:\n").unwrap_err(), "line 2: `allow-fail:`: an empty command");
    }
}
