//! Following the boot on the serial console: bootloader → kernel → init → a login line.
//! Each phase ends at the first line that shows the next one; a phase that leaves no trace
//! (e.g. `quiet` hides the kernel) is passed through in zero seconds.

use crate::diagnose::Phase;
use crate::vm::guest::Guest;
use crate::vm::serial::Wait;
use crate::vm::verdict::Failure;
use regex::Regex;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

static KERNEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)Linux version \d|^\[\s*\d+\.\d+\] |Decompressing Linux").unwrap());
static INIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?m)Run /\S+ as init process|<<< NixOS Stage [12] >>>|^Welcome to |systemd\[1\]: |^\[init\]|^Starting init",
    )
    .unwrap()
});
/// agetty's autologin line: `nixos login: nixos (automatic login)`.
pub static AUTOLOGIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\S+) login: (\S+) \(automatic login\)").unwrap());
/// The second half of the autologin line when it arrives after `login: `.
static AUTOLOGIN_REST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*(\S+) \(automatic login\)").unwrap());
/// A login prompt waiting for input: `login: ` at the very end of what arrived.
pub static LOGIN_PROMPT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)(?:^|\s)(\S*) ?login: *\z").unwrap());

/// How the console greeted us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// agetty logged `user` in by itself.
    Autologin { user: String },
    /// A `login:` prompt waits for a user name.
    Prompt,
}

pub struct Timeouts {
    /// From QEMU start to the login line.
    pub boot: Duration,
    /// No serial bytes for this long before init shows up → stop.
    pub stall: Duration,
    /// Same once init runs (systemd units can be silent for a minute under TCG).
    pub init_stall: Duration,
}

pub fn follow(guest: &mut Guest, t: &Timeouts, qemu_started: Instant) -> Result<Greeting, Failure> {
    let deadline = qemu_started + t.boot;
    let mut phase = Phase::Bootloader;
    guest.enter(phase);
    loop {
        let markers: Vec<(Phase, &Regex)> = [
            (Phase::Kernel, &*KERNEL),
            (Phase::Init, &*INIT),
            (Phase::Login, &*AUTOLOGIN),
            (Phase::Login, &*LOGIN_PROMPT),
        ]
        .into_iter()
        .filter(|(p, _)| *p > phase)
        .collect();
        let res: Vec<&Regex> = markers.iter().map(|(_, r)| *r).collect();
        let stall = if phase >= Phase::Init { t.init_stall } else { t.stall };
        let hit = guest.serial.expect(&res, Wait { deadline, stall: Some(stall) }).map_err(|stop| {
            Failure::from_stop(phase, stop, &mut guest.serial, &format!("waiting for the end of the {phase} phase"))
        })?;
        let (next, re) = markers[hit.index];
        if next > phase {
            guest.step(&format!("saw {:?}", hit.group(0).trim()));
            phase = next;
            guest.enter(next);
        }
        if std::ptr::eq(re, &*AUTOLOGIN) {
            return Ok(Greeting::Autologin { user: hit.group(2).to_string() });
        }
        if std::ptr::eq(re, &*LOGIN_PROMPT) {
            // `nixos login: ` may be the first half of the autologin line, still on its way.
            return match guest.serial.expect(&[&*AUTOLOGIN_REST], Wait::new(Duration::from_millis(1500), None)) {
                Ok(h) => Ok(Greeting::Autologin { user: h.group(1).to_string() }),
                Err(crate::vm::serial::Stop::Deadline) => Ok(Greeting::Prompt),
                Err(stop) => Err(Failure::from_stop(Phase::Login, stop, &mut guest.serial, "at the login prompt")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert!(KERNEL.is_match("[    0.000000] Linux version 6.1.0-56-amd64"));
        assert!(INIT.is_match("Run /init as init process"));
        assert!(INIT.is_match("x\n<<< NixOS Stage 1 >>>\n"));
        let c = AUTOLOGIN.captures("nixos login: nixos (automatic login)\n").unwrap();
        assert_eq!(&c[2], "nixos");
        assert!(LOGIN_PROMPT.is_match("\n\nnixos login: "));
        assert!(!LOGIN_PROMPT.is_match("nixos login: nixos (automatic login)\n"));
    }
}
