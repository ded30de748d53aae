#!/usr/bin/env bash
# Makes nix able to build as root on this machine: creates the `nixbld` group and the build
# users nixbld1..nixbld10 (plus the `nix-users` group the nix-daemon admits), exactly as
# Debian's own nix-setup-systemd package and Nix's installer do. nix.conf is never touched:
# nix's default `build-users-group = nixbld` then simply works, and builds run as unprivileged
# build users inside nix's sandbox instead of as root. Why this and not `build-users-group =`
# in nix.conf: docs/build-image.md ("Nix on a fresh machine").
#
# Idempotent: creates only what is missing, says what it did. Needs root (or sudo).
set -euo pipefail

say() { printf 'nix-build-users: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    say "needs root to create the nixbld group and build users: run it as root"
    exit 1
  fi
  SUDO=sudo
fi

nologin="$(command -v nologin || echo /usr/sbin/nologin)"
created=()

for group in nixbld nix-users; do
  if ! getent group "$group" >/dev/null; then
    $SUDO groupadd --system "$group"
    created+=("group $group")
  fi
done

for n in $(seq 1 10); do
  user="nixbld$n"
  if ! id "$user" >/dev/null 2>&1; then
    $SUDO useradd --system --comment "Nix build user $n" --home-dir /var/empty \
      --gid nixbld --groups nixbld --no-user-group --shell "$nologin" "$user"
    created+=("$user")
  elif ! id -nG "$user" | tr ' ' '\n' | grep -qx nixbld; then
    # nix takes the build users from the group's member list.
    $SUDO usermod --append --groups nixbld "$user"
    created+=("$user in nixbld")
  fi
done

if [ ${#created[@]} -eq 0 ]; then
  say "nixbld group and 10 build users present"
else
  say "created: ${created[*]}"
fi
