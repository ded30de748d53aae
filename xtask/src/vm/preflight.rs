//! Preflight: read the ISO's boot configuration before booting it.
//!
//! A boot entry without `console=ttyS0` leaves the serial line silent after the bootloader,
//! and `console=ttyS0` that is not the last `console=` keeps systemd's progress and the login
//! off the serial line for minutes (field notes §2 #3). Both are visible in the ISO itself, so
//! say so in well under a second instead of after a boot timeout.
//!
//! An ISO without a BIOS El Torito boot entry boots nothing at all: SeaBIOS says so on a
//! screen the harness does not have and the serial line stays empty. That is visible in the
//! ISO too (`not-bootable`, exit 3 like a corrupt ISO).
//!
//! The ISO 9660 reader below knows just enough of the format (ECMA-119, El Torito) to find
//! the boot entry, `isolinux.cfg` and `grub.cfg`: the primary volume descriptor, the boot
//! record and catalogue, directory records, and file extents. It reads a few sectors, never
//! the whole image.

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use std::io::{Read, Seek, SeekFrom, Write};

const SECTOR: u64 = 2048;

/// Where boot configurations live on the ISOs we meet (NixOS, the fixture, most distros).
const CONFIG_PATHS: [&str; 6] = [
    "isolinux/isolinux.cfg",
    "boot/isolinux/isolinux.cfg",
    "syslinux/syslinux.cfg",
    "EFI/boot/grub.cfg",
    "boot/grub/grub.cfg",
    "boot/grub/loopback.cfg",
];

/// What preflight found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// The BIOS boot entry, described (`El Torito: no emulation, 4 sectors at LBA 34`).
    pub boot: Option<String>,
    /// The configuration file that was read (path inside the ISO), if any.
    pub config: Option<String>,
    /// The default entry's kernel command line, as written in the config.
    pub cmdline: Option<String>,
    /// GRUB's default entry: lines of its script above the `linux` line (the serial rescue
    /// moves the editor's cursor down that far).
    pub grub_lines_before_linux: usize,
    pub problems: Vec<Problem>,
}

/// How much a problem weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Worth saying; the boot goes ahead.
    Warning,
    /// The image would fail to boot properly (exit 1).
    Fail,
    /// The ISO cannot boot at all, like a missing or corrupt one (exit 3).
    Infra,
}

/// A problem in the boot configuration, with its catalogue finding id.
#[derive(Debug, Clone)]
pub struct Problem {
    pub level: Level,
    pub finding: &'static str,
    pub message: String,
    pub fix: String,
}

/// Reads the ISO's boot configuration and checks the default entry's serial console.
/// A missing or unreadable ISO is an infrastructure error (exit 3).
pub fn check_iso(iso: &Utf8Path, firmware: crate::vm::qemu::Firmware) -> Result<Preflight> {
    let mut file = match std::fs::File::open(iso) {
        Ok(f) => f,
        Err(e) => {
            return Err(crate::exit::infra(format!(
                "cannot open ISO {iso}: {e}; check the path, or build one with `cargo xtask fixture` or `cargo xtask build-image`"
            )))
        }
    };
    let image = Iso9660::open(&mut file).map_err(|e| {
        crate::exit::infra(format!(
            "{iso} is not a readable ISO 9660 image ({e:#}); it may be truncated or corrupt: rebuild it"
        ))
    })?;
    let mut preflight = Preflight::default();
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    match bios_boot_entry(&mut file, len) {
        Ok(entry) => preflight.boot = Some(entry),
        Err(why) => {
            preflight.problems.push(Problem {
                level: Level::Infra,
                finding: "not-bootable",
                message: format!("{iso} cannot boot: {why}; the firmware would find nothing to boot and the serial line would stay empty"),
                fix: "build the ISO with a BIOS boot image (`xorriso -as mkisofs -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table …`, as NixOS's isoImage and `cargo xtask fixture` do); `xorriso -indev ISO -report_el_torito plain` shows what it has".into(),
            });
            return Ok(preflight);
        }
    }
    // The firmware decides which bootloader runs: UEFI starts GRUB, BIOS ISOLINUX.
    let mut paths = CONFIG_PATHS.to_vec();
    if firmware == crate::vm::qemu::Firmware::Uefi {
        paths.sort_by_key(|p| !p.ends_with("grub.cfg"));
    }
    // Under UEFI, GRUB may read a grub.cfg that only the El Torito EFI image holds.
    let efi_cfg = if firmware == crate::vm::qemu::Firmware::Uefi { efi_image_grub_cfg(&mut file, len) } else { None };
    for path in paths {
        let text = match (path, &efi_cfg) {
            // After the ISO's own grub.cfg files, before ISOLINUX's.
            (p, Some((efi_path, text))) if !p.ends_with("grub.cfg") && preflight.config.is_none() => {
                if let Some(cmdline) = grub_default_cmdline(text) {
                    preflight.config = Some(efi_path.clone());
                    preflight.grub_lines_before_linux = grub_lines_before_linux(text);
                    preflight.problems = console_problems(&cmdline);
                    preflight.cmdline = Some(cmdline);
                    return Ok(preflight);
                }
                continue;
            }
            _ => image.read_file(&mut file, path)?,
        };
        let Some(text) = text else { continue };
        let text = String::from_utf8_lossy(&text);
        let cmdline =
            if path.ends_with("grub.cfg") { grub_default_cmdline(&text) } else { isolinux_default_cmdline(&text) };
        if let Some(cmdline) = cmdline {
            preflight.config = Some(path.to_string());
            preflight.grub_lines_before_linux = grub_lines_before_linux(&text);
            preflight.problems = console_problems(&cmdline);
            preflight.cmdline = Some(cmdline);
            return Ok(preflight);
        }
    }
    preflight.problems.push(Problem {
        level: Level::Warning,
        finding: "preflight-no-boot-config",
        message: format!("no ISOLINUX or GRUB boot entry found in {iso}; the serial console could not be checked"),
        fix: "make sure the image boots with `console=ttyS0,115200n8` as the last console= parameter".into(),
    });
    Ok(preflight)
}

/// Problems with the serial console in a kernel command line.
pub fn console_problems(cmdline: &str) -> Vec<Problem> {
    let consoles: Vec<&str> = cmdline.split_whitespace().filter_map(|w| w.strip_prefix("console=")).collect();
    let is_serial = |c: &&str| c.starts_with("ttyS0");
    let fix = "set `boot.kernelParams = [ \"console=tty0\" \"console=ttyS0,115200n8\" ];` (ttyS0 last) so the serial port becomes /dev/console";
    if !consoles.iter().any(is_serial) {
        return vec![Problem {
            level: Level::Fail,
            finding: "serial-silent-after-bootloader",
            message: format!(
                "the default boot entry has no console=ttyS0 (console= {}): the serial line will go silent after the bootloader",
                if consoles.is_empty() { "absent".to_string() } else { consoles.join(", ") }
            ),
            fix: fix.into(),
        }];
    }
    if !consoles.last().is_some_and(is_serial) {
        return vec![Problem {
            level: Level::Warning,
            finding: "console-not-last",
            message: format!(
                "console=ttyS0 is not the last console= ({}): /dev/console is {}, so systemd progress and boot messages stay off the serial line for minutes",
                consoles.join(", "),
                consoles.last().unwrap_or(&"?")
            ),
            fix: fix.into(),
        }];
    }
    Vec::new()
}

/// What a BIOS needs to boot a CD, checked the way SeaBIOS (vm-test's firmware) checks it:
/// the El Torito boot record in sector 17, a boot catalogue whose validation entry is for x86
/// (platform 0) and whose default entry is bootable, and a boot image inside the file.
/// `Ok`: that entry, described; `Err`: what is missing.
fn bios_boot_entry<R: Read + Seek>(r: &mut R, len: u64) -> Result<String, String> {
    let mut read = |lba: u64, buf: &mut [u8]| -> Result<(), String> {
        r.seek(SeekFrom::Start(lba * SECTOR))
            .and_then(|_| r.read_exact(buf))
            .map_err(|e| format!("reading sector {lba}: {e}"))
    };
    let mut record = [0u8; 2048];
    read(17, &mut record)?;
    if record[0] != 0 || &record[1..6] != b"CD001" || !record[7..].starts_with(b"EL TORITO SPECIFICATION") {
        return Err("it has no El Torito boot record (sector 17 holds no `EL TORITO SPECIFICATION` descriptor)".into());
    }
    let catalogue = u64::from(le32(&record[0x47..0x4b]));
    if (catalogue + 1) * SECTOR > len {
        return Err(format!(
            "its El Torito boot catalogue (sector {catalogue}) lies past the end of the file ({len} bytes): truncated?"
        ));
    }
    let mut entries = [0u8; 64];
    read(catalogue, &mut entries)?;
    if entries[0] != 1 || entries[30..32] != [0x55, 0xaa] {
        return Err(format!("its El Torito boot catalogue (sector {catalogue}) has no valid validation entry"));
    }
    match entries[1] {
        0 => {}
        0xef => return Err("its El Torito boot catalogue is for UEFI only (platform 0xEF); vm-test boots with SeaBIOS, which needs a BIOS (x86) entry".into()),
        other => return Err(format!("its El Torito boot catalogue is for platform 0x{other:02x}, not x86 BIOS")),
    }
    if entries[32] != 0x88 {
        return Err("the default El Torito entry is marked not bootable".into());
    }
    let media = match entries[33] & 0x0f {
        0 => "no emulation",
        1..=3 => "floppy emulation",
        4 => "hard disk emulation",
        _ => "unknown emulation",
    };
    let sectors = u16::from_le_bytes([entries[38], entries[39]]);
    let image = u64::from(le32(&entries[40..44]));
    if image * SECTOR >= len {
        return Err(format!("its boot image (sector {image}) lies past the end of the file ({len} bytes): truncated?"));
    }
    Ok(format!("El Torito BIOS entry: {media}, {sectors} sectors at LBA {image}"))
}

/// `EFI/boot/grub.cfg` inside the El Torito EFI image (a FAT file system): the image is
/// copied out of the ISO to a temporary file and read with mtools' `mtype` (installed with the
/// fixture's tools; FAT12/16/32 with long names is more than a few lines of our own).
/// `None` when there is no EFI entry, no such file, or no mtools: preflight then reads the
/// configs on the ISO 9660 tree only.
fn efi_image_grub_cfg<R: Read + Seek>(r: &mut R, len: u64) -> Option<(String, String)> {
    let (lba, size) = efi_boot_image(r, len)?;
    let mut image = vec![0u8; usize::try_from(size).ok()?];
    r.seek(SeekFrom::Start(lba * SECTOR)).ok()?;
    r.read_exact(&mut image).ok()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let path = std::env::temp_dir().join(format!("xtask-efi-{}-{nanos:x}.img", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path).ok()?.write_all(&image).ok()?;
    let found = (|| {
        let sh = crate::process::shell().ok()?;
        for cfg in ["::/EFI/boot/grub.cfg", "::/boot/grub/grub.cfg"] {
            // mtools' names are case-insensitive; a missing file is an expected answer.
            let out = xshell::cmd!(sh, "mtype -i {path} {cfg}").env("MTOOLS_SKIP_CHECK", "1").ignore_status().output();
            if let Some(out) = out.ok().filter(|o| o.status.success() && !o.stdout.is_empty()) {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                return Some((format!("El Torito EFI image (LBA {lba}) {}", &cfg[2..]), text));
            }
        }
        None
    })();
    let _ = std::fs::remove_file(&path);
    found
}

/// The El Torito EFI boot image (platform 0xEF): its LBA and size in bytes. The catalogue's
/// sector count is often 0 or 1 for images over 32 MiB; then the FAT boot sector says.
fn efi_boot_image<R: Read + Seek>(r: &mut R, len: u64) -> Option<(u64, u64)> {
    let mut record = [0u8; 2048];
    r.seek(SeekFrom::Start(17 * SECTOR)).ok()?;
    r.read_exact(&mut record).ok()?;
    if &record[1..6] != b"CD001" || !record[7..].starts_with(b"EL TORITO SPECIFICATION") {
        return None;
    }
    let mut cat = [0u8; 2048];
    r.seek(SeekFrom::Start(u64::from(le32(&record[0x47..0x4b])) * SECTOR)).ok()?;
    r.read_exact(&mut cat).ok()?;
    let entry = |e: &[u8]| (u64::from(le32(&e[8..12])), u64::from(u16::from_le_bytes([e[6], e[7]])) * 512);
    let mut found = (cat[1] == 0xef && cat[32] == 0x88).then(|| entry(&cat[32..64]));
    // Section headers (0x90 more follow, 0x91 last) with their entries.
    let mut pos = 64;
    while found.is_none() && pos + 32 <= cat.len() && matches!(cat[pos], 0x90 | 0x91) {
        let (platform, count) = (cat[pos + 1], usize::from(u16::from_le_bytes([cat[pos + 2], cat[pos + 3]])));
        for i in 0..count {
            let e = pos + 32 * (i + 1);
            if platform == 0xef && e + 32 <= cat.len() && cat[e] == 0x88 {
                found = Some(entry(&cat[e..e + 32]));
                break;
            }
        }
        if cat[pos] == 0x91 {
            break;
        }
        pos += 32 * (count + 1);
    }
    let (lba, mut size) = found?;
    if size <= 512 {
        let mut boot = [0u8; 512];
        r.seek(SeekFrom::Start(lba * SECTOR)).ok()?;
        r.read_exact(&mut boot).ok()?;
        let bytes_per_sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
        let small = u64::from(u16::from_le_bytes([boot[19], boot[20]]));
        let sectors = if small != 0 { small } else { u64::from(le32(&boot[32..36])) };
        size = bytes_per_sector * sectors;
    }
    (size > 0 && size <= 64 << 20 && lba * SECTOR + size <= len).then_some((lba, size))
}

/// The kernel command line of ISOLINUX's default entry (`DEFAULT`/`ONTIMEOUT` label, else the
/// first `LABEL`). Keywords are case-insensitive in ISOLINUX.
pub fn isolinux_default_cmdline(cfg: &str) -> Option<String> {
    let mut default: Option<String> = None;
    let mut entries: Vec<(String, Option<String>)> = Vec::new();
    for line in cfg.lines() {
        let line = line.trim();
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match key.to_ascii_uppercase().as_str() {
            // `DEFAULT menu.c32` names a UI module, not a label; ONTIMEOUT wins over DEFAULT.
            "DEFAULT" | "ONTIMEOUT"
                if !rest.ends_with(".c32") && (default.is_none() || key.eq_ignore_ascii_case("ONTIMEOUT")) =>
            {
                default = Some(rest.to_string());
            }
            "LABEL" => entries.push((rest.to_string(), None)),
            "APPEND" => {
                if let Some(entry) = entries.last_mut() {
                    entry.1 = Some(rest.to_string());
                }
            }
            _ => {}
        }
    }
    let chosen = match &default {
        Some(label) => entries.iter().find(|(name, _)| name == label).or(entries.first()),
        None => entries.first(),
    };
    chosen.and_then(|(_, append)| append.clone())
}

/// The kernel command line of GRUB's first `linux` line (the default entry unless
/// `set default=` says otherwise, which we honour for numeric values).
pub fn grub_default_cmdline(cfg: &str) -> Option<String> {
    let default_index = grub_default_index(cfg);
    let linux_lines: Vec<String> = cfg
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("linux ") || l.starts_with("linuxefi "))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    linux_lines.get(default_index).or(linux_lines.first()).cloned()
}

/// Lines of the default GRUB entry's script above its `linux` line, as GRUB's editor shows
/// them: its `setparams 'TITLE'` line, the rest of the `menuentry … {` line (empty), then the
/// entry's lines, blank ones included.
pub fn grub_lines_before_linux(cfg: &str) -> usize {
    let default_index = grub_default_index(cfg);
    let mut entry = 0;
    let mut lines = cfg.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if !line.starts_with("menuentry ") {
            continue;
        }
        if entry == default_index {
            let above = lines.take_while(|l| !l.starts_with("linux ") && !l.starts_with("linuxefi ") && *l != "}");
            return 2 + above.count();
        }
        entry += 1;
    }
    2
}

fn grub_default_index(cfg: &str) -> usize {
    cfg.lines()
        .filter_map(|l| l.trim().strip_prefix("set default="))
        .filter_map(|v| v.trim_matches(|c| c == '"' || c == '\'').parse::<usize>().ok())
        .next()
        .unwrap_or(0)
}

/// The part of an ISO 9660 image we need: the root directory's extent.
struct Iso9660 {
    root_lba: u32,
    root_len: u32,
}

/// One directory record.
struct Record {
    name: String,
    lba: u32,
    len: u32,
    is_dir: bool,
}

impl Iso9660 {
    fn open<R: Read + Seek>(r: &mut R) -> Result<Iso9660> {
        // Volume descriptors start at sector 16; the primary one has type 1.
        for sector in 16..32u64 {
            let mut vd = [0u8; 2048];
            r.seek(SeekFrom::Start(sector * SECTOR))?;
            r.read_exact(&mut vd).context("reading a volume descriptor")?;
            if &vd[1..6] != b"CD001" {
                bail!("no ISO 9660 signature (CD001) at sector {sector}");
            }
            match vd[0] {
                1 => {
                    let root = &vd[156..190];
                    return Ok(Iso9660 { root_lba: le32(&root[2..6]), root_len: le32(&root[10..14]) });
                }
                255 => bail!("no primary volume descriptor"),
                _ => continue,
            }
        }
        bail!("no primary volume descriptor in the first 32 sectors")
    }

    /// Reads a file by path (case-insensitive, version suffixes ignored); `None` when absent.
    fn read_file<R: Read + Seek>(&self, r: &mut R, path: &str) -> Result<Option<Vec<u8>>> {
        let (mut lba, mut len) = (self.root_lba, self.root_len);
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let records = read_dir(r, lba, len)?;
            let Some(rec) = records.into_iter().find(|rec| rec.name.eq_ignore_ascii_case(part) && rec.is_dir != last)
            else {
                return Ok(None);
            };
            (lba, len) = (rec.lba, rec.len);
        }
        if len > 1 << 20 {
            bail!("{path} is implausibly large ({len} bytes)");
        }
        let mut data = vec![0u8; len as usize];
        r.seek(SeekFrom::Start(lba as u64 * SECTOR))?;
        r.read_exact(&mut data).with_context(|| format!("reading {path}"))?;
        Ok(Some(data))
    }
}

fn read_dir<R: Read + Seek>(r: &mut R, lba: u32, len: u32) -> Result<Vec<Record>> {
    if len > 16 << 20 {
        bail!("directory extent implausibly large ({len} bytes)");
    }
    let mut data = vec![0u8; len as usize];
    r.seek(SeekFrom::Start(lba as u64 * SECTOR))?;
    r.read_exact(&mut data).context("reading a directory")?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rec_len = data[pos] as usize;
        if rec_len == 0 {
            // Records never span sectors: skip to the next one.
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        if rec_len < 34 || pos + rec_len > data.len() {
            bail!("malformed directory record");
        }
        let rec = &data[pos..pos + rec_len];
        let name_len = rec[32] as usize;
        if 33 + name_len > rec_len {
            bail!("malformed directory record name");
        }
        let raw = &rec[33..33 + name_len];
        if raw != [0] && raw != [1] {
            let su_start = (33 + name_len + (1 - name_len % 2)).min(rec_len);
            let name = rock_ridge_name(&rec[su_start..]).unwrap_or_else(|| {
                let plain = String::from_utf8_lossy(raw).to_string();
                let plain = plain.split(';').next().unwrap_or("").trim_end_matches('.').to_string();
                plain
            });
            records.push(Record { name, lba: le32(&rec[2..6]), len: le32(&rec[10..14]), is_dir: rec[25] & 2 != 0 });
        }
        pos += rec_len;
    }
    Ok(records)
}

/// The Rock Ridge `NM` (alternate name) entry in a record's system use area, if present.
fn rock_ridge_name(mut su: &[u8]) -> Option<String> {
    while su.len() >= 4 {
        let len = su[2] as usize;
        if len < 4 || len > su.len() {
            return None;
        }
        if &su[..2] == b"NM" && len >= 5 {
            return Some(String::from_utf8_lossy(&su[5..len]).to_string());
        }
        su = &su[len..];
    }
    None
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIXOS_ISOLINUX: &str = "SERIAL 0 115200\nTIMEOUT 100\nUI vesamenu.c32\nDEFAULT boot\n\nLABEL boot\nMENU LABEL NixOS 25.05 Installer\nLINUX /boot/bzImage\nAPPEND init=/nix/store/x-nixos-system/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail console=tty0 console=ttyS0,115200n8 nohibernate loglevel=4\nINITRD /boot/initrd\n\nLABEL boot-nomodeset\nAPPEND nomodeset\n";

    #[test]
    fn isolinux_default_entry_is_found() {
        let cmdline = isolinux_default_cmdline(NIXOS_ISOLINUX).unwrap();
        assert!(cmdline.ends_with("console=ttyS0,115200n8 nohibernate loglevel=4"));
        assert!(console_problems(&cmdline).is_empty());
    }

    #[test]
    fn missing_serial_console_fails() {
        let p = console_problems("init=/init console=tty0 quiet");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].level, Level::Fail);
        assert_eq!(p[0].finding, "serial-silent-after-bootloader");
        assert!(p[0].fix.contains("boot.kernelParams"));
    }

    #[test]
    fn serial_console_not_last_warns() {
        let p = console_problems("console=ttyS0,115200n8 console=tty0");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].level, Level::Warning);
        assert_eq!(p[0].finding, "console-not-last");
        assert!(p[0].message.contains("/dev/console is tty0"));
    }

    #[test]
    fn grub_first_linux_line() {
        let cfg = "menuentry 'NixOS' {\n  linux /boot/bzImage ${isoboot} init=/x console=tty0 console=ttyS0,115200n8\n  initrd /boot/initrd\n}\n";
        assert_eq!(grub_default_cmdline(cfg).unwrap(), "${isoboot} init=/x console=tty0 console=ttyS0,115200n8");
    }

    #[test]
    fn ui_module_default_is_not_a_label() {
        let cfg = "DEFAULT vesamenu.c32\nLABEL a\nAPPEND console=ttyS0\n";
        assert_eq!(isolinux_default_cmdline(cfg).unwrap(), "console=ttyS0");
    }

    fn xorriso_present(test: &str) -> bool {
        if which::which("xorriso").is_ok() {
            return true;
        }
        assert!(std::env::var_os("CI").is_none(), "xorriso missing in CI: run scripts/install-deps.sh");
        eprintln!("SKIP {test}: xorriso missing");
        false
    }

    /// `xorriso -as mkisofs ARGS -o DIR/NAME TREE` → the ISO's path.
    fn mkisofs(dir: &std::path::Path, name: &str, args: &[&str], tree: &std::path::Path) -> camino::Utf8PathBuf {
        let iso = dir.join(name);
        let out = std::process::Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&iso)
            .args(args)
            .arg(tree)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        camino::Utf8PathBuf::from_path_buf(iso).unwrap()
    }

    /// A tree with an ISOLINUX config (serial console as `cmdline_edit` leaves it) and a
    /// stand-in boot image (El Torito does not care what the image contains).
    fn tree(dir: &std::path::Path, cfg: &str) -> std::path::PathBuf {
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("isolinux")).unwrap();
        std::fs::create_dir_all(tree.join("boot/deep/er")).unwrap();
        std::fs::write(tree.join("boot/deep/er/filler.bin"), vec![7u8; 5000]).unwrap();
        std::fs::write(tree.join("isolinux/isolinux.bin"), vec![0x90u8; 2048]).unwrap();
        std::fs::write(tree.join("isolinux/isolinux.cfg"), cfg).unwrap();
        tree
    }

    const BIOS_BOOT: &[&str] = &["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot"];

    /// Builds real ISOs with xorriso (Rock Ridge and plain ISO 9660 names) and reads them.
    #[test]
    fn reads_config_from_real_iso_images() {
        if !xorriso_present("reads_config_from_real_iso_images") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = tree(dir.path(), &NIXOS_ISOLINUX.replace(" console=ttyS0,115200n8", ""));
        for (name, names) in [("rr.iso", &["-R", "-J"][..]), ("plain.iso", &[][..])] {
            let iso = mkisofs(dir.path(), name, &[names, BIOS_BOOT].concat(), &tree);
            let pf = check_iso(&iso, crate::vm::qemu::Firmware::Bios).unwrap();
            assert!(pf.boot.as_deref().is_some_and(|b| b.starts_with("El Torito BIOS entry: no emulation")), "{pf:?}");
            assert_eq!(pf.config.as_deref(), Some("isolinux/isolinux.cfg"), "{name}");
            assert!(pf.problems.iter().any(|p| p.level == Level::Fail), "{name}: {pf:?}");
            assert_eq!(pf.problems[0].finding, "serial-silent-after-bootloader");
        }
        // Not an ISO at all, and a missing file: infrastructure errors that say so.
        let bogus = camino::Utf8PathBuf::from_path_buf(dir.path().join("bogus.iso")).unwrap();
        std::fs::write(&bogus, vec![0u8; 100_000]).unwrap();
        let err = check_iso(&bogus, crate::vm::qemu::Firmware::Bios).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable ISO 9660 image"), "{err:#}");
        let missing = camino::Utf8PathBuf::from("/nonexistent/x.iso");
        let err = check_iso(&missing, crate::vm::qemu::Firmware::Bios).unwrap_err();
        assert_eq!(err.downcast_ref::<crate::exit::Exit>().unwrap().code, crate::exit::INFRA);
    }

    /// An ISO the BIOS cannot boot is named before booting (it used to pass with a warning and
    /// end 45 s later as `bootloader-stuck` over an empty serial log): no boot record, a
    /// UEFI-only catalogue, a boot image cut off by truncation.
    #[test]
    fn an_iso_without_a_bios_boot_entry_is_not_bootable() {
        if !xorriso_present("an_iso_without_a_bios_boot_entry_is_not_bootable") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = tree(dir.path(), NIXOS_ISOLINUX);
        let uefi_only = ["-e", "isolinux/isolinux.bin", "-no-emul-boot"];
        // A boot image placed after 1 MiB of data, then the file cut before it.
        std::fs::write(tree.join("boot/aaa-filler.bin"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(tree.join("zzz-boot.img"), vec![0x90u8; 2048]).unwrap();
        let late_boot = ["-b", "zzz-boot.img", "-c", "boot.cat", "-no-emul-boot"];
        let truncated = mkisofs(dir.path(), "truncated.iso", &late_boot, &tree);
        let image_lba = check_iso(&truncated, crate::vm::qemu::Firmware::Bios).unwrap().boot.unwrap();
        let lba: u64 = image_lba.rsplit(' ').next().unwrap().parse().unwrap();
        std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(lba * SECTOR).unwrap();
        let cases = [
            (mkisofs(dir.path(), "no-boot.iso", &["-R"], &tree), "no El Torito boot record"),
            (mkisofs(dir.path(), "uefi.iso", &uefi_only, &tree), "UEFI only"),
            (truncated, "past the end of the file"),
        ];
        for (iso, why) in cases {
            let pf = check_iso(&iso, crate::vm::qemu::Firmware::Bios).unwrap();
            assert_eq!(pf.problems.len(), 1, "{iso}: {pf:?}");
            let p = &pf.problems[0];
            assert_eq!((p.level, p.finding), (Level::Infra, "not-bootable"), "{iso}");
            assert!(p.message.contains(why) && p.message.contains(iso.as_str()), "{iso}: {}", p.message);
            assert!(p.fix.contains("-report_el_torito"), "{}", p.fix);
        }
        // The same tree with a BIOS boot image is fine.
        let good = mkisofs(dir.path(), "good.iso", BIOS_BOOT, &tree);
        assert!(check_iso(&good, crate::vm::qemu::Firmware::Bios).unwrap().problems.is_empty());
    }

    #[test]
    fn grub_editor_lines_above_linux_follow_the_default_entry() {
        let fixture = include_str!("../../../scripts/fixture/etc/grub.cfg");
        // setparams, the empty rest of the `menuentry … {` line, then `linux` itself.
        assert_eq!(grub_lines_before_linux(fixture), 2);
        let cfg = "set default=1\nmenuentry 'a' {\n  linux /a\n}\nmenuentry 'b' {\n  insmod gzio\n\n  linux /b\n}\n";
        assert_eq!(grub_lines_before_linux(cfg), 4);
    }

    /// A grub.cfg only inside the El Torito EFI image (FAT, made with mtools as the fixture
    /// makes its own) is read under UEFI; BIOS still reads isolinux.cfg.
    #[test]
    fn uefi_reads_grub_cfg_inside_the_el_torito_efi_image() {
        let tools = ["xorriso", "mkfs.vfat", "mmd", "mcopy", "mtype"];
        if let Some(t) = tools.iter().find(|t| which::which(t).is_err()) {
            assert!(std::env::var_os("CI").is_none(), "{t} missing in CI: run scripts/install-deps.sh");
            eprintln!("SKIP uefi_reads_grub_cfg_inside_the_el_torito_efi_image: {t} missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = tree(dir.path(), NIXOS_ISOLINUX);
        let cfg = dir.path().join("grub.cfg");
        std::fs::write(&cfg, "menuentry 'x' {\n  linux /boot/bzImage console=ttyS0,115200n8 console=tty0\n}\n")
            .unwrap();
        let img = tree.join("efi.img");
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(program).args(args).env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
            assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let os = |s: &str| std::ffi::OsString::from(s);
        run("mkfs.vfat", &[&os("-C"), img.as_os_str(), &os("1440")]);
        run("mmd", &[&os("-i"), img.as_os_str(), &os("::/EFI"), &os("::/EFI/boot")]);
        run("mcopy", &[&os("-i"), img.as_os_str(), cfg.as_os_str(), &os("::/EFI/boot/grub.cfg")]);
        let efi = ["-eltorito-alt-boot", "-e", "efi.img", "-no-emul-boot"];
        let iso = mkisofs(dir.path(), "hybrid.iso", &[BIOS_BOOT, &efi].concat(), &tree);
        let pf = check_iso(&iso, crate::vm::qemu::Firmware::Uefi).unwrap();
        assert!(pf.config.as_deref().is_some_and(|c| c.starts_with("El Torito EFI image")), "{pf:?}");
        assert_eq!(pf.problems.len(), 1, "{pf:?}");
        assert_eq!(pf.problems[0].finding, "console-not-last");
        assert_eq!(pf.grub_lines_before_linux, 2);
        let pf = check_iso(&iso, crate::vm::qemu::Firmware::Bios).unwrap();
        assert_eq!(pf.config.as_deref(), Some("isolinux/isolinux.cfg"), "{pf:?}");
    }
}
