{
  description = "NixOS boot ISO (pre-nixos) proven in QEMU by `cargo xtask vm-test`";

  # Pinned in flake.lock to nixos-25.05 rev c8aa8cc0 (2025-10-22), a revision known to build
  # this ISO. Update with `nix flake update` on a machine that can reach GitHub.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = nixpkgs.lib;
      bootImage = self.nixosConfigurations.boot-image.config.system.build.isoImage;

      # Tools `cargo xtask` and its tests call: a Rust toolchain with a linker, QEMU and
      # firmware, xorriso/syslinux for the fixture ISO, and nix itself.
      devTools = with pkgs; [
        cargo
        rustc
        stdenv.cc
        qemu
        OVMF
        xorriso
        syslinux
        cpio
        kmod
        python3
        nix
        git
      ];

      # `nix run .#<verb>` runs `cargo xtask <verb>` in the checkout you are in. It cannot run
      # from the store copy of the flake: cargo needs a writable target/ next to the sources.
      xtaskApp =
        verb:
        let
          script = pkgs.writeShellApplication {
            name = "xtask-${verb}";
            runtimeInputs = devTools;
            text = ''
              root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
              if [ ! -f "$root/xtask/Cargo.toml" ]; then
                echo "nix run .#${verb}: run this from a checkout of the repository (no xtask/ in $root)" >&2
                exit 2
              fi
              cd "$root"
              exec cargo xtask ${verb} "$@"
            '';
          };
        in
        {
          type = "app";
          program = "${script}/bin/xtask-${verb}";
        };
    in
    {
      nixosConfigurations.boot-image = nixpkgs.lib.nixosSystem {
        modules = [
          "${nixpkgs}/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix"
          ./nix/boot-image.nix
          { nixpkgs.hostPlatform = system; }
        ];
      };

      packages.${system} = {
        inherit bootImage;
        default = bootImage;
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = devTools;
      };

      apps.${system} = lib.genAttrs [ "doctor" "build-image" "vm-test" "analyze" "bench" ] xtaskApp
        // {
          default = xtaskApp "vm-test";
        };
    };
}
