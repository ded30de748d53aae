//! Secrets out of what archive-logs files into `docs/` (which gets committed): private key
//! blocks from BEGIN to END whatever lines interleave or prefix them (bounded when END never
//! comes), and lines that look like credentials (`*_TOKEN=`, `*_SECRET_*=`, `*PASSWORD=`,
//! `Authorization:`, `user:pass@`, known token shapes). docs/analyze.md lists the shapes; the
//! corpus tests live with the rest of archive-logs' tests.

use regex::Regex;
use std::sync::LazyLock;

#[derive(Default)]
pub(super) struct Redactions {
    pub(super) key_blocks: usize,
    /// Lines inside the key blocks: key material and whatever was interleaved with it.
    pub(super) key_lines: usize,
    pub(super) token_lines: usize,
}

impl Redactions {
    /// Redacted spans: a key block is one, a credential-looking line is one.
    pub(super) fn total(&self) -> usize {
        self.key_blocks + self.token_lines
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{} span(s): {} private key block(s) ({} lines) and {} token-looking line(s)",
            self.total(),
            self.key_blocks,
            self.key_lines,
            self.token_lines
        )
    }
}

/// Lines that look like credentials.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    // A secret word, alone or glued into a name with `_`/`-` (AWS_SECRET_ACCESS_KEY, CI_JOB_TOKEN).
    let name = r"[A-Za-z0-9_-]*";
    let word = r"(?i:passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key)";
    // `passwd:` starts ordinary lines (`passwd: password updated successfully`).
    let colon_word = r"(?i:password|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)";
    let patterns = [
        // NAME=value, name = "value" (environment, ini, nix.conf, .npmrc): 6+ characters.
        format!(r#"{name}{word}{name}["']?\s*=\s*["']?[^\s"']{{6,}}"#),
        // name: value (YAML, JSON): 8+ characters.
        format!(r#"{name}{colon_word}{name}["']?\s*:\s*["']?[^\s"']{{8,}}"#),
        // --password=value, --token value.
        format!(r#"--{name}{word}{name}(?:=|\s+)["']?[^\s"'-][^\s"']{{5,}}"#),
        r"(?i:authorization)\s*:\s*(?i:bearer|basic|token|digest)\s+\S{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}".into(),
        // scheme://user:password@host
        r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@".into(),
        // .netrc
        r"(?i:machine)\s+\S+\s+(?i:login)\s+\S+\s+(?i:password)\s+\S".into(),
        // Tokens recognisable by their shape: GitHub, GitLab, Slack, AWS key ids, OpenAI/Anthropic,
        // Stripe, Google API, npm, PyPI, Hugging Face, JWT, age.
        concat!(
            r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}",
            r"|xox[abposr]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{20,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
            r"|AIza[0-9A-Za-z_-]{35}|npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}|hf_[A-Za-z0-9]{30,}",
            r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.|AGE-SECRET-KEY-1[0-9A-Z]{50,})"
        )
        .into(),
    ];
    Regex::new(&patterns.join("|")).expect("compiles")
});

/// Lines a key block may span: its END line is looked for this far. A 16384-bit RSA key is
/// about 200 lines, which leaves room for console lines interleaved with it.
pub(super) const KEY_BLOCK_MAX_LINES: usize = 512;

/// Where a private key block starts on `line`, and the marker of its last line: PEM, OpenSSH
/// and PGP (`-----BEGIN … PRIVATE KEY-----`, `-----BEGIN PGP PRIVATE KEY BLOCK-----`), and
/// PuTTY's private lines (`Private-Lines: N` … `Private-MAC:`). Whatever precedes the start
/// (a heredoc's `> `, vm-test's `nonce|`, a prompt) is the block's line prefix.
fn key_block_start(line: &str) -> Option<(usize, &'static str)> {
    if let Some(at) = line.find("-----BEGIN ") {
        if line[at..].contains("PRIVATE KEY") {
            return Some((at, "-----END "));
        }
    }
    line.find("Private-Lines:").map(|at| (at, "Private-MAC:"))
}

/// Key material: a base64 line of a key body (or an armor header), after the block's prefix.
static KEY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9+/]*={1,2}|(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset): .*)\s*$")
        .expect("compiles")
});
/// The short last line of a key body, right after key material.
static KEY_TAIL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*[A-Za-z0-9+/]+={0,2}\s*$").expect("compiles"));

fn is_key_material(line: &str, prefix: &str, after_key: bool) -> bool {
    let body = match prefix.trim() {
        "" => line,
        p => line.find(p).map_or(line, |at| &line[at + p.len()..]),
    };
    key_block_start(line).is_some() || KEY_LINE.is_match(body) || (after_key && KEY_TAIL.is_match(body))
}

/// How many lines the key block starting at `lines[0]` spans, and whether its end marker
/// was seen: through the END line whatever lines interleave (a kernel message in the middle
/// of `cat id_rsa`); without an END within `KEY_BLOCK_MAX_LINES` (the output was cut), through
/// the last line there that still looks like key material.
fn key_block_len(lines: &[&str], prefix: &str, end: &str) -> (usize, bool) {
    let window = &lines[..lines.len().min(KEY_BLOCK_MAX_LINES)];
    if let Some(at) = window.iter().skip(1).position(|l| l.contains(end)) {
        return (at + 2, true);
    }
    let (mut last, mut after_key) = (0, true);
    for (i, line) in window.iter().enumerate().skip(1) {
        after_key = is_key_material(line, prefix, after_key);
        if after_key {
            last = i;
        }
    }
    (last + 1, false)
}

/// Replaces each private key block and each credential-looking line with one marker line.
pub(super) fn redact(text: &str, r: &mut Redactions) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some((at, end)) = key_block_start(line) {
            let (n, ended) =
                if line[at..].contains(end) { (1, true) } else { key_block_len(&lines[i..], &line[..at], end) };
            r.key_blocks += 1;
            r.key_lines += n;
            out += &if ended {
                format!("[archive-logs: private key block redacted: {n} line(s), BEGIN to END]")
            } else {
                format!(
                    "[archive-logs: private key block redacted: {n} line(s); no END within {KEY_BLOCK_MAX_LINES} lines, \
                     redacted through its last key line]"
                )
            };
            i += n;
            if lines[i - 1].ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        if TOKEN.is_match(line) {
            r.token_lines += 1;
            out += "[archive-logs: line redacted, it looked like a secret token]";
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out += line;
        }
        i += 1;
    }
    out
}
