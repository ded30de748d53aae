//! The shell-profile repair behind `doctor --fix` / `--revert`, as pure functions on bytes.
//!
//! Upstream's single-user `~/.nix-profile/etc/profile.d/nix.sh` is wrapped in
//! `if [ -n "$HOME" ] && [ -n "$USER" ]` — with `USER` unset (containers, CI, cron) sourcing
//! it silently does nothing and nix is not on PATH. The repair puts one marked block into the
//! login profile: the guard line, then (when nothing else does) the sourcing of nix.sh. When
//! the file already sources nix.sh (e.g. the installer's `# added by Nix installer` line) the
//! block holds only the guard and goes right before that line.
//!
//! Everything here is bytes in, bytes out: the user's file is never decoded, so invalid UTF-8,
//! CRLF line ends and a missing final newline survive, and `revert(fix(x)) == x` exactly.
//! The file I/O lives in `profile_io`.

use regex::bytes::Regex;
use std::sync::OnceLock;

/// First line of the managed block. Recognised by its prefix so later wordings still match.
pub const BEGIN: &str = "# >>> nixos-boot-iso: nix USER guard (cargo xtask doctor --fix; --revert removes it) >>>";
pub const END: &str = "# <<< nixos-boot-iso: nix USER guard <<<";
const BEGIN_PREFIX: &[u8] = b"# >>> nixos-boot-iso:";
const END_PREFIX: &[u8] = b"# <<< nixos-boot-iso:";

/// Makes nix.sh work when `USER` is unset or empty.
pub const GUARD: &str = r#"export USER="${USER:-$(id -un)}""#;
/// Sources nix.sh only while it exists, so removing nix never breaks the login shell.
pub const SOURCE: &str =
    r#"if [ -e "$HOME/.nix-profile/etc/profile.d/nix.sh" ]; then . "$HOME/.nix-profile/etc/profile.d/nix.sh"; fi"#;
/// What a user can paste into a shell that is already broken.
pub const MANUAL_RECOVERY: &str = r#"export USER=$(id -un); . "$HOME/.nix-profile/etc/profile.d/nix.sh""#;

/// A line of the file: content without its terminator, and the terminator (`\n`, `\r\n`, or
/// empty for a last line without newline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line<'a> {
    content: &'a [u8],
    term: &'a [u8],
}

fn split_lines(text: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let (end, next) = match text[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, start + i + 1),
            None => (text.len(), text.len()),
        };
        let cr = next > end && end > start && text[end - 1] == b'\r';
        let content_end = if cr { end - 1 } else { end };
        lines.push(Line { content: &text[start..content_end], term: &text[content_end..next] });
        start = next;
    }
    lines
}

fn join(lines: &[Line<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.content);
        out.extend_from_slice(l.term);
    }
    out
}

fn trimmed(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn is_comment(l: &Line<'_>) -> bool {
    trimmed(l.content).starts_with(b"#")
}

/// A live (non-comment) line that names the single-user nix.sh.
fn mentions_nix_sh(l: &Line<'_>) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"profile\.d/nix\.sh\b").unwrap());
    !is_comment(l) && re.is_match(l.content)
}

fn sets_user(l: &Line<'_>) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^\s*(export\s+)?USER=").unwrap());
    re.is_match(l.content)
}

/// Our lines always end in LF, also in a CRLF file: bash reads the `\r` of a CRLF line as
/// part of the last word (`fi\r` is a syntax error), so CRLF would break the block itself.
/// The user's own lines keep their CRLF.
const NL: &[u8] = b"\n";

/// Where our block is, as line indexes (BEGIN, END inclusive).
fn find_block(lines: &[Line<'_>]) -> Result<Option<(usize, usize)>, String> {
    let begins: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| trimmed(l.content).starts_with(BEGIN_PREFIX))
        .map(|(i, _)| i)
        .collect();
    let ends: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| trimmed(l.content).starts_with(END_PREFIX)).map(|(i, _)| i).collect();
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => Ok(None),
        ([b], [e]) if b < e => Ok(Some((*b, *e))),
        _ => Err(format!(
            "the nixos-boot-iso block markers are damaged (begin markers at lines {}, end markers at lines {}); \
             remove the block by hand, then rerun `cargo xtask doctor --fix`",
            one_based(&begins),
            one_based(&ends)
        )),
    }
}

fn one_based(v: &[usize]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ")
}

/// What the profile says about nix.sh and the guard (for doctor's report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// 1-based line of the first live line naming nix.sh (ours or the user's).
    pub sources_nix_sh: Option<usize>,
    /// A `USER=` assignment comes before that line.
    pub guarded: bool,
    /// Our managed block is present.
    pub has_block: bool,
}

pub fn analyse(text: &[u8]) -> Analysis {
    let lines = split_lines(text);
    let first = lines.iter().position(mentions_nix_sh);
    Analysis {
        sources_nix_sh: first.map(|i| i + 1),
        guarded: first.is_some_and(|i| lines[..i].iter().any(|l| !is_comment(l) && sets_user(l))),
        has_block: matches!(find_block(&lines), Ok(Some(_))),
    }
}

/// The outcome of planning `--fix` on a file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// The block is in place and right: nothing to write.
    AlreadyDone,
    /// Nothing sources nix.sh and it does not exist: no guard is needed.
    NotNeeded,
    /// The new bytes, and what changed, in words.
    Edit { text: Vec<u8>, what: String },
}

/// Plans the repair. `nix_sh_exists`: `~/.nix-profile/etc/profile.d/nix.sh` is there.
pub fn fix(text: &[u8], nix_sh_exists: bool) -> Result<Fix, String> {
    let lines = split_lines(text);
    let block = find_block(&lines)?;
    let base = revert_lines(&lines, block);
    let base_lines = split_lines(&base);
    let nl = NL;
    let foreign = base_lines.iter().position(mentions_nix_sh);

    // Keep an existing block when it already does the job, wherever the user left it.
    if let Some((b, e)) = block {
        let body: Vec<&[u8]> = lines[b + 1..e].iter().map(|l| trimmed(l.content)).collect();
        let foreign_in_text = lines.iter().enumerate().position(|(i, l)| (i < b || i > e) && mentions_nix_sh(l));
        let ok = match foreign_in_text {
            Some(f) => f > e && body == [GUARD.as_bytes()],
            None => body == [GUARD.as_bytes(), SOURCE.as_bytes()],
        };
        if ok {
            return Ok(Fix::AlreadyDone);
        }
    }

    let mut out: Vec<u8>;
    let what;
    if let Some(i) = foreign {
        // Before the whole command when the line continues a previous one (`\` at the end).
        let mut at = i;
        while at > 0 && base_lines[at - 1].content.ends_with(b"\\") {
            at -= 1;
        }
        out = join(&base_lines[..at]);
        for l in [BEGIN, GUARD, END] {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(nl);
        }
        out.extend_from_slice(&join(&base_lines[at..]));
        what = format!("added the USER guard before the existing nix.sh line {}", i + 1);
    } else if nix_sh_exists {
        out = base.clone();
        let open_last_line = !out.is_empty() && !out.ends_with(b"\n");
        if open_last_line {
            // Keep "no final newline": revert knows to take this separator back out.
            out.extend_from_slice(nl);
        }
        let body = [BEGIN, GUARD, SOURCE, END];
        for (k, l) in body.iter().enumerate() {
            out.extend_from_slice(l.as_bytes());
            if k + 1 < body.len() || !open_last_line {
                out.extend_from_slice(nl);
            }
        }
        what = "appended the USER guard and the sourcing of nix.sh".to_string();
    } else if block.is_some() {
        // Our block sources nix.sh but nix.sh is gone: harmless (the line checks), keep it.
        return Ok(Fix::AlreadyDone);
    } else {
        return Ok(Fix::NotNeeded);
    }
    if block.is_some() {
        return Ok(Fix::Edit { text: out, what: format!("rewrote the managed block: {what}") });
    }
    Ok(Fix::Edit { text: out, what })
}

/// Removes exactly our block (and the separator newline we added before it at end of file).
pub fn revert(text: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let lines = split_lines(text);
    Ok(find_block(&lines)?.map(|block| revert_lines(&lines, Some(block))))
}

fn revert_lines(lines: &[Line<'_>], block: Option<(usize, usize)>) -> Vec<u8> {
    let Some((b, e)) = block else { return join(lines) };
    let mut kept: Vec<Line<'_>> = Vec::with_capacity(lines.len());
    kept.extend_from_slice(&lines[..b]);
    if lines[e].term.is_empty() && e + 1 == lines.len() {
        if let Some(last) = kept.last_mut() {
            last.term = b"";
        }
    }
    kept.extend_from_slice(&lines[e + 1..]);
    join(&kept)
}

/// A unified diff of two versions of a small file, for `--dry-run`.
pub fn unified_diff(name: &str, old: &[u8], new: &[u8]) -> String {
    let a = split_lines(old);
    let b = split_lines(new);
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    if a_mid.is_empty() && b_mid.is_empty() {
        return String::new();
    }
    const CONTEXT: usize = 3;
    let start = prefix.saturating_sub(CONTEXT);
    let a_end = (a.len() - suffix + CONTEXT).min(a.len());
    let b_end = (b.len() - suffix + CONTEXT).min(b.len());
    let range = |s: usize, e: usize| if e > s { format!("{},{}", s + 1, e - s) } else { format!("{s},0") };
    let mut out = format!("--- {name}\n+++ {name} (after)\n@@ -{} +{} @@\n", range(start, a_end), range(start, b_end));
    let mut emit = |tag: char, l: &Line<'_>| {
        out.push(tag);
        out.push_str(&String::from_utf8_lossy(l.content));
        out.push('\n');
        if l.term.is_empty() {
            out.push_str("\\ No newline at end of file\n");
        }
    };
    for l in &a[start..prefix] {
        emit(' ', l);
    }
    for l in a_mid {
        emit('-', l);
    }
    for l in b_mid {
        emit('+', l);
    }
    for l in &a[a.len() - suffix..a_end] {
        emit(' ', l);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLER_LINE: &str =
        "if [ -e /home/u/.nix-profile/etc/profile.d/nix.sh ]; then . /home/u/.nix-profile/etc/profile.d/nix.sh; fi # added by Nix installer";

    fn edit(text: &[u8], nix_sh: bool) -> Vec<u8> {
        match fix(text, nix_sh).unwrap() {
            Fix::Edit { text, .. } => text,
            other => panic!("expected an edit, got {other:?}"),
        }
    }

    /// fix is idempotent and revert gives back exactly the original bytes.
    fn round_trip(original: &[u8]) -> Vec<u8> {
        let fixed = edit(original, true);
        assert_eq!(fix(&fixed, true).unwrap(), Fix::AlreadyDone, "second fix must change nothing");
        assert_eq!(revert(&fixed).unwrap().unwrap(), original, "revert must restore the bytes");
        let a = analyse(&fixed);
        assert!(a.guarded && a.has_block && a.sources_nix_sh.is_some(), "{a:?}");
        fixed
    }

    #[test]
    fn appends_block_to_plain_profile() {
        let fixed = round_trip(b"# ~/.profile\nexport EDITOR=vi\n");
        let expect = format!("# ~/.profile\nexport EDITOR=vi\n{BEGIN}\n{GUARD}\n{SOURCE}\n{END}\n");
        assert_eq!(String::from_utf8(fixed).unwrap(), expect);
    }

    #[test]
    fn guard_goes_before_existing_sourcing_line() {
        let original = format!("export A=1\n{INSTALLER_LINE}\nexport B=2\n");
        let fixed = String::from_utf8(round_trip(original.as_bytes())).unwrap();
        assert_eq!(fixed, format!("export A=1\n{BEGIN}\n{GUARD}\n{END}\n{INSTALLER_LINE}\nexport B=2\n"));
        assert_eq!(fixed.matches("profile.d/nix.sh").count(), 2, "no second sourcing: {fixed}");
    }

    #[test]
    fn plain_dot_line_and_multiline_if() {
        let dot = b". \"$HOME/.nix-profile/etc/profile.d/nix.sh\"\n";
        let fixed = round_trip(dot);
        assert!(fixed.ends_with(dot) && fixed.starts_with(BEGIN.as_bytes()));
        let multi =
            b"x=1\nif [ -e ~/.nix-profile/etc/profile.d/nix.sh ]; then\n  . ~/.nix-profile/etc/profile.d/nix.sh\nfi\n";
        let fixed = round_trip(multi);
        assert!(String::from_utf8(fixed).unwrap().starts_with(&format!("x=1\n{BEGIN}\n{GUARD}\n{END}\nif [ -e")));
    }

    #[test]
    fn continuation_lines_are_not_split() {
        let text = b"true && \\\n  . ~/.nix-profile/etc/profile.d/nix.sh\n";
        let fixed = round_trip(text);
        assert!(fixed.ends_with(text));
    }

    #[test]
    fn no_trailing_newline_survives() {
        let fixed = round_trip(b"export A=1");
        assert_eq!(String::from_utf8(fixed).unwrap(), format!("export A=1\n{BEGIN}\n{GUARD}\n{SOURCE}\n{END}"));
        round_trip(format!("x\n{INSTALLER_LINE}").as_bytes());
    }

    #[test]
    fn crlf_lines_are_kept_and_ours_use_lf() {
        let fixed = round_trip(b"export A=1\r\nexport B=2\r\n");
        let expect = format!("export A=1\r\nexport B=2\r\n{BEGIN}\n{GUARD}\n{SOURCE}\n{END}\n");
        assert_eq!(String::from_utf8(fixed).unwrap(), expect);
        round_trip(b"a\r\nb");
        round_trip(format!("a\r\n{INSTALLER_LINE}\r\n").as_bytes());
    }

    #[test]
    fn unicode_invalid_utf8_and_empty() {
        round_trip("# grüße, 日本語 ✓\nexport NAME=\"Zoë\"\n".as_bytes());
        round_trip(b"\xff\xfe latin-1 \xe9t\xe9\n\x00binary\n");
        let fixed = round_trip(b"");
        assert_eq!(String::from_utf8(fixed).unwrap(), format!("{BEGIN}\n{GUARD}\n{SOURCE}\n{END}\n"));
        round_trip(b"\n\n");
    }

    #[test]
    fn nothing_to_do_without_nix_sh() {
        assert_eq!(fix(b"export A=1\n", false).unwrap(), Fix::NotNeeded);
        // An existing sourcing line still gets the guard, even when nix.sh is missing now.
        assert!(matches!(fix(INSTALLER_LINE.as_bytes(), false).unwrap(), Fix::Edit { .. }));
    }

    #[test]
    fn block_moves_before_a_later_installer_line() {
        let fixed = edit(b"a\n", true);
        // The Nix installer appends its own line after our block: now we would source twice.
        let mut later = fixed.clone();
        later.extend_from_slice(format!("{INSTALLER_LINE}\n").as_bytes());
        let refixed = edit(&later, true);
        assert_eq!(
            String::from_utf8(refixed.clone()).unwrap(),
            format!("a\n{BEGIN}\n{GUARD}\n{END}\n{INSTALLER_LINE}\n")
        );
        assert_eq!(fix(&refixed, true).unwrap(), Fix::AlreadyDone);
    }

    #[test]
    fn user_lines_after_the_block_are_left_alone() {
        let mut text = edit(b"a\n", true);
        text.extend_from_slice(b"export LATER=1\n");
        assert_eq!(fix(&text, true).unwrap(), Fix::AlreadyDone);
        assert_eq!(revert(&text).unwrap().unwrap(), b"a\nexport LATER=1\n");
    }

    #[test]
    fn damaged_markers_are_refused() {
        let text = format!("a\n{BEGIN}\n{GUARD}\n");
        let err = fix(text.as_bytes(), true).unwrap_err();
        assert!(err.contains("damaged") && err.contains("lines 2"), "{err}");
        assert!(revert(text.as_bytes()).is_err());
        let two = format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n");
        assert!(fix(two.as_bytes(), true).is_err());
    }

    #[test]
    fn revert_without_block_is_none() {
        assert_eq!(revert(b"a\n").unwrap(), None);
    }

    #[test]
    fn analysis_sees_unguarded_and_guarded_profiles() {
        let bad = analyse(format!("x\n{INSTALLER_LINE}\n").as_bytes());
        assert_eq!(bad, Analysis { sources_nix_sh: Some(2), guarded: false, has_block: false });
        let by_hand = analyse(format!("export USER=$(id -un)\n{INSTALLER_LINE}\n").as_bytes());
        assert!(by_hand.guarded);
        let commented = analyse(format!("# {INSTALLER_LINE}\n").as_bytes());
        assert_eq!(commented.sources_nix_sh, None);
        assert_eq!(analyse(b". /etc/profile.d/nix-daemon.sh\n").sources_nix_sh, None);
    }

    #[test]
    fn diff_shows_the_added_block() {
        let old = b"a\nb";
        let new = edit(old, true);
        let d = unified_diff("~/.profile", old, &new);
        assert!(d.contains("-b\n\\ No newline at end of file\n+b\n"), "{d}");
        assert!(d.contains(&format!("+{GUARD}\n")), "{d}");
        assert_eq!(unified_diff("x", b"same\n", b"same\n"), "");
    }
}
