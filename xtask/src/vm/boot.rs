//! Following the boot on the serial console: bootloader → kernel → init → a login line.
//! Each phase ends at the first line that shows the next one; a phase that leaves no trace
//! (e.g. `quiet` hides the kernel) is passed through in zero seconds.

use crate::diagnose::Phase;
use crate::vm::bootmenu::{self, Drive, Menu};
use crate::vm::events::Event;
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
        // `^Welcome to .+!`: systemd prints its welcome whole; a bare `^Welcome to ` matched
        // GRUB's `Welcome to GRUB!` when the line arrived split (`Welcome to ` | `GRUB!`).
        r"(?m)Run /\S+ as init process|<<< NixOS Stage [12] >>>|^Welcome to .+!|systemd\[1\]: |^\[init\]|^Starting init",
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

/// How the boot went up to the login line.
#[derive(Debug)]
pub struct Followed {
    pub greeting: Greeting,
    /// The menu whose default entry got the serial console appended (`Drive::rescue`).
    pub rescued_at: Option<Menu>,
}

/// What a bootloader-phase line means besides the next phase.
#[derive(Clone, Copy)]
enum Marker {
    Phase(Phase),
    Menu(Menu),
    /// OVMF and GRUB lines under UEFI: a step on record, the phase goes on.
    Firmware,
}

pub fn follow(guest: &mut Guest, t: &Timeouts, drive: &Drive, qemu_started: Instant) -> Result<Followed, Failure> {
    let deadline = qemu_started + t.boot;
    let mut phase = Phase::Bootloader;
    let mut menu_done = !drive.active();
    let mut rescued_at = None;
    guest.enter(phase);
    loop {
        let mut markers: Vec<(Marker, &Regex)> = [
            (Phase::Kernel, &*KERNEL),
            (Phase::Init, &*INIT),
            (Phase::Login, &*AUTOLOGIN),
            (Phase::Login, &*LOGIN_PROMPT),
        ]
        .into_iter()
        .filter(|(p, _)| *p > phase)
        .map(|(p, re)| (Marker::Phase(p), re))
        .collect();
        if phase == Phase::Bootloader {
            // First: at the same position they win over INIT's `^Welcome to ` (GRUB's welcome).
            let mut firmware = vec![(Marker::Firmware, &*bootmenu::UEFI_MILESTONES)];
            if !menu_done {
                firmware.push((Marker::Menu(Menu::Isolinux), &*bootmenu::ISOLINUX_MENU));
                firmware.push((Marker::Menu(Menu::Grub), &*bootmenu::GRUB_MENU));
            }
            markers.splice(0..0, firmware);
        }
        let res: Vec<&Regex> = markers.iter().map(|(_, r)| *r).collect();
        let stall = if phase >= Phase::Init { t.init_stall } else { t.stall };
        let hit = guest.serial.expect(&res, Wait { deadline, stall: Some(stall) }).map_err(|stop| {
            Failure::from_stop(phase, stop, &mut guest.serial, &format!("waiting for the end of the {phase} phase"))
        })?;
        let (marker, re) = markers[hit.index];
        let next = match marker {
            Marker::Firmware => {
                guest.step(&format!("firmware: {}", hit.group(0).trim()));
                continue;
            }
            Marker::Menu(menu) => {
                menu_done = true;
                drive_menu(guest, menu, drive)?;
                rescued_at = drive.rescue.as_ref().map(|_| menu);
                continue;
            }
            Marker::Phase(next) => next,
        };
        if next > phase {
            guest.step(&format!("saw {:?}", hit.group(0).trim()));
            phase = next;
            guest.enter(next);
        }
        if std::ptr::eq(re, &*AUTOLOGIN) {
            return Ok(Followed { greeting: Greeting::Autologin { user: hit.group(2).to_string() }, rescued_at });
        }
        if std::ptr::eq(re, &*LOGIN_PROMPT) {
            // `nixos login: ` may be the first half of the autologin line, still on its way.
            let greeting = match guest.serial.expect(&[&*AUTOLOGIN_REST], Wait::new(Duration::from_millis(1500), None))
            {
                Ok(h) => Greeting::Autologin { user: h.group(1).to_string() },
                Err(crate::vm::serial::Stop::Deadline) => Greeting::Prompt,
                Err(stop) => {
                    return Err(Failure::from_stop(Phase::Login, stop, &mut guest.serial, "at the login prompt"))
                }
            };
            return Ok(Followed { greeting, rescued_at });
        }
    }
}

/// At the menu: Enter for the default entry, or (serial rescue) its editor, the console
/// appended, and boot.
fn drive_menu(guest: &mut Guest, menu: Menu, drive: &Drive) -> Result<(), Failure> {
    let send = |guest: &mut Guest, shown: &str, keys: &str| {
        guest.type_line(shown, keys).map_err(|s| Failure::from_stop(Phase::Bootloader, s, &mut guest.serial, shown))
    };
    let Some(rescue) = &drive.rescue else {
        return send(guest, &format!("Enter at the {} menu (skipping its countdown)", menu.name()), "\r");
    };
    send(guest, &format!("{} menu: open the default entry's editor", menu.name()), bootmenu::open_editor(menu))?;
    // Typing before the editor is drawn would land in the menu; the editor shows in well
    // under a second, so a missing sign of it is not worth failing over.
    let editor = match menu {
        Menu::Isolinux => &*bootmenu::ISOLINUX_EDITOR,
        Menu::Grub => &*bootmenu::GRUB_EDITOR,
    };
    if let Err(stop) = guest.serial.expect(&[editor], Wait::new(Duration::from_secs(5), None)) {
        if !matches!(stop, crate::vm::serial::Stop::Deadline) {
            return Err(Failure::from_stop(Phase::Bootloader, stop, &mut guest.serial, "opening the entry editor"));
        }
        guest.step("the entry editor did not show within 5 s; typing anyway");
    }
    let shown = format!("serial rescue: append `{}` to the default entry and boot it", rescue.append);
    send(guest, &shown, &bootmenu::append_and_boot(menu, rescue))?;
    guest.emit(Event::Note(&format!(
        "serial rescue: {} default entry edited at the menu, `{}` appended to its kernel command line",
        menu.name(),
        rescue.append
    )));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert!(KERNEL.is_match("[    0.000000] Linux version 6.1.0-56-amd64"));
        assert!(INIT.is_match("Run /init as init process"));
        assert!(INIT.is_match("Welcome to NixOS 25.05 (Warbler)!"));
        assert!(!INIT.is_match("Welcome to "), "half of GRUB's welcome, still arriving");
        assert!(INIT.is_match("x\n<<< NixOS Stage 1 >>>\n"));
        let c = AUTOLOGIN.captures("nixos login: nixos (automatic login)\n").unwrap();
        assert_eq!(&c[2], "nixos");
        assert!(LOGIN_PROMPT.is_match("\n\nnixos login: "));
        assert!(!LOGIN_PROMPT.is_match("nixos login: nixos (automatic login)\n"));
    }
}
