//! The VM driver, split along the path of the data:
//! QEMU process → serial bytes → clean text → login → framed shell → checks → report.

pub mod preflight;
pub mod report;
