//! `vm-test --disk`: the disks a run attaches and what `scripts/pre-nixos.sh` must conclude
//! about them (its documented outcomes for blank disks, no disk and existing storage).

use crate::vm::machine::DiskFile;
use camino::{Utf8Path, Utf8PathBuf};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One blank 4 GiB disk → applied/auto-applied, VG `main` with LVs `swap` and `slash`
    Blank,
    /// No disk at all → skipped/no-disk
    None,
    /// The disk a first boot of the same image provisioned, booted again → plan-only/existing-storage, bytes unchanged
    Existing,
    /// Two blank disks (4 GiB, 2 GiB) → applied/auto-applied on the first (/dev/vda), the second left blank
    Two,
}

/// What the checks require of pre-nixos for a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// `STATE=` and `DETAIL=` of /run/pre-nixos/storage-status.
    pub state: &'static str,
    pub detail: &'static str,
    /// The physical volume of VG `main` (LVs `swap` and `slash`); `None`: no VG `main` at all.
    pub vg_on: Option<&'static str>,
    /// Disks that must still carry no signature.
    pub blank: &'static [&'static str],
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Blank => "blank",
            Scenario::None => "none",
            Scenario::Existing => "existing",
            Scenario::Two => "two",
        }
    }

    pub fn expect(self) -> Expect {
        let applied = Expect { state: "applied", detail: "auto-applied", vg_on: Some("/dev/vda"), blank: &[] };
        match self {
            Scenario::Blank => applied,
            Scenario::None => Expect { state: "skipped", detail: "no-disk", vg_on: None, blank: &[] },
            // The first boot's VG is still there: nothing was touched.
            Scenario::Existing => Expect { state: "plan-only", detail: "existing-storage", ..applied },
            Scenario::Two => Expect { blank: &["/dev/vdb"], ..applied },
        }
    }

    /// The disk files of a run in `dir`; `existing` is the disk the first boot provisioned.
    pub fn files(self, dir: &Utf8Path, existing: Option<&Utf8Path>) -> Vec<DiskFile> {
        let fresh = |name: &str, size| DiskFile::fresh(dir.join(name), size);
        match self {
            Scenario::Blank => vec![fresh("disk.qcow2", "4G")],
            Scenario::None => vec![],
            Scenario::Existing => {
                vec![DiskFile::existing(existing.expect("the first boot's disk").to_path_buf())]
            }
            Scenario::Two => vec![fresh("disk.qcow2", "4G"), fresh("disk2.qcow2", "2G")],
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// SHA-256 of a disk file's bytes (the `existing` disk before and after its second boot).
pub fn sha256(path: &Utf8Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the `existing` scenario keeps the disk both boots use.
pub fn existing_disk(run_dir: &Utf8Path) -> Utf8PathBuf {
    run_dir.join("existing-disk.qcow2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scenario_has_the_outcome_pre_nixos_documents() {
        assert_eq!((Scenario::Blank.expect().state, Scenario::Blank.expect().detail), ("applied", "auto-applied"));
        assert_eq!((Scenario::None.expect().state, Scenario::None.expect().vg_on), ("skipped", None));
        assert_eq!(Scenario::Existing.expect().detail, "existing-storage");
        assert_eq!(Scenario::Two.expect().blank, &["/dev/vdb"]);
        let dir = Utf8Path::new("/r");
        assert_eq!(Scenario::Two.files(dir, None).len(), 2);
        assert!(Scenario::None.files(dir, None).is_empty());
        let existing = Scenario::Existing.files(dir, Some(Utf8Path::new("/r/e.qcow2")));
        assert_eq!((existing[0].path.as_str(), existing[0].size), ("/r/e.qcow2", None));
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("d")).unwrap();
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256(&path).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
