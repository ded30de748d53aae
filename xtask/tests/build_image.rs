//! `cargo xtask build-image` against Debian's real nix (2.8): a local flake without inputs,
//! generated per test in a temp dir, whose derivations copy a small ISO-like file into
//! `$out/iso/`, fail, produce no ISO, or produce two. Their builder is a static busybox that the
//! flake carries into the store, so they build the same with nix's sandbox on (the default once
//! the build users exist) or off: nothing from the host's /bin is needed. Also: the repo's
//! flake.nix, flake.lock and nix/*.nix parse, and the lock matches the flake's inputs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{repo_root, require_tools, xtask};
use serde_json::Value;

const TEST_FLAKE: &str = r#"{
  outputs = { self }:
    let
      mk = name: script: derivation {
        inherit name;
        system = "x86_64-linux";
        builder = "${./bb}/busybox";
        args = [ "sh" "-c" script ];
        src = ./disk.iso;
        # Unique per test run, so nix really builds instead of reusing the store path.
        nonce = "@NONCE@";
      };
    in {
      packages.x86_64-linux = rec {
        bootImage = mk "test-image" ''
          echo '@nix {"action":"setPhase","phase":"buildPhase"}'
          echo "preparing image"
          mkdir -p $out/iso
          cp $src $out/iso/test-image.iso
          echo '@nix {"action":"setPhase","phase":"installPhase"}'
          echo "image ready"
        '';
        failing = mk "test-image-failing" ''
          echo '@nix {"action":"setPhase","phase":"buildPhase"}'
          i=1
          while [ $i -le 40 ]; do echo "log line $i"; i=$((i+1)); done
          echo "mksquashfs: out of space" >&2
          exit 3
        '';
        # The real ISO fails like this: a dependency (the squashfs) fails, the ISO does not build.
        failingDep = mk "test-image-outer" ''
          echo ${failing}
          mkdir -p $out/iso
        '';
        noIso = mk "test-image-no-iso" ''
          mkdir -p $out/nix-support
          echo readme > $out/readme.txt
        '';
        slow = mk "test-image-slow" ''
          echo '@nix {"action":"setPhase","phase":"buildPhase"}'
          echo "waiting"
          sleep 60
        '';
        twoIsos = mk "test-image-two-isos" ''
          mkdir -p $out/iso
          cp $src $out/iso/a.iso
          cp $src $out/iso/b.iso
        '';
      };
    };
}
"#;

struct TestFlake {
    _dir: tempfile::TempDir,
    flake: PathBuf,
    out: PathBuf,
}

/// A fresh flake dir (with a 64 KiB ISO-like file) and an output dir for run directories.
fn test_flake(name: &str) -> TestFlake {
    let dir = tempfile::tempdir().unwrap();
    let flake = dir.path().join("flake");
    std::fs::create_dir(&flake).unwrap();
    let nonce = format!("{name}-{}-{:?}", std::process::id(), std::time::SystemTime::now());
    std::fs::write(flake.join("flake.nix"), TEST_FLAKE.replace("@NONCE@", &nonce)).unwrap();
    let mut iso = vec![0u8; 64 * 1024];
    iso[0x8001..0x8006].copy_from_slice(b"CD001"); // ISO 9660 primary volume descriptor magic
    std::fs::write(flake.join("disk.iso"), iso).unwrap();
    std::fs::create_dir(flake.join("bb")).unwrap();
    std::fs::copy(BUSYBOX, flake.join("bb/busybox")).unwrap();
    let out = dir.path().join("out");
    TestFlake { _dir: dir, flake, out }
}

fn build(t: &TestFlake, attr: &str, extra: &[&str]) -> Output {
    xtask()
        .args(["build-image", "--flake"])
        .arg(&t.flake)
        .args(["--attr", attr, "--out-dir"])
        .arg(&t.out)
        // Skip the ~4 s retries against cache.nixos.org (no network here).
        .args(["--option", "substituters", ""])
        .args(extra)
        .output()
        .expect("xtask runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The metadata.json of the only run directory under `out`.
fn metadata(out: &Path) -> Value {
    let dirs: Vec<PathBuf> =
        std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "one run directory expected: {dirs:?}");
    let m = std::fs::read_to_string(dirs[0].join("metadata.json")).unwrap();
    assert!(dirs[0].join("build.log").is_file());
    assert!(dirs[0].join("nix-events.jsonl").is_file());
    serde_json::from_str(&m).unwrap()
}

/// Static (busybox-static): runs in nix's sandbox without any library from the host.
const BUSYBOX: &str = "/bin/busybox";

fn tools(test: &str) -> bool {
    require_tools(test, &["nix", "nix-instantiate", BUSYBOX])
}

#[test]
fn builds_a_local_flake_resolves_the_iso_and_records_it() {
    if !tools("builds_a_local_flake") {
        return;
    }
    let t = test_flake("ok");
    let o = build(&t, "bootImage", &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Progress was parsed from the internal-json stream (plain lines: stderr is not a TTY).
    assert!(stderr.contains("building test-image"), "{stderr}");
    assert!(stderr.contains("test-image: buildPhase"), "{stderr}");
    assert!(stderr.contains("finished test-image (builds 1/1"), "{stderr}");
    // Build log lines only with -L.
    assert!(!stderr.contains("preparing image"), "{stderr}");

    let m = metadata(&t.out);
    assert_eq!(m["outcome"], "pass");
    assert_eq!(m["exit_code"], 0);
    assert_eq!(m["progress"]["builds"]["done"], 1);
    assert_eq!(m["progress"]["builds"]["expected"], 1);
    let phases: Vec<&str> =
        m["progress"]["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["buildPhase", "installPhase"]);
    assert!(m["nix"]["version"].as_str().unwrap().contains("nix"), "{m}");
    assert!(m["flake"].as_str().unwrap().starts_with("path:"), "{m}");

    let image = &m["image"];
    let iso = image["iso"].as_str().unwrap();
    assert!(iso.starts_with("/nix/store/") && iso.ends_with("-test-image/iso/test-image.iso"), "{iso}");
    assert_eq!(image["size_bytes"], 64 * 1024);
    assert!(image["nar_hash"].as_str().unwrap().starts_with("sha256"), "{image}");
    assert!(image["build_seconds"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains(iso), "{stdout}");

    // last.json carries the same image (what `vm-test --no-build` reuses).
    let last: Value = serde_json::from_str(&std::fs::read_to_string(t.out.join("last.json")).unwrap()).unwrap();
    for k in ["iso", "store_path", "nar_hash", "size_bytes", "build_seconds"] {
        assert_eq!(last[k], image[k], "{k}");
    }
    eprintln!("FIGURE build-image test flake: {:.2} s build", image["build_seconds"].as_f64().unwrap());
}

#[test]
fn downloads_from_a_binary_cache_are_counted() {
    if !tools("downloads") {
        return;
    }
    // Build once, put the output in a local binary cache, delete it from the store: the
    // second build substitutes it from the cache instead of building.
    let t = test_flake("subst");
    let o = build(&t, "bootImage", &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let store_path = metadata(&t.out)["image"]["store_path"].as_str().unwrap().to_string();
    std::fs::remove_dir_all(&t.out).unwrap();
    let cache = format!("file://{}", t.flake.parent().unwrap().join("cache").display());
    let nix = |args: &[&str]| {
        let o = Command::new("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "nix {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    nix(&["copy", "--to", &cache, &store_path]);
    nix(&["store", "delete", &store_path]);

    let o = xtask()
        .args(["build-image", "--flake"])
        .arg(&t.flake)
        .args(["--out-dir"])
        .arg(&t.out)
        .args(["--option", "substituters", &cache, "--option", "require-sigs", "false"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("fetching test-image from {cache}")), "{stderr}");
    let m = metadata(&t.out);
    assert_eq!(m["progress"]["downloads"]["done"], 1, "{m}");
    assert_eq!(m["progress"]["downloads"]["expected"], 1, "{m}");
    assert_eq!(m["progress"]["builds"]["done"], 0, "substituted, not built: {m}");
    // The NAR of a 64 KiB file and two directories is a little larger than the file.
    let bytes = m["progress"]["bytes_downloaded"].as_u64().unwrap();
    assert!((64 * 1024..80 * 1024).contains(&bytes), "{m}");
    assert_eq!(m["image"]["store_path"], store_path.as_str());
}

#[test]
fn print_build_logs_shows_log_lines_without_losing_progress() {
    if !tools("print_build_logs") {
        return;
    }
    let t = test_flake("logs");
    let o = build(&t, "bootImage", &["-L"]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("test-image> preparing image"), "{stderr}");
    assert!(stderr.contains("test-image: buildPhase"), "progress still parsed: {stderr}");
}

#[test]
fn failing_derivation_is_named_with_its_log_tail() {
    if !tools("failing_derivation") {
        return;
    }
    let t = test_flake("fail");
    let o = build(&t, "failing", &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("FAILED test-image-failing"), "progress line names it: {stderr}");
    assert!(stderr.contains("failing derivation: /nix/store/"), "{stderr}");
    assert!(stderr.contains("-test-image-failing.drv"), "{stderr}");
    assert!(stderr.contains("last 30 log lines of test-image-failing:"), "{stderr}");
    assert!(stderr.contains("  | mksquashfs: out of space"), "{stderr}");
    assert!(stderr.contains("  | log line 40"), "{stderr}");
    assert!(stderr.contains("  | log line 12"), "{stderr}");
    assert!(!stderr.contains("  | log line 11\n"), "only the last 30 lines: {stderr}");
    assert!(stderr.contains(" log /nix/store/"), "the nix log command: {stderr}");
    assert!(stderr.contains("nix said:\n  error: builder for '/nix/store/"), "nix's own error line: {stderr}");
    assert!(stderr.contains("failed with exit code 3"), "nix's own error: {stderr}");
    assert!(!stderr.contains("cause:"), "no hint that does not apply: {stderr}");

    let m = metadata(&t.out);
    assert_eq!(m["outcome"], "fail");
    assert_eq!(m["exit_code"], 1);
    assert!(m["failure"]["derivation"].as_str().unwrap().ends_with("-test-image-failing.drv"));
    assert_eq!(m["failure"]["log_tail"].as_array().unwrap().len(), 30);
    assert!(m["image"].is_null());
    assert!(!t.out.join("last.json").exists(), "a failure must not replace last.json");
}

#[test]
fn failing_dependency_is_named_not_the_image() {
    if !tools("failing_dependency") {
        return;
    }
    let t = test_flake("faildep");
    let o = build(&t, "failingDep", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("failing derivation: ")).expect(&stderr);
    assert!(line.ends_with("-test-image-failing.drv"), "{line}\n{stderr}");
    assert!(stderr.contains("  | mksquashfs: out of space"), "{stderr}");
}

#[test]
fn output_without_iso_is_a_clear_error() {
    if !tools("output_without_iso") {
        return;
    }
    let t = test_flake("noiso");
    let o = build(&t, "noIso", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("contains no *.iso file"), "{stderr}");
    assert!(stderr.contains("readme.txt"), "lists what was found: {stderr}");
    assert_eq!(metadata(&t.out)["outcome"], "fail");
}

#[test]
fn output_with_two_isos_is_a_clear_error() {
    if !tools("output_with_two_isos") {
        return;
    }
    let t = test_flake("twoisos");
    let o = build(&t, "twoIsos", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("contains 2 *.iso files"), "{stderr}");
    assert!(stderr.contains("iso/a.iso") && stderr.contains("iso/b.iso"), "{stderr}");
}

#[test]
fn evaluation_error_names_the_problem() {
    if !tools("evaluation_error") {
        return;
    }
    let t = test_flake("eval");
    let o = build(&t, "noSuchAttr", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no derivation failed"), "{stderr}");
    assert!(stderr.contains("does not provide attribute"), "{stderr}");
}

#[test]
fn interrupt_stops_nix_and_records_the_run() {
    if !tools("interrupt") {
        return;
    }
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::Duration;
    let t = test_flake("interrupt");
    let mut child = xtask()
        .args(["build-image", "--flake"])
        .arg(&t.flake)
        .args(["--attr", "slow", "--out-dir"])
        .arg(&t.out)
        .args(["--option", "substituters", ""])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait until the build really runs, then interrupt xtask only (not its process group).
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("build starts within 30 s");
        let started = line.contains("test-image-slow: buildPhase");
        seen.push(line);
        if started {
            break;
        }
    }
    unsafe { libc_kill(child.id() as i32, 2) };
    let (wtx, wrx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = wtx.send(child.wait().unwrap());
    });
    let status =
        wrx.recv_timeout(Duration::from_secs(20)).expect("xtask stops within 20 s of SIGINT, not after the 60 s build");
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    let m = metadata(&t.out);
    assert_eq!(m["outcome"], "interrupted");
    assert_eq!(m["exit_code"], 130);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn unreachable_input_is_an_infrastructure_error() {
    if !tools("unreachable_input") {
        return;
    }
    let t = test_flake("unreachable");
    // `.invalid` never resolves (RFC 2606), also on a CI machine with internet access.
    std::fs::write(
        t.flake.join("flake.nix"),
        r#"{
  inputs.src = { url = "https://nix-input.invalid/src.tar.gz"; flake = false; };
  outputs = { self, src }: { packages.x86_64-linux.bootImage = src; };
}
"#,
    )
    .unwrap();
    let o = build(&t, "bootImage", &["--option", "download-attempts", "1"]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("unable to download 'https://nix-input.invalid/src.tar.gz'"), "{stderr}");
    assert!(stderr.contains("cause: nix could not download something it needs"), "{stderr}");
    assert_eq!(metadata(&t.out)["outcome"], "infra");
}

#[test]
fn missing_build_group_shows_nix_error_and_the_setup_fix() {
    if !tools("missing_build_group") {
        return;
    }
    // A fresh Debian machine before scripts/install-deps.sh: nix wants a group that is not there.
    let t = test_flake("nogroup");
    let o = xtask()
        .args(["build-image", "--flake"])
        .arg(&t.flake)
        .args(["--out-dir"])
        .arg(&t.out)
        .env("NIX_CONFIG", "build-users-group = xtask-no-such-group\nsubstituters =")
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "the machine's set-up, not the flake: {stderr}");
    assert!(
        stderr.contains(
            "nix said:\n  error: the group 'xtask-no-such-group' specified in 'build-users-group' does not exist"
        ),
        "nix's own error line, once: {stderr}"
    );
    assert!(!stderr.contains("warning: the group"), "the warning that repeats the error is dropped: {stderr}");
    assert!(stderr.contains("fix:   sudo scripts/nix-setup.sh"), "{stderr}");
    assert!(!stderr.contains("git add"), "no hint that does not apply: {stderr}");
    assert!(!stderr.contains("could not download"), "no hint that does not apply: {stderr}");
    assert_eq!(metadata(&t.out)["outcome"], "infra");
}

/// The guard against tests that pass only on a machine with hand-made state: nix here gets no
/// configuration at all (no /etc/nix/nix.conf, no user nix.conf, no NIX_CONFIG), so it builds
/// with nix's defaults (build users of `nixbld`, sandbox on) and with the groups that
/// scripts/install-deps.sh creates, nothing else.
#[test]
fn builds_with_nothing_but_the_projects_setup() {
    if !tools("projects_setup_only") {
        return;
    }
    let group = Command::new("getent").args(["group", "nixbld"]).output().unwrap();
    let line = String::from_utf8_lossy(&group.stdout).into_owned();
    assert!(
        group.status.success() && line.trim_end().rsplit(':').next().is_some_and(|m| m.contains("nixbld1")),
        "the nixbld group with its build users comes from scripts/install-deps.sh (scripts/nix-build-users.sh): {line:?}"
    );
    let t = test_flake("setup-only");
    let empty = tempfile::tempdir().unwrap();
    let o = xtask()
        .args(["build-image", "--flake"])
        .arg(&t.flake)
        .args(["--out-dir"])
        .arg(&t.out)
        .args(["--option", "substituters", ""])
        .env_remove("NIX_CONFIG")
        .env("NIX_CONF_DIR", empty.path())
        .env("NIX_USER_CONF_FILES", empty.path().join("none.conf"))
        .env("XDG_CONFIG_HOME", empty.path())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(metadata(&t.out)["outcome"], "pass");
}

#[test]
fn missing_nix_is_diagnosed_with_exit_3() {
    if !require_tools("missing_nix", &["unshare", "mount", "nix"]) {
        return;
    }
    // Hide nix for this one process: a private mount namespace with /dev/null bound over the
    // real binary (needs root, as on the CI machine), an empty PATH entry and a fresh HOME.
    let nix = std::fs::canonicalize(which::which("nix").unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let script = format!(
        "mount --bind /dev/null {nix} && exec env PATH=/nonexistent HOME={home} {xtask} build-image --flake {flake}",
        nix = nix.display(),
        home = home.path().display(),
        xtask = env!("CARGO_BIN_EXE_xtask"),
        flake = home.path().display(),
    );
    let o = Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let (_, stderr) = text(&o);
    if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
        assert!(!common::in_ci(), "CI runs as root: {stderr}");
        eprintln!("SKIP missing_nix: needs root for a mount namespace");
        return;
    }
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("nix not found"), "{stderr}");
    assert!(stderr.contains("apt-get install nix-bin"), "the fix: {stderr}");
    assert!(stderr.contains("export USER="), "the profile guard: {stderr}");
}

#[test]
fn untracked_file_in_a_git_flake_gets_the_git_add_hint() {
    if !require_tools("untracked_file", &["nix", "git"]) {
        return;
    }
    let t = test_flake("git");
    std::fs::write(
        t.flake.join("flake.nix"),
        "{ outputs = { self }: { packages.x86_64-linux.bootImage = builtins.readFile ./untracked.sh; }; }\n",
    )
    .unwrap();
    std::fs::write(t.flake.join("untracked.sh"), "echo hi\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git").arg("-C").arg(&t.flake).args(args).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "flake.nix"]);
    let o = build(&t, "bootImage", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("untracked.sh"), "{stderr}");
    assert!(stderr.contains("a flake in git shows nix only tracked files"), "{stderr}");
    assert!(stderr.contains("fix:   `git add`"), "{stderr}");
}

#[test]
fn missing_flake_dir_is_a_usage_error() {
    let o = xtask().args(["build-image", "--flake", "/nonexistent/flake-dir"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}

#[test]
fn an_out_dir_that_cannot_be_created_is_an_infrastructure_error() {
    if !tools("an_out_dir_that_cannot_be_created_is_an_infrastructure_error") {
        return;
    }
    let mut t = test_flake("out-dir");
    // A regular file where a parent directory must be.
    std::fs::write(t.out.with_file_name("file"), b"").unwrap();
    t.out = t.out.with_file_name("file").join("out");
    let o = build(&t, "bootImage", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--out-dir"), "{stderr}");
}

#[test]
fn repo_nix_files_parse() {
    if !tools("repo_nix_files_parse") {
        return;
    }
    let root = repo_root();
    let mut files = vec![root.join("flake.nix")];
    for e in std::fs::read_dir(root.join("nix")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "nix") {
            files.push(p);
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let o = Command::new("nix-instantiate").arg("--parse").arg(&f).output().unwrap();
        assert!(o.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn flake_lock_pins_nixos_25_05_and_matches_the_inputs() {
    if !tools("flake_lock") {
        return;
    }
    let root = repo_root();
    let lock: Value = serde_json::from_str(&std::fs::read_to_string(root.join("flake.lock")).unwrap()).unwrap();
    assert_eq!(lock["version"], 7);
    let n = &lock["nodes"]["nixpkgs"];
    assert_eq!(n["locked"]["rev"], "c8aa8cc00a5cb57fada0851a038d35c08a36a2bb");
    assert_eq!(n["locked"]["narHash"], "sha256-m9W0dYXflzeGgKNravKJvTMR4Qqa2MVD11AwlGMufeE=");
    assert_eq!(n["locked"]["lastModified"], 1761173472);
    assert_eq!(n["original"]["ref"], "nixos-25.05");

    // nix itself agrees the lock is complete for flake.nix's inputs: with
    // --no-update-lock-file it fails ("lock file needs to be updated") otherwise. Offline:
    // metadata reads the lock without fetching nixpkgs.
    let dir = tempfile::tempdir().unwrap();
    for f in ["flake.nix", "flake.lock"] {
        std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
    }
    let o = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes", "flake", "metadata", "--json"])
        .args(["--no-update-lock-file", "--option", "substituters", ""])
        .arg(format!("path:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["locks"]["nodes"]["nixpkgs"]["locked"]["rev"], "c8aa8cc00a5cb57fada0851a038d35c08a36a2bb");
}

/// Evaluates flake.nix's `outputs` with a stub nixpkgs (nixosSystem, legacyPackages) and
/// checks the interface: what `bootImage` is made of, `default`, apps, devShell, inputs.
#[test]
fn flake_outputs_evaluate_with_a_stub_nixpkgs() {
    if !tools("flake_outputs") {
        return;
    }
    let root = repo_root();
    let expr = format!(
        r#"let
  flake = import {flake};
  genAttrs = names: f: builtins.listToAttrs (map (n: {{ name = n; value = f n; }}) names);
  pkgNames = [ "cargo" "rustc" "qemu" "OVMF" "xorriso" "syslinux" "cpio" "kmod" "python3" "nix" "git" ];
  pkgs = genAttrs pkgNames (n: "pkg-${{n}}") // {{
    stdenv.cc = "pkg-cc";
    writeShellApplication = a: {{ outPath = "/nix/store/00000000000000000000000000000000-${{a.name}}"; }};
    mkShell = a: {{ mkShell = a; }};
  }};
  nixpkgs = {{
    outPath = "/stub-nixpkgs";
    legacyPackages.x86_64-linux = pkgs;
    lib = {{
      inherit genAttrs;
      nixosSystem = args: {{ config.system.build.isoImage = {{ stubIso = true; inherit (args) modules; }}; }};
    }};
  }};
  self = flake.outputs {{ inherit self nixpkgs; }};
  sys = "x86_64-linux";
in {{
  inputs = flake.inputs;
  packages = builtins.attrNames self.packages.${{sys}};
  modules = map (m: if builtins.isAttrs m then m else toString m) self.packages.${{sys}}.bootImage.modules;
  defaultIsBootImage = self.packages.${{sys}}.default == self.packages.${{sys}}.bootImage;
  configIsBootImage = self.nixosConfigurations.boot-image.config.system.build.isoImage == self.packages.${{sys}}.bootImage;
  apps = builtins.mapAttrs (n: a: {{ inherit (a) type program; }}) self.apps.${{sys}};
  devShell = self.devShells.${{sys}}.default.mkShell.packages;
}}"#,
        flake = root.join("flake.nix").display()
    );
    let o = Command::new("nix-instantiate").args(["--eval", "--strict", "--json", "-E", &expr]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["inputs"]["nixpkgs"]["url"], "github:NixOS/nixpkgs/nixos-25.05");
    assert_eq!(v["packages"], serde_json::json!(["bootImage", "default"]));
    assert_eq!(v["defaultIsBootImage"], true);
    assert_eq!(v["configIsBootImage"], true);
    assert_eq!(v["modules"][0], "/stub-nixpkgs/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix");
    assert_eq!(v["modules"][1], root.join("nix/boot-image.nix").to_str().unwrap());
    assert_eq!(v["modules"][2]["nixpkgs"]["hostPlatform"], "x86_64-linux");
    for app in ["default", "doctor", "build-image", "vm-test", "analyze"] {
        assert_eq!(v["apps"][app]["type"], "app", "{app}");
    }
    assert!(v["apps"]["vm-test"]["program"].as_str().unwrap().ends_with("/bin/xtask-vm-test"));
    for tool in ["pkg-cargo", "pkg-rustc", "pkg-qemu", "pkg-xorriso", "pkg-python3", "pkg-nix"] {
        assert!(v["devShell"].as_array().unwrap().contains(&Value::from(tool)), "{tool}");
    }
}

/// Evaluates `nix/boot-image.nix` for real (not NixOS around it: nixpkgs cannot be fetched
/// here) with stub packages, and checks the configuration it produces.
fn eval_boot_image_module() -> Value {
    let module = repo_root().join("nix/boot-image.nix");
    let expr = format!(
        r#"let
  stub = name: "/nix/store/00000000000000000000000000000000-${{name}}";
  names = [ "bash" "coreutils" "util-linux" "lvm2" "e2fsprogs" "gawk" "gnugrep" "gnused"
            "findutils" "iproute2" "kmod" "procps" "systemd" ];
  pkgs = builtins.listToAttrs (map (n: {{ name = n; value = stub n; }}) names) // {{
    writeShellScript = name: text: builtins.toFile name text;
  }};
  lib = {{ mkForce = v: {{ forced = v; }}; }};
in import {} {{ inherit lib pkgs; }}"#,
        module.display()
    );
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--read-write-mode", "-E", &expr])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn boot_image_module_evaluates_to_the_intended_configuration() {
    if !tools("boot_image_module") {
        return;
    }
    let m = eval_boot_image_module();
    // ttyS0 last: it becomes /dev/console.
    assert_eq!(m["boot"]["kernelParams"], serde_json::json!(["console=tty0", "console=ttyS0,115200n8"]));
    assert_eq!(m["isoImage"]["squashfsCompression"], "zstd -Xcompression-level 3");
    assert_eq!(m["networking"]["useNetworkd"]["forced"], true);
    assert_eq!(m["networking"]["useDHCP"]["forced"], false);

    let net = &m["systemd"]["network"];
    assert_eq!(net["enable"], true);
    assert_eq!(net["links"]["10-lan"]["matchConfig"]["Type"], "ether");
    assert_eq!(net["links"]["10-lan"]["linkConfig"]["Name"], "lan");
    assert_eq!(net["networks"]["20-lan"]["matchConfig"]["Name"], "lan");
    assert_eq!(net["networks"]["20-lan"]["networkConfig"]["DHCP"], "ipv4");

    for unit in ["pre-nixos", "announce-lan-ip"] {
        let u = &m["systemd"]["services"][unit];
        assert_eq!(u["serviceConfig"]["Type"], "oneshot", "{unit}");
        // Background: multi-user.target does not wait for it, nothing is ordered after it.
        assert_eq!(u["unitConfig"]["DefaultDependencies"], false, "{unit}");
        assert_eq!(u["wantedBy"], serde_json::json!(["multi-user.target"]), "{unit}");
        assert_eq!(u["before"], serde_json::json!(["shutdown.target"]), "{unit}");
        assert!(u["after"].as_array().unwrap().contains(&Value::from("basic.target")), "{unit}");
    }
    let pre = &m["systemd"]["services"]["pre-nixos"];
    let exec = pre["serviceConfig"]["ExecStart"].as_str().unwrap();
    assert!(exec.ends_with("-pre-nixos.sh"), "{exec}");
    let script = exec.split_whitespace().last().unwrap();
    let copied = std::fs::read_to_string(script).unwrap();
    assert_eq!(copied, std::fs::read_to_string(repo_root().join("scripts/pre-nixos.sh")).unwrap());
    for tool in ["util-linux", "lvm2", "e2fsprogs", "coreutils"] {
        assert!(pre["path"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with(tool)), "{tool}");
    }

    // The announcer: prints the line, and passes shellcheck.
    // (The same script as the systemd fixture's unit runs.)
    let exec = m["systemd"]["services"]["announce-lan-ip"]["serviceConfig"]["ExecStart"].as_str().unwrap();
    let announce = exec.split_whitespace().last().unwrap();
    let text = std::fs::read_to_string(announce).unwrap();
    assert_eq!(text, std::fs::read_to_string(repo_root().join("scripts/announce-lan-ip.sh")).unwrap());
    assert!(text.contains(r#"echo "LAN IPv4 address: $ip""#), "{text}");
    assert!(!text.contains("systemctl"), "{text}");
    if require_tools("announce shellcheck", &["shellcheck"]) {
        let o = Command::new("shellcheck").args(["-s", "bash", announce]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}
