//! The VM driver, split along the path of the data:
//! QEMU process → serial bytes → clean text → login → framed shell → checks → report.
//! The layers report what happens as `events`; the verb that drives them decides who listens.

pub mod boot;
pub mod bootmenu;
pub mod checks;
pub mod disks;
pub mod events;
pub mod guest;
pub mod login;
pub mod machine;
pub mod preflight;
pub mod progress;
pub mod qemu;
pub mod record;
pub mod report;
pub mod screen;
pub mod serial;
pub mod transcript;
pub mod verdict;
