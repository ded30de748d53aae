//! Conventions of xtask/src that review alone does not keep (as rust-analyzer's `tidy` test
//! does for its tree). Each rule says why and names every offending file and line.
//!
//! - every module starts with a `//!` doc that says what it holds;
//! - external programs start only through `process.rs` (xshell `cmd!` for one-shots, the
//!   poll()-based helpers for streaming and deadlines): `std::process::Command` nowhere else;
//! - results go to stdout only through `ui.rs` (`ui::print`, which survives a closed pipe):
//!   no `println!`/`print!` elsewhere;
//! - a file over `MAX_LINES` lines of code (tests not counted) says why in its doc, with a
//!   `//! Size:` line.
//!
//! Test modules (`#[cfg(test)]` to the end of the file) are exempt from the process and
//! printing rules: tests may run commands and print as they like.

mod common;

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&common::repo_root().join("xtask/src"), &mut files);
    files.sort();
    assert!(files.len() > 20, "found the sources: {files:?}");
    files
}

/// The file's text up to its test module.
fn code(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |at| &text[..at])
}

fn relative(path: &Path) -> String {
    path.strip_prefix(common::repo_root()).unwrap_or(path).display().to_string()
}

/// Lines of `text` (1-based numbers) that contain `needle` outside a `//` comment.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<(usize, &'a str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.split("//").next().unwrap_or("").contains(needle))
        .map(|(i, l)| (i + 1, l.trim()))
        .collect()
}

#[test]
fn every_module_says_what_it_holds() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| relative(&p))
        .collect();
    assert!(missing.is_empty(), "modules without a leading `//!` doc: {missing:#?}");
}

#[test]
fn programs_start_only_through_process_rs() {
    let mut found = Vec::new();
    for p in sources() {
        if p.ends_with("src/process.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for needle in ["Command::new", "process::Command"] {
            for (n, l) in lines_with(code(&text), needle) {
                found.push(format!("{}:{n}: {l}", relative(&p)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "std::process::Command outside process.rs (use xshell's cmd! with process::shell(), or a process.rs helper \
         for streaming/deadlines): {found:#?}"
    );
}

#[test]
fn stdout_only_through_ui_rs() {
    let mut found = Vec::new();
    for p in sources() {
        if p.ends_with("src/ui.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for needle in ["println!", "print!("] {
            for (n, l) in lines_with(code(&text), needle) {
                if !l.contains("eprint") {
                    found.push(format!("{}:{n}: {l}", relative(&p)));
                }
            }
        }
    }
    assert!(found.is_empty(), "println!/print! outside ui.rs (use ui::print: it survives `| head`): {found:#?}");
}

#[test]
fn long_files_say_why() {
    let mut found = Vec::new();
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        let lines = code(&text).lines().count();
        let says_why = text.lines().take_while(|l| l.starts_with("//!")).any(|l| l.starts_with("//! Size:"));
        if lines > MAX_LINES && !says_why {
            found.push(format!("{} ({lines} lines)", relative(&p)));
        }
    }
    assert!(
        found.is_empty(),
        "files over {MAX_LINES} lines of code without a `//! Size:` line in their doc saying why (or split them): {found:#?}"
    );
}
