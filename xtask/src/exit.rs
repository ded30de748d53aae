//! Exit codes shared by every verb.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the thing under test failed (image failed to boot, a check failed, doctor found a failure) |
//! | 2 | usage error (bad flags) |
//! | 3 | infrastructure: a tool is missing, QEMU failed to start, a bad ISO path, nix failed |
//! | 130 | interrupted (Ctrl-C) |

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const INFRA: u8 = 3;
pub const INTERRUPTED: u8 = 130;

/// An error that carries its exit code. Any other `anyhow::Error` exits with 1.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// An infrastructure error (exit 3): the message should name the cause and the next step.
pub fn infra(message: impl Into<String>) -> anyhow::Error {
    Exit { code: INFRA, message: message.into() }.into()
}

/// A usage error (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Exit { code: USAGE, message: message.into() }.into()
}

/// Verbs return `Ok(code)`; errors are printed once here, with their cause chain.
pub fn report(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = err.downcast_ref::<Exit>().map_or(FAILED, |e| e.code);
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}
