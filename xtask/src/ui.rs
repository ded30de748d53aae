//! Terminal presentation shared by the verbs: colour and glyphs on a TTY, plain text otherwise.

use std::io::IsTerminal;

/// Whether stdout is a terminal that should get colour and glyphs (honours `NO_COLOR`).
pub fn fancy_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stderr is a terminal (for live progress lines).
pub fn fancy_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
}

/// Wraps `text` in an SGR colour when `fancy`.
pub fn paint(fancy: bool, tone: Tone, text: &str) -> String {
    if !fancy {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Seconds with one decimal, as used in tables and progress lines.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
