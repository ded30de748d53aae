//! Terminal presentation shared by the verbs: colour and glyphs on a TTY, plain text otherwise;
//! and the one way a verb writes its result to stdout ([`print`]).

use std::io::{IsTerminal, Write};

/// Writes a verb's result to stdout. A closed pipe (`xtask analyze … | head`) is not an error
/// and no panic, as it would be with `println!`: the reader has what it wanted, and the verb's
/// files (records, reports) are complete either way. Other write errors are returned.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

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

/// A byte count for people: `512 B`, `3.5 KiB`, `17.0 MiB`, `1.25 GiB`.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    if n >= GIB {
        format!("{:.2} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

/// Joins a command line for copy-pasting into a POSIX shell: words made only of safe
/// characters stay bare, anything else is single-quoted (`'` as `'\''`).
pub fn shell_join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            // `#` starts a comment only at the beginning of a word.
            let safe = !a.is_empty()
                && !a.starts_with('#')
                && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:#=+@,".contains(c));
            if safe {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds with one decimal, as used in tables and progress lines.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024 / 4), "1.25 GiB");
    }

    #[test]
    fn shell_join_quotes_only_what_needs_it() {
        let words = ["nix", "build", "path:/f#img", "nix-command flakes", "", "it's", "#x", "a=b,c@d+e"];
        assert_eq!(shell_join(&words), r"nix build path:/f#img 'nix-command flakes' '' 'it'\''s' '#x' a=b,c@d+e");
        assert_eq!(shell_join(&[String::from("$HOME")]), "'$HOME'");
    }
}
