//! Python venv checks for a repository with `requirements-dev.txt` / `.venv` (the seed's
//! Python tooling). Nothing in xtask needs Python, so these warn, never fail. Installed
//! distributions are read from `.venv`'s `*.dist-info` directories: no interpreter is started.

use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeSet;

use super::{Ctx, Verdict};

const REQUIREMENTS: &str = "requirements-dev.txt";

fn paths(ctx: &Ctx) -> (Utf8PathBuf, Utf8PathBuf) {
    (ctx.repo.join(REQUIREMENTS), ctx.repo.join(".venv"))
}

fn nothing_here(ctx: &Ctx) -> Option<Verdict> {
    let (req, venv) = paths(ctx);
    (!req.exists() && !venv.exists()).then(|| Verdict::skipped(format!("no {REQUIREMENTS} or .venv in {}", ctx.repo)))
}

fn create_fix(ctx: &Ctx) -> String {
    let (req, venv) = paths(ctx);
    format!("python3 -m venv {venv} && {venv}/bin/pip install -r {req}")
}

pub fn exists(ctx: &Ctx) -> Verdict {
    if let Some(v) = nothing_here(ctx) {
        return v;
    }
    let (_, venv) = paths(ctx);
    if !venv.join("bin/python").exists() {
        let what = if venv.exists() { "has no bin/python (broken)" } else { "does not exist" };
        return Verdict::warn(format!("{venv} {what} but {REQUIREMENTS} does"), create_fix(ctx));
    }
    let version = std::fs::read_to_string(venv.join("pyvenv.cfg"))
        .ok()
        .and_then(|cfg| {
            cfg.lines()
                .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == "version" || k.trim() == "version_info"))
                .map(|(_, v)| format!(" (Python {})", v.trim()))
        })
        .unwrap_or_default();
    Verdict::ok(format!("{venv}{version}"))
}

pub fn active(ctx: &Ctx) -> Verdict {
    if let Some(v) = nothing_here(ctx) {
        return v;
    }
    let (_, venv) = paths(ctx);
    if !venv.exists() {
        return Verdict::skipped("no .venv (see the venv check)");
    }
    let active = std::env::var("VIRTUAL_ENV").ok().filter(|v| !v.is_empty());
    let same = |a: &str| std::fs::canonicalize(a).ok() == std::fs::canonicalize(&venv).ok();
    match active {
        Some(a) if same(&a) => Verdict::ok(format!("active (VIRTUAL_ENV={a})")),
        Some(a) => Verdict::warn(
            format!("another venv is active: VIRTUAL_ENV={a}"),
            format!("deactivate; . {venv}/bin/activate"),
        ),
        None => Verdict::warn("not active (VIRTUAL_ENV is unset)", format!(". {venv}/bin/activate")),
    }
}

pub fn requirements(ctx: &Ctx) -> Verdict {
    if let Some(v) = nothing_here(ctx) {
        return v;
    }
    let (req, venv) = paths(ctx);
    if !req.exists() {
        return Verdict::skipped(format!("no {REQUIREMENTS} in {}", ctx.repo));
    }
    if !venv.exists() {
        return Verdict::skipped("no .venv (see the venv check)");
    }
    let wanted = match read_requirements(&req, 0) {
        Ok(w) => w,
        Err(e) => return Verdict::warn(format!("cannot read {req}: {e:#}"), format!("cat {req}")),
    };
    let installed = installed(&venv);
    let missing: Vec<&String> = wanted.iter().filter(|w| !installed.contains(*w)).collect();
    if missing.is_empty() {
        return Verdict::ok(format!("all {} requirements of {REQUIREMENTS} are installed", wanted.len()));
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    Verdict::warn(
        format!("{} of {} requirements missing from .venv: {}", missing.len(), wanted.len(), names.join(", ")),
        format!("{venv}/bin/pip install -r {req}"),
    )
}

/// PEP 503 normalised name: lowercase, runs of `-_.` become `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Distribution names from a requirements file (following `-r` includes); options, URLs and
/// paths are ignored, versions and markers stripped.
pub fn read_requirements(path: &Utf8Path, depth: u32) -> anyhow::Result<BTreeSet<String>> {
    let text = fs_err::read_to_string(path)?;
    let mut names = BTreeSet::new();
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(inc) = line.strip_prefix("-r").or_else(|| line.strip_prefix("--requirement")) {
            let inc = inc.trim_start_matches('=').trim();
            if depth < 5 {
                let base = path.parent().unwrap_or(Utf8Path::new("."));
                names.extend(read_requirements(&base.join(inc), depth + 1)?);
            }
            continue;
        }
        if line.starts_with('-') || line.contains("://") || line.starts_with('.') || line.starts_with('/') {
            continue;
        }
        let name: String =
            line.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        if !name.is_empty() {
            names.insert(normalise(&name));
        }
    }
    Ok(names)
}

/// Normalised names of the distributions installed in a venv.
fn installed(venv: &Utf8Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for lib in ["lib", "lib64"] {
        let Ok(pythons) = std::fs::read_dir(venv.join(lib)) else { continue };
        for py in pythons.flatten() {
            let Ok(entries) = std::fs::read_dir(py.path().join("site-packages")) else { continue };
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = file.strip_suffix(".dist-info").or_else(|| file.strip_suffix(".egg-info")) {
                    // `{name}-{version}`: the name part has no '-' (it is escaped to '_').
                    names.insert(normalise(stem.split('-').next().unwrap_or(stem)));
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_pip() {
        assert_eq!(normalise("Foo.Bar__baz"), "foo-bar-baz");
    }

    #[test]
    fn reads_requirements_with_includes_markers_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let d = Utf8Path::from_path(dir.path()).unwrap();
        fs_err::write(d.join("base.txt"), "requests>=2\n").unwrap();
        fs_err::write(
            d.join("requirements-dev.txt"),
            "# comment\n-r base.txt\npytest==8.0 # pinned\nPexpect[extra]; python_version>'3'\n--index-url https://x\n./local\ngit+https://x/y\n",
        )
        .unwrap();
        let names = read_requirements(&d.join("requirements-dev.txt"), 0).unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["pexpect", "pytest", "requests"]);
    }

    #[test]
    fn reports_missing_requirements_and_skips_without_venv() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        let ctx = Ctx { repo: repo.clone() };
        assert_eq!(exists(&ctx).status, super::super::Status::Skipped);
        fs_err::write(repo.join(REQUIREMENTS), "pytest\nPyYAML\n").unwrap();
        assert_eq!(exists(&ctx).status, super::super::Status::Warn);
        let sp = repo.join(".venv/lib/python3.11/site-packages");
        fs_err::create_dir_all(repo.join(".venv/bin")).unwrap();
        fs_err::write(repo.join(".venv/bin/python"), "").unwrap();
        fs_err::create_dir_all(sp.join("pyyaml-6.0.1.dist-info")).unwrap();
        let v = requirements(&ctx);
        assert_eq!(v.status, super::super::Status::Warn);
        assert!(v.detail.contains("1 of 2") && v.detail.contains("pytest"), "{}", v.detail);
        fs_err::create_dir_all(sp.join("pytest-8.0.0.dist-info")).unwrap();
        assert_eq!(requirements(&ctx).status, super::super::Status::Ok);
    }
}
