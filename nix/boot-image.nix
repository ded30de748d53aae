# Our layer of the boot image, imported by flake.nix on top of nixpkgs'
# installation-cd-minimal.nix (which brings the ISO builder, autologin `nixos` on the consoles
# and passwordless sudo for wheel).
#
# What this adds, and why (docs/build-image.md has the long form):
#   * serial console LAST on the kernel command line, so it becomes /dev/console;
#   * a fast squashfs, because mksquashfs dominates the build;
#   * the pre-nixos unit running scripts/pre-nixos.sh in the background;
#   * systemd-networkd naming the first ethernet NIC `lan` and running DHCP on it;
#   * a console line `LAN IPv4 address: <ip>` once `lan` has an address.
{ lib, pkgs, ... }:
let
  # A unit that runs in the background: it never holds up multi-user.target, the gettys or
  # any other unit. A target adds After= on every unit it Wants= unless that unit sets
  # DefaultDependencies=no, so we set it and restate by hand the default ordering we need
  # (after basic.target, stopped by shutdown). Nothing is ordered Before= these units, and
  # they never call `systemctl start` on anything (that deadlocked upstream).
  backgroundUnit = {
    wantedBy = [ "multi-user.target" ];
    after = [ "basic.target" ];
    conflicts = [ "shutdown.target" ];
    before = [ "shutdown.target" ];
    unitConfig.DefaultDependencies = false;
  };

  # Everything scripts/pre-nixos.sh may call. A unit's PATH holds only what `path` lists.
  preNixosTools = with pkgs; [
    bash
    coreutils
    util-linux # lsblk, wipefs, blkid, findmnt, sfdisk
    lvm2 # pvcreate, vgcreate, lvcreate, vgs, lvs
    e2fsprogs # mkfs.ext4
    gawk
    gnugrep
    gnused
    findutils
    iproute2
    kmod
    procps
    systemd # systemd-cat, udevadm
  ];

in
{
  # ttyS0 must come last: the last console= becomes /dev/console, where systemd and stage 1
  # print their progress. With tty0 last, a healthy boot is silent on serial for 90-270 s
  # after the initrd loads and looks exactly like a hang (field notes, upstream 2025-11-11).
  boot.kernelParams = [
    "console=tty0"
    "console=ttyS0,115200n8"
  ];

  # A test-and-iterate image: build time matters more than size. mksquashfs dominates the
  # build (upstream: 6-15 min with xz; nixpkgs 25.05 defaults to zstd level 19). Measured on a
  # 299 MB tree here: xz 55.7 s, zstd-19 42.8 s, zstd-6 1.7 s, zstd-3 0.9 s; zstd-3 is only
  # ~14% larger than xz, decompresses faster at boot, and every kernel we boot reads zstd.
  isoImage.squashfsCompression = "zstd -Xcompression-level 3";

  systemd.services.pre-nixos = backgroundUnit // {
    description = "pre-nixos: detect and provision storage";
    path = preNixosTools;
    environment.PRE_NIXOS_STATE_DIR = "/run/pre-nixos";
    serviceConfig = {
      # Oneshot without RemainAfterExit: `systemctl is-active pre-nixos` reads `activating`
      # while it runs, `inactive` after success, `failed` after an error.
      Type = "oneshot";
      ExecStart = "${pkgs.bash}/bin/bash ${../scripts/pre-nixos.sh}";
      # A hung provisioning run shows up as a failed unit instead of running forever.
      TimeoutStartSec = "20min";
      # The script writes its one summary line to /dev/console itself; its step-by-step
      # log goes to the journal only, so it does not interleave with the serial shell.
      StandardOutput = "journal";
      StandardError = "journal";
    };
  };

  # systemd-networkd instead of the scripted dhcpcd setup: the `.link` file names the NIC,
  # the `.network` file runs DHCP on it. Forced, so no default of the installer profiles wins.
  networking.useNetworkd = lib.mkForce true;
  networking.useDHCP = lib.mkForce false;
  networking.networkmanager.enable = lib.mkForce false;
  systemd.network.enable = true;
  # Nothing on this image needs network-online.target; waiting for it only risks a 2-min
  # timeout when no cable is plugged in.
  systemd.network.wait-online.enable = false;

  # The first physical ethernet NIC is named `lan`. `Path=pci-*` leaves out virtual devices
  # (veth, bridges, tun), which have no PCI path; `Type=ether` leaves out Wi-Fi. When a machine
  # has several NICs, the first one udev renames gets `lan`; the rename of the others fails
  # (the name is taken) and they keep their predictable names.
  systemd.network.links."10-lan" = {
    matchConfig = {
      Type = "ether";
      Path = "pci-*";
    };
    linkConfig.Name = "lan";
  };

  systemd.network.networks."20-lan" = {
    matchConfig.Name = "lan";
    networkConfig.DHCP = "ipv4";
  };

  systemd.services.announce-lan-ip = backgroundUnit // {
    description = "Print the LAN IPv4 address on the console";
    after = backgroundUnit.after ++ [ "systemd-networkd.service" ];
    # Everything scripts/announce-lan-ip.sh calls.
    path = with pkgs; [
      coreutils
      gawk
      iproute2
    ];
    serviceConfig = {
      Type = "oneshot";
      # Shared with the systemd fixture (scripts/fixture/systemd/announce-lan-ip.service).
      ExecStart = "${pkgs.bash}/bin/bash ${../scripts/announce-lan-ip.sh}";
      StandardOutput = "journal+console";
      StandardError = "journal+console";
    };
  };
}
