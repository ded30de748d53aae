//! Boot phases and the catalogue of known failure signatures, read from clean serial text.
//! One implementation, used live by `vm-test` and offline by `analyze`.
//! (Being built in its issue; the types below are the contract both verbs use.)

use serde::Serialize;

/// Boot phases in the order a healthy run passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Qemu,
    Bootloader,
    Kernel,
    Init,
    Login,
    Shell,
    Root,
    Checks,
    Poweroff,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Qemu,
        Phase::Bootloader,
        Phase::Kernel,
        Phase::Init,
        Phase::Login,
        Phase::Shell,
        Phase::Root,
        Phase::Checks,
        Phase::Poweroff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Qemu => "qemu",
            Phase::Bootloader => "bootloader",
            Phase::Kernel => "kernel",
            Phase::Init => "init",
            Phase::Login => "login",
            Phase::Shell => "shell",
            Phase::Root => "root",
            Phase::Checks => "checks",
            Phase::Poweroff => "poweroff",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
