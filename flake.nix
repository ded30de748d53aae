# Placeholder: the boot image definition is written in its own issue (flake.nix boot image).
{
  description = "NixOS boot ISO proven in QEMU by cargo xtask vm-test";
  outputs = { self }: { };
}
