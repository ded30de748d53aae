//! Driving the bootloader's menu on the serial line instead of waiting out its countdown.
//!
//! NixOS's ISO shows a 10 s menu in ISOLINUX (BIOS) and in GRUB (UEFI). Once the menu is on
//! the line, Enter boots the highlighted (default) entry at once. The serial rescue edits the
//! default entry instead, appending `console=ttyS0,115200n8` (last, so it becomes
//! /dev/console): ISOLINUX's menu opens the entry's command line on Tab (the cursor at its
//! end); GRUB opens the entry's script on `e`, where the cursor goes down to the `linux` line,
//! to its end (Ctrl-E), and Ctrl-X boots the edited entry. The menu text is matched on clean
//! text (`strip_escapes` has removed ISOLINUX's charset switches and GRUB's cursor moves).

use regex::Regex;
use std::sync::LazyLock;

/// ISOLINUX's menu.c32 (`Press [Tab] to edit options`, `Automatic boot in 10 seconds...`).
pub static ISOLINUX_MENU: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Press \[Tab\] to edit options|Automatic boot in \d+ seconds?").unwrap());
/// GRUB's menu (`The highlighted entry will be executed automatically in 10s.`, `Use the ^ and
/// v keys to select which entry is highlighted.`).
pub static GRUB_MENU: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"will be executed automatically in \d+s|Use the \S+ and \S+ keys to select which entry").unwrap()
});
/// GRUB's entry editor is open (`Press Ctrl-x to start`, `Minimum Emacs-like screen editing`).
pub static GRUB_EDITOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)Minimum Emacs-like screen editing|Ctrl-x\S* to (start|boot)").unwrap());
/// menu.c32's command-line editor after Tab: `> .linux /boot/bzImage … initrd=/boot/initrd`.
pub static ISOLINUX_EDITOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"> \S*linux \S+|> [^\n]*initrd=").unwrap());
/// The firmware's and GRUB's own lines under UEFI: steps in the bootloader phase.
pub static UEFI_MILESTONES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"BdsDxe: (loading|starting) Boot\S+[^\n]*|Welcome to GRUB!").unwrap());

/// What to append to the default entry's kernel command line to rescue the serial console.
pub const SERIAL_CONSOLE: &str = "console=ttyS0,115200n8";

/// Which menu it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    Isolinux,
    Grub,
}

impl Menu {
    pub fn name(self) -> &'static str {
        match self {
            Menu::Isolinux => "ISOLINUX",
            Menu::Grub => "GRUB",
        }
    }
}

/// How to drive the menu, decided before boot (flags + preflight).
#[derive(Debug, Clone, Default)]
pub struct Drive {
    /// Press Enter as soon as the menu shows (off with `--bootloader-wait`).
    pub skip_countdown: bool,
    /// Edit the default entry and append this (`Some` when preflight found the console missing
    /// or not last, and `--no-rescue` is not given).
    pub rescue: Option<Rescue>,
}

impl Drive {
    /// Whether anything is to be done at the menu at all.
    pub fn active(&self) -> bool {
        self.skip_countdown || self.rescue.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Rescue {
    /// The text appended (with a leading space) to the kernel command line.
    pub append: String,
    /// Lines above the `linux` line in GRUB's editor of the default entry.
    pub grub_lines_before_linux: usize,
}

/// The keys that open the default entry's editor.
pub fn open_editor(menu: Menu) -> &'static str {
    match menu {
        Menu::Isolinux => "\t",
        Menu::Grub => "e",
    }
}

/// The keys that append `rescue.append` to the kernel command line in the open editor and boot.
pub fn append_and_boot(menu: Menu, rescue: &Rescue) -> String {
    match menu {
        // The cursor already sits at the end of the command line.
        Menu::Isolinux => format!(" {}\r", rescue.append),
        // Down (ESC [ B) to the linux line, Ctrl-E to its end, the text, Ctrl-X to boot.
        Menu::Grub => format!("{}\x05 {}\x18", "\x1b[B".repeat(rescue.grub_lines_before_linux), rescue.append),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menus_are_recognised_on_clean_text() {
        assert!(ISOLINUX_MENU.is_match("xmqqqqjPress [Tab] to edit optionsAutomatic boot in 10 seconds..."));
        assert!(ISOLINUX_MENU.is_match("Automatic boot in 1 second..."));
        assert!(GRUB_MENU.is_match("      The highlighted entry will be executed automatically in 10s."));
        assert!(GRUB_MENU.is_match("Use the ^ and v keys to select which entry is highlighted."));
        assert!(UEFI_MILESTONES.is_match("BdsDxe: loading Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0)"));
        assert!(UEFI_MILESTONES.is_match("Welcome to GRUB!"));
        assert!(!ISOLINUX_MENU.is_match("Loading /boot/bzImage... ok"));
        assert!(ISOLINUX_EDITOR
            .is_match("Installer  x> .linux /boot/bzImage root=LABEL=x console=tty0 initrd=/boot/initrd"));
    }

    #[test]
    fn rescue_keys_append_the_serial_console_last() {
        let rescue = Rescue { append: SERIAL_CONSOLE.into(), grub_lines_before_linux: 1 };
        assert_eq!(append_and_boot(Menu::Isolinux, &rescue), " console=ttyS0,115200n8\r");
        assert_eq!(append_and_boot(Menu::Grub, &rescue), "\x1b[B\x05 console=ttyS0,115200n8\x18");
        assert_eq!((open_editor(Menu::Isolinux), open_editor(Menu::Grub)), ("\t", "e"));
    }
}
