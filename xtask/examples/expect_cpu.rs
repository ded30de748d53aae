//! Measures what waiting costs: expectrl's `expect()` against the `poll()`-then-read wait that
//! the serial driver uses (xtask/src/vm/serial.rs). Each waits for the same child, which stays
//! silent for `SECONDS` and then prints `ready`, the way a booting guest keeps the console
//! quiet. Prints wall time and this process's CPU time (getrusage) for each.
//!
//!     cargo run --release -p xtask --example expect_cpu [SECONDS]
//!
//! ARCHITECTURE.md ("Package decisions") cites its output: the reason vm/serial.rs waits with
//! poll() on a Unix socket and does not use expectrl.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use expectrl::Expect;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn silent_then_ready(seconds: u64) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("sleep {seconds}; echo ready")]);
    c
}

fn measure(name: &str, wait: impl FnOnce()) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    wait();
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    println!("{name:<28} wall {wall:6.2} s   cpu {cpu:6.3} s   = {:5.1} % of one core", 100.0 * cpu / wall);
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    println!("waiting {seconds} s for a silent child to print `ready`:");

    measure("expectrl 0.9 expect()", || {
        let mut session = expectrl::Session::spawn(silent_then_ready(seconds)).expect("spawn on a pty");
        session.set_expect_timeout(Some(Duration::from_secs(seconds + 10)));
        session.expect("ready").expect("ready arrives");
    });

    measure("poll() then read (vm/serial)", || {
        let mut child = silent_then_ready(seconds).stdout(Stdio::piped()).spawn().expect("spawn");
        let mut out = child.stdout.take().expect("piped");
        let mut seen = Vec::new();
        while !seen.ends_with(b"ready\n") {
            let mut fds = [libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one valid pollfd, blocking until readable.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
            let mut buf = [0u8; 4096];
            let n = out.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        child.wait().expect("child ends");
    });
}
