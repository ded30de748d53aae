//! What the VM driver reports as it goes. The serial line, the guest shell, the boot follower,
//! login and the checks emit `Event`s into a `Sink` and know nothing of who listens: they
//! neither draw on the terminal nor write the record. `vm-test` connects its sink to the
//! progress line, `transcript.log` and `metadata.json`; `bench` or a parallel matrix can drive
//! the same layers with another sink.

use crate::diagnose::Phase;
use crate::vm::record::{Check, Milestone};

#[derive(Debug)]
pub enum Event<'a> {
    /// The run entered a phase.
    Phase(Phase),
    /// The running phase ended and no other follows (`--keep` leaves the guest running).
    PhaseEnded,
    /// The latest serial line, after every read or quiet poll (a sink rate-limits drawing).
    Line(&'a str),
    /// A step of the dialogue: what the harness sent, what came back, what it concluded.
    Step(&'a str),
    /// A fact worth keeping with the run (who logged in, how root was reached).
    Note(&'a str),
    /// A moment worth comparing across runs, in seconds since QEMU started.
    Milestone(Milestone, f64),
    CheckStarted(&'a str),
    CheckFinished(&'a Check),
}

pub trait Sink {
    fn event(&mut self, event: Event<'_>);
}

/// Ignores every event (tests of the layers, runs nobody watches).
impl Sink for () {
    fn event(&mut self, _: Event<'_>) {}
}
