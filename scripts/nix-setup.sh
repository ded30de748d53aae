#!/usr/bin/env bash
# Makes Nix usable for the current user, then repairs the login profile. Safe to rerun.
#
#  1. nix: when no nix is found (PATH or the usual install locations) and apt-get exists,
#     installs Debian's nix-bin (with sudo when not root). Otherwise says how to install it.
#  2. building: the `nixbld` group and build users (scripts/nix-build-users.sh, as Debian's
#     nix-setup-systemd and Nix's installer make them), so nix can build as root. A normal user
#     builds through a nix-daemon: with systemd, Debian's nix-setup-systemd provides it and the
#     user joins `nix-users`; without systemd the script says how to start one.
#  3. flakes: makes sure the user's nix.conf enables `nix-command flakes` (appends one
#     `extra-experimental-features` line, only when nix does not already have both).
#  4. profile: runs `cargo xtask doctor --fix`, which puts the USER guard before the sourcing
#     of ~/.nix-profile/etc/profile.d/nix.sh (see docs/doctor.md; undo: --revert).
#
# Environment: XTASK overrides the command used for step 3 (default: `cargo xtask`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
user="${USER:-$(id -un)}"
home="${HOME:?HOME must be set}"

say() { printf 'nix-setup: %s\n' "$*"; }

find_nix() {
  if command -v nix >/dev/null 2>&1; then
    command -v nix
    return 0
  fi
  local candidate
  for candidate in "$home/.nix-profile/bin/nix" /nix/var/nix/profiles/default/bin/nix \
    /run/current-system/sw/bin/nix /usr/bin/nix /usr/local/bin/nix; do
    if [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# 1. nix itself.
if nix_bin="$(find_nix)"; then
  say "nix found: $nix_bin ($("$nix_bin" --version 2>/dev/null || echo 'version unknown'))"
elif command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  say "nix not found; installing Debian's nix-bin"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-bin \
    || { $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-bin; }
  nix_bin="$(find_nix)" || { say "nix-bin installed but no nix binary found"; exit 1; }
  say "installed $("$nix_bin" --version)"
else
  say "nix not found and apt-get is not available."
  say "install Nix (https://nixos.org/download), then rerun: $0"
  exit 1
fi

# 2. building: build users for root's builds, a daemon for a normal user's.
"$root/scripts/nix-build-users.sh"
if [ "$(id -u)" -ne 0 ] && [ ! -w /nix/var/nix/db ]; then
  if [ -S /nix/var/nix/daemon-socket/socket ] && "$nix_bin" --extra-experimental-features nix-command store ping >/dev/null 2>&1; then
    say "a nix-daemon answers: $user builds through it"
  elif [ -d /run/systemd/system ]; then
    say "the store belongs to root: installing Debian's nix-daemon (nix-setup-systemd), adding $user to nix-users"
    sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-setup-systemd
    sudo usermod --append --groups nix-users "$user"
    sudo systemctl enable --now nix-daemon.socket
    say "log in again (the nix-users membership applies to new sessions), then: cargo xtask doctor"
  else
    say "the store belongs to root and this machine has no systemd to run a nix-daemon:"
    say "  start one as root (sudo nix-daemon &), or build as root"
  fi
fi

# 3. flakes in the user's nix.conf (nix reads \$XDG_CONFIG_HOME/nix/nix.conf, default ~/.config).
conf_dir="${XDG_CONFIG_HOME:-$home/.config}/nix"
conf="$conf_dir/nix.conf"
features="$("$nix_bin" --extra-experimental-features nix-command show-config 2>/dev/null \
  | sed -n 's/^experimental-features = //p')"
nix_command_on=no
if "$nix_bin" show-config >/dev/null 2>&1; then nix_command_on=yes; fi
case " $features " in
  *" flakes "*) flakes_on=yes ;;
  *) flakes_on=no ;;
esac
if [ "$nix_command_on" = yes ] && [ "$flakes_on" = yes ]; then
  say "nix-command and flakes already enabled"
elif [ -f "$conf" ] && grep -Eq '^[[:space:]]*extra-experimental-features[[:space:]]*=.*nix-command.*flakes' "$conf"; then
  say "$conf already enables nix-command flakes (an earlier setting may override it: check NIX_CONFIG)"
else
  mkdir -p "$conf_dir"
  # Keep an existing file's last line intact when it lacks a final newline.
  if [ -s "$conf" ] && [ -n "$(tail -c 1 "$conf")" ]; then printf '\n' >>"$conf"; fi
  printf '%s\n' 'extra-experimental-features = nix-command flakes' >>"$conf"
  say "enabled nix-command and flakes in $conf"
fi

# 4. the login profile's USER guard.
say "repairing the login profile of $user"
cd "$root"
if [ -n "${XTASK:-}" ]; then
  # shellcheck disable=SC2086 # XTASK may be a command with arguments
  $XTASK doctor --fix
elif command -v cargo >/dev/null 2>&1; then
  cargo xtask doctor --fix
else
  say "cargo not found: install Rust (https://rustup.rs), then run: cargo xtask doctor --fix"
  exit 1
fi
say "done; check everything with: cargo xtask doctor"
