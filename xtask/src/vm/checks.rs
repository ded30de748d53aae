//! The boot-image checks, run as root over the framed shell (issue 4):
//! tools present, storage provisioned (`/run/pre-nixos/storage-status`), VG `main` with LV
//! `slash`, IPv4 on `lan`, the pre-nixos unit finished (where systemd exists), and the
//! console line `LAN IPv4 address:` seen on serial. A failed check carries its evidence.

use crate::diagnose::Phase;
use crate::vm::login::command_failure;
use crate::vm::record::{Check, Record};
use crate::vm::serial::{Stop, Wait};
use crate::vm::shell::{Guest, Output};
use crate::vm::verdict::Failure;
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

/// Runs every check (a failing check does not stop the others). `Err` only when the guest
/// stops answering, QEMU exits or the user interrupts; failed checks are in `rec.checks`.
pub fn run_all(guest: &mut Guest, rec: &mut Record, t: &Timeouts) -> Result<(), Failure> {
    let mut c = Checker { guest, t, evidence_no: 0, dir: rec.dir.join("diagnostics") };
    const CHECKS: [&str; 7] =
        ["tools", "storage-status", "lvm", "lan-ipv4", "pre-nixos-unit", "failed-units", "serial-lan-line"];
    for name in CHECKS {
        let started = Instant::now();
        c.guest.serial.progress.note(&format!("check {name} …"));
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
        c.guest.transcript.log(&format!("check {name}: {} — {}", check.status, check.detail));
        c.guest.serial.progress.note(&format!("check {name}: {} — {}", check.status, check.detail));
        rec.checks.push(check);
        let _ = rec.write();
    }
    Ok(())
}

struct Checker<'a> {
    guest: &'a mut Guest,
    t: &'a Timeouts,
    evidence_no: usize,
    dir: camino::Utf8PathBuf,
}

fn check(status: &'static str, detail: impl Into<String>) -> Check {
    Check { name: String::new(), status, detail: detail.into(), evidence: String::new(), seconds: 0.0, finding: None }
}

impl Checker<'_> {
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
            check("pass", format!("{list} present"))
        } else {
            let mut c = check("fail", format!("missing: {}", missing.join(" ")));
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
        if done && state == "applied" && detail == "auto-applied" {
            return Ok(check("pass", "STATE=applied DETAIL=auto-applied"));
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
        } else if state == "plan-only" {
            (format!("STATE={state} DETAIL={detail}"), "storage-plan-only")
        } else if state == "failed" {
            (format!("STATE={state} DETAIL={detail}"), "provisioning-failed")
        } else {
            (format!("STATE={state} DETAIL={detail} (want STATE=applied DETAIL=auto-applied)"), "check-failed")
        };
        let mut c = check("fail", what);
        c.finding = Some(finding.into());
        c.evidence = self.storage_evidence()?;
        Ok(c)
    }

    fn lvm(&mut self) -> Result<Check, Failure> {
        let out = self.run("lvs --noheadings --separator '|' -o lv_name,vg_name")?;
        let pairs: Vec<String> = out.text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if out.code == 0 && pairs.iter().any(|p| p == "slash|main") {
            return Ok(check("pass", format!("LV slash in VG main (lvs: {})", pairs.join(", "))));
        }
        let mut c = check("fail", format!("no LV slash in VG main (lvs exit {}: {})", out.code, pairs.join(", ")));
        c.finding = Some("check-failed".into());
        c.evidence = format!("$ lvs\n{}\n{}", out.text, self.evidence("lvm", &["vgs", "lsblk -f"])?);
        Ok(c)
    }

    fn lan_ipv4(&mut self) -> Result<Check, Failure> {
        let (out, done) = self.poll("ip -o -4 addr show dev lan", self.t.network, &|o| o.text.contains(" inet "))?;
        if done {
            let addr = out.text.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or("?").to_string();
            return Ok(check("pass", format!("lan has {addr}")));
        }
        let mut c = check("fail", format!("no IPv4 address on `lan` after {:.0} s", self.t.network.as_secs_f64()));
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
            return Ok(check("skip", "no systemd in the guest (`command -v systemctl` failed)"));
        }
        let cmd = "systemctl show -p LoadState -p ActiveState -p SubState -p Result pre-nixos.service";
        let (out, done) = self.poll(cmd, self.t.unit, &|o| {
            o.text.contains("LoadState=not-found")
                || o.text.contains("ActiveState=inactive")
                || o.text.contains("ActiveState=failed")
        })?;
        let props = out.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let (status, finding) = if out.text.contains("LoadState=not-found") {
            ("fail", Some("unit-not-found"))
        } else if !done {
            ("fail", Some("unit-stuck"))
        } else if out.text.contains("ActiveState=failed") {
            ("fail", Some("provisioning-failed"))
        } else {
            ("pass", None)
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
            return Ok(check("skip", format!("`systemctl list-units` is not available here (exit {})", out.code)));
        }
        let units: Vec<&str> = out.text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        if units.is_empty() {
            return Ok(check("pass", "no failed units"));
        }
        let mut c = check("fail", format!("failed: {}", units.join(" ")));
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
            Some((line, text)) => check("pass", format!("serial line {line}: {}", text.trim())),
            None => {
                let mut c = check(
                    "fail",
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
