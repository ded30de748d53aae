//! Which ISO a run boots: a file (`--iso`), a fixture variant (`--image fixture[-systemd][:FAULT]`,
//! built if needed) or the flake's `bootImage` (built, or the last build with `--no-build`).

use super::*;

/// The ISO to boot, chosen (built if needed) and recorded.
pub(super) fn record_image(args: &Args, rec: &mut Record, progress: &mut Progress) -> Result<Utf8PathBuf, Failure> {
    let chosen = choose_image(args, progress).map_err(|e| image_failure(e, crate::interrupt::interrupted()))?;
    let iso = Utf8PathBuf::from(&chosen.path);
    rec.image = chosen;
    let _ = rec.write();
    Ok(iso)
}

/// The ISO to boot and where it came from (built first when needed).
fn choose_image(args: &Args, progress: &mut Progress) -> Result<Image> {
    if let Some(iso) = &args.iso {
        if !iso.is_file() {
            return Err(exit::infra(format!(
                "--iso {iso}: no such file; check the path, or build one with `cargo xtask fixture` or `cargo xtask build-image`"
            )));
        }
        return image(iso.canonicalize_utf8()?, "iso", None);
    }
    if let Some(spec) = &args.image {
        let (flavor, fault) = parse_image(spec)?;
        progress.note(&format!(
            "building {} ISO{} …",
            flavor.image_name(),
            fault.map_or(String::new(), |f| format!(" ({f})"))
        ));
        let iso = crate::fixture::build_variant(flavor, fault)?;
        return image(iso, flavor.image_name(), fault.map(|f| f.name().to_string()));
    }
    let built = if args.no_build {
        crate::build_image::last_build()?.ok_or_else(|| {
            exit::infra("--no-build: no previous `cargo xtask build-image` result recorded (target/build-image/last.json); build one, or pass --iso/--image")
        })?
    } else {
        progress.note("building the flake image (.#bootImage) …");
        crate::build_image::build_default(&Default::default()).map_err(|e| {
            let code = e.downcast_ref::<exit::Exit>().map_or(exit::INFRA, |x| x.code);
            anyhow::Error::from(exit::Exit {
                code,
                message: format!(
                    "no --iso/--image given and the flake image cannot be built here: {e:#}; try `--image fixture` or `--iso PATH`"
                ),
            })
        })?
    };
    Ok(Image { store_path: Some(built.store_path), nar_hash: built.nar_hash, ..image(built.iso, "flake", None)? })
}

fn image(iso: Utf8PathBuf, source: &str, fault: Option<String>) -> Result<Image> {
    let size_bytes = fs_err::metadata(&iso)?.len();
    Ok(Image {
        path: iso.into_string(),
        size_bytes,
        source: source.to_string(),
        fault,
        store_path: None,
        nar_hash: None,
    })
}

/// `fixture[-systemd]` or `fixture[-systemd]:FAULT` → flavour and fault variant (usage error
/// otherwise, also for a fault the flavour does not have).
pub fn parse_image(image: &str) -> Result<(crate::fixture::Flavor, Option<crate::fixture::Fault>)> {
    use crate::fixture::Flavor;
    let (kind, fault) = match image.split_once(':') {
        Some((k, f)) => (k, Some(f)),
        None => (image, None),
    };
    let Some(flavor) = [Flavor::Busybox, Flavor::Systemd].into_iter().find(|f| f.image_name() == kind) else {
        return Err(exit::usage(format!(
            "--image {image}: expected `fixture`, `fixture-systemd`, `fixture:FAULT` or `fixture-systemd:FAULT`"
        )));
    };
    let fault = fault.map(|f| f.parse::<crate::fixture::Fault>()).transpose()?;
    if let Some(f) = fault.filter(|f| !flavor.faults().contains(f)) {
        let names: Vec<&str> = flavor.faults().iter().map(|f| f.name()).collect();
        return Err(exit::usage(format!("--image {image}: {kind} has no fault `{f}`; it has: {}", names.join(", "))));
    }
    Ok((flavor, fault))
}
