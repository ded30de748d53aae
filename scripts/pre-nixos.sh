#!/bin/sh
# pre-nixos: the boot image's storage provisioning service.
#
# Finds the disks this machine could be installed on and, when exactly the situation is safe
# (candidate disks, all of them blank), creates LVM volume group `main` with logical volumes
# `swap` (small) and `slash` (the rest, ext4) on the first one. Anything else is plan-only:
# a disk that carries data or signatures is never touched.
#
# Outcomes (checked by `cargo xtask vm-test --disk …`):
#   no candidate disk                    skipped/no-disk
#   one blank disk                       applied/auto-applied on it
#   several blank disks (e.g. two)       applied/auto-applied on the first in kernel-name order
#                                        (/dev/vda before /dev/vdb, whatever their sizes); the
#                                        others are left blank
#   any candidate disk with partitions,  plan-only/existing-storage, nothing written to any disk
#   signatures or data (e.g. a disk a
#   previous boot provisioned)
#   a disk that cannot be probed         plan-only/detection-error
#
# Results (for humans and for the VM test harness):
#   $PRE_NIXOS_STATE_DIR/plan            the plan it chose (KEY=value lines)
#   $PRE_NIXOS_STATE_DIR/storage-status  STATE=applied|plan-only|skipped|failed, DETAIL=...
#                                        (written atomically, once, at the end)
#   one `pre-nixos: ...` summary line on the console.
# Exit status: 0 unless provisioning failed. Never waits for anything that can hang.
#
# Needs util-linux (wipefs), lvm2, e2fsprogs and coreutils on PATH. Works with busybox too.
#
# Environment (for tests and for the fixture image):
#   PRE_NIXOS_STATE_DIR   default /run/pre-nixos
#   PRE_NIXOS_CONSOLE     where the summary line goes, default /dev/console
#   PRE_NIXOS_SYS_BLOCK   sysfs block directory, default /sys/block
#   PRE_NIXOS_DEV         device directory, default /dev
#   PRE_NIXOS_MOUNTS      mount table, default /proc/mounts
#   PRE_NIXOS_FAULT       `detection-error` simulates a failing storage probe
#   PRE_NIXOS_SWAP_MIB    size of the swap volume, default 256
set -u

state_dir=${PRE_NIXOS_STATE_DIR:-/run/pre-nixos}
console=${PRE_NIXOS_CONSOLE:-/dev/console}
sys_block=${PRE_NIXOS_SYS_BLOCK:-/sys/block}
dev_dir=${PRE_NIXOS_DEV:-/dev}
mounts=${PRE_NIXOS_MOUNTS:-/proc/mounts}
swap_mib=${PRE_NIXOS_SWAP_MIB:-256}
vg=main

log() { printf 'pre-nixos: %s\n' "$*" >&2; }

# The one console line. A missing or unwritable console must not fail the service.
announce() {
  printf 'pre-nixos: %s\n' "$1" >&2
  if [ -w "$console" ]; then
    printf 'pre-nixos: %s\n' "$1" >"$console" 2>/dev/null || true
  fi
}

# write_status STATE DETAIL: storage-status via a temporary file and rename (atomic).
write_status() {
  tmp="$state_dir/.storage-status.$$"
  printf 'STATE=%s\nDETAIL=%s\n' "$1" "$2" >"$tmp" && mv -f "$tmp" "$state_dir/storage-status"
}

write_plan() {
  tmp="$state_dir/.plan.$$"
  printf '%s\n' "$@" >"$tmp" && mv -f "$tmp" "$state_dir/plan"
}

# Devices that hold a mounted filesystem (the boot medium, or anything in use): their
# kernel names, one per line, resolved through /sys so partitions map to their disk.
mounted_disks() {
  while read -r source _rest; do
    case $source in /dev/*) ;; *) continue ;; esac
    name=$(basename "$(readlink -f "$source" 2>/dev/null || printf '%s' "$source")")
    if [ -e "$sys_block/$name" ]; then
      printf '%s\n' "$name"
    else
      for part in "$sys_block"/*/"$name"; do
        [ -e "$part" ] && basename "$(dirname "$part")"
      done
    fi
  done <"$mounts"
}

# Candidate disks, one kernel name per line: real, writable, fixed, non-empty, not in use.
candidates() {
  in_use=$(mounted_disks)
  for path in "$sys_block"/*; do
    [ -e "$path" ] || continue
    name=$(basename "$path")
    case $name in
      fd* | loop* | ram* | sr* | zram* | dm-* | md* | nbd*) continue ;;
    esac
    [ "$(cat "$path/ro" 2>/dev/null)" = 0 ] || continue
    [ "$(cat "$path/removable" 2>/dev/null)" = 0 ] || continue
    size=$(cat "$path/size" 2>/dev/null) || continue
    [ "${size:-0}" -gt 0 ] || continue
    if printf '%s\n' "$in_use" | grep -qx "$name"; then continue; fi
    printf '%s\n' "$name"
  done
}

# has_data NAME: exit 0 if the disk carries partitions, signatures or any non-zero byte in
# its first MiB; 1 if blank; 2 if it could not be probed.
has_data() {
  disk=$dev_dir/$1
  for part in "$sys_block/$1/$1"*; do
    [ -e "$part" ] && return 0
  done
  if ! signatures=$(wipefs --noheadings --output TYPE "$disk" 2>/dev/null); then
    log "wipefs could not probe $disk"
    return 2
  fi
  [ -n "$signatures" ] && return 0
  if ! head_bytes=$(dd if="$disk" bs=1048576 count=1 2>/dev/null | tr -d '\000' | wc -c); then
    log "could not read $disk"
    return 2
  fi
  [ "$head_bytes" -gt 0 ] && return 0
  return 1
}

# run STEP COMMAND...: runs one provisioning step; on failure records it and exits.
run() {
  step=$1
  shift
  log "$step: $*"
  if ! "$@" >&2; then
    log "step $step failed: $*"
    write_status failed "$step"
    announce "Provisioning failed."
    exit 1
  fi
}

main() {
  if ! mkdir -p "$state_dir"; then
    log "cannot create $state_dir"
    announce "Provisioning failed."
    exit 1
  fi

  if [ "${PRE_NIXOS_FAULT:-}" = detection-error ]; then
    log "simulated storage detection error (PRE_NIXOS_FAULT=detection-error)"
    write_plan "PLAN=none" "REASON=detection-error"
    write_status plan-only detection-error
    announce "Storage detection encountered an error; provisioning ran in plan-only mode."
    return 0
  fi

  # The unit waits for nothing but basic.target (as on NixOS), so disks may still be being
  # probed: on a loaded host a virtio disk appeared 20 ms after this ran and the run saw
  # "no-disk". Let udev finish the coldplug events first (where there is udev).
  if command -v udevadm >/dev/null 2>&1; then
    udevadm settle --timeout=30 || log "udevadm settle timed out; detecting disks anyway"
  fi
  disks=$(candidates)
  if [ -z "$disks" ]; then
    write_plan "PLAN=none" "REASON=no-disk"
    write_status skipped no-disk
    announce "Provisioning status is 'skipped' (no-disk)."
    return 0
  fi

  for name in $disks; do
    has_data "$name"
    case $? in
      0)
        log "/dev/$name carries data or signatures; not touching any disk"
        write_plan "PLAN=none" "REASON=existing-storage" "DISK=$dev_dir/$name"
        write_status plan-only existing-storage
        announce "Existing storage detected; provisioning ran in plan-only mode."
        return 0
        ;;
      1) ;;
      *)
        write_plan "PLAN=none" "REASON=detection-error" "DISK=$dev_dir/$name"
        write_status plan-only detection-error
        announce "Storage detection encountered an error; provisioning ran in plan-only mode."
        return 0
        ;;
    esac
  done

  target=$dev_dir/$(printf '%s\n' "$disks" | head -n 1)
  write_plan "PLAN=lvm" "DISK=$target" "VG=$vg" \
    "LV_SWAP=swap:${swap_mib}MiB" "LV_SLASH=slash:rest:ext4"
  run pvcreate lvm pvcreate --yes "$target"
  run vgcreate lvm vgcreate --yes "$vg" "$target"
  run lvcreate-swap lvm lvcreate --yes --name swap --size "${swap_mib}m" "$vg"
  run lvcreate-slash lvm lvcreate --yes --name slash --extents 100%FREE "$vg"
  run mkswap mkswap --label swap "$dev_dir/$vg/swap"
  run mkfs-slash mkfs.ext4 -q -F -L slash "$dev_dir/$vg/slash"
  write_status applied auto-applied
  announce "Storage provisioning completed automatically."
}

main "$@"
