//! What a finished `nix build` produced: the store path from `--json`, the single ISO under
//! it, and its `narHash` from `nix path-info --json` (whose shape changed between nix versions).

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

/// `nix build --json` prints `[{"drvPath": …, "outputs": {"out": …}}]` (nix 2.8 and later).
/// Returns (store path of the `out` output, or the first output; drv path).
pub fn parse_build_json(stdout: &str) -> Result<(String, Option<String>)> {
    let v: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("nix build --json printed something that is not JSON: {:?}", short(stdout)))?;
    let first = v
        .as_array()
        .and_then(|a| a.first())
        .with_context(|| format!("nix build --json printed no result: {:?}", short(stdout)))?;
    let outputs = first["outputs"].as_object().context("nix build --json: no `outputs`")?;
    let out = outputs
        .get("out")
        .or_else(|| outputs.values().next())
        .and_then(Value::as_str)
        .context("nix build --json: no output path")?;
    Ok((out.to_string(), first["drvPath"].as_str().map(str::to_string)))
}

/// `narHash` of `store_path` from `nix path-info --json` output. Accepts every shape seen:
/// a list of objects with `path` (nix ≤ 2.18), an object keyed by path (nix ≥ 2.19; the value
/// is null for an invalid path), and empty results.
pub fn parse_nar_hash(json: &str, store_path: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json.trim()).ok()?;
    let info = match &v {
        Value::Array(items) => {
            items.iter().find(|i| i["path"].as_str() == Some(store_path)).or_else(|| items.first())?
        }
        Value::Object(map) => map.get(store_path).or_else(|| map.values().next())?,
        _ => return None,
    };
    info["narHash"].as_str().map(str::to_string)
}

/// The one `*.iso` file at or under `out` (a file, or a directory such as `$out/iso/`).
/// None or several: an error listing what is there.
pub fn find_iso(out: &Utf8Path) -> Result<Utf8PathBuf> {
    if out.is_file() {
        return if is_iso(out) {
            Ok(out.to_path_buf())
        } else {
            Err(crate::exit::Exit {
                code: crate::exit::FAILED,
                message: format!("the build output {out} is a single file, not an ISO image"),
            }
            .into())
        };
    }
    let mut all = Vec::new();
    walk(out, &mut all).with_context(|| format!("listing the build output {out}"))?;
    let isos: Vec<&Utf8PathBuf> = all.iter().filter(|p| is_iso(p)).collect();
    match isos.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let listing = listing(out, &all);
            Err(crate::exit::Exit {
                code: crate::exit::FAILED,
                message: format!(
                    "the build output {out} contains no *.iso file; it holds {} file(s):\n{listing}\n\
                     next step: make the flake's bootImage attribute point at `config.system.build.isoImage`",
                    all.len()
                ),
            }
            .into())
        }
        many => {
            let many: Vec<Utf8PathBuf> = many.iter().map(|p| (*p).clone()).collect();
            Err(crate::exit::Exit {
                code: crate::exit::FAILED,
                message: format!(
                    "the build output {out} contains {} *.iso files, expected exactly one:\n{}\n\
                     next step: build an attribute that produces a single ISO",
                    many.len(),
                    listing(out, &many)
                ),
            }
            .into())
        }
    }
}

fn is_iso(p: &Utf8Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("iso"))
}

fn walk(dir: &Utf8Path, out: &mut Vec<Utf8PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs_err::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = Utf8PathBuf::from_path_buf(e.path()).map_err(|p| anyhow::anyhow!("non-UTF-8 path {p:?}"))?;
        // Follow symlinks to files (an output may link to the image), not to directories.
        if e.file_type()?.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn listing(base: &Utf8Path, files: &[Utf8PathBuf]) -> String {
    const MAX: usize = 20;
    let mut lines: Vec<String> =
        files.iter().take(MAX).map(|f| format!("  {}", f.strip_prefix(base).unwrap_or(f))).collect();
    if files.is_empty() {
        lines.push("  (empty)".into());
    }
    if files.len() > MAX {
        lines.push(format!("  … and {} more", files.len() - MAX));
    }
    lines.join("\n")
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/lkaybdn8ffrmqnmkyaj9pjz3iifffjw0-test-image";

    #[test]
    fn build_json_of_nix_2_8() {
        let s = r#"[{"drvPath":"/nix/store/sdvpk847l1dbcqfv9spxbbknm2fs8yy0-test-image.drv","outputs":{"out":"/nix/store/lkaybdn8ffrmqnmkyaj9pjz3iifffjw0-test-image"}}]"#;
        let (out, drv) = parse_build_json(s).unwrap();
        assert_eq!(out, P);
        assert_eq!(drv.unwrap(), "/nix/store/sdvpk847l1dbcqfv9spxbbknm2fs8yy0-test-image.drv");
        assert!(parse_build_json("[]").is_err());
        assert!(parse_build_json("warning: x").is_err());
    }

    #[test]
    fn nar_hash_from_every_path_info_shape() {
        // nix 2.8 (recorded here): a list.
        let old = r#"[{"path":"/nix/store/lkaybdn8ffrmqnmkyaj9pjz3iifffjw0-test-image","narHash":"sha256-PwRPfsxrNNtxUjHUDvopWKHMHnzGIwD24PVoEQ55zzw=","narSize":456}]"#;
        assert_eq!(parse_nar_hash(old, P).unwrap(), "sha256-PwRPfsxrNNtxUjHUDvopWKHMHnzGIwD24PVoEQ55zzw=");
        // nix ≥ 2.19: an object keyed by path.
        let new = format!(r#"{{"{P}":{{"narHash":"sha256-abc=","narSize":456}}}}"#);
        assert_eq!(parse_nar_hash(&new, P).unwrap(), "sha256-abc=");
        // Invalid path, empty results, garbage.
        assert_eq!(parse_nar_hash(&format!(r#"{{"{P}":null}}"#), P), None);
        assert_eq!(parse_nar_hash("[]", P), None);
        assert_eq!(parse_nar_hash("{}", P), None);
        assert_eq!(parse_nar_hash("oops", P), None);
    }

    #[test]
    fn finds_exactly_one_iso() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        fs_err::create_dir_all(root.join("iso")).unwrap();
        fs_err::write(root.join("nix-support"), "x").unwrap();
        let err = find_iso(root).unwrap_err().to_string();
        assert!(err.contains("no *.iso") && err.contains("nix-support"), "{err}");
        fs_err::write(root.join("iso/a.iso"), "x").unwrap();
        assert_eq!(find_iso(root).unwrap(), root.join("iso/a.iso"));
        fs_err::write(root.join("iso/b.ISO"), "x").unwrap();
        let err = find_iso(root).unwrap_err().to_string();
        assert!(err.contains("2 *.iso files") && err.contains("iso/a.iso") && err.contains("iso/b.ISO"), "{err}");
        assert_eq!(find_iso(&root.join("iso/a.iso")).unwrap(), root.join("iso/a.iso"));
    }
}
