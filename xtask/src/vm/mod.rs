//! The VM driver, split along the path of the data:
//! QEMU process → serial bytes → clean text → login → framed shell → checks → report.

pub mod boot;
pub mod checks;
pub mod interrupt;
pub mod login;
pub mod preflight;
pub mod progress;
pub mod qemu;
pub mod record;
pub mod report;
pub mod screen;
pub mod serial;
pub mod shell;
pub mod transcript;
pub mod verdict;

pub use interrupt::interrupted;
