# pbak, built from this source tree with nixpkgs' Rust tooling:
#   nix-build -E 'with import <nixpkgs> { }; callPackage ./nix/package.nix { }'
# Shell completions and man pages come from the binary itself (`pbak completions`,
# `pbak man`), so they always match its flags.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:

let
  manifest = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "pbak";
  inherit (manifest.package) version;

  # Only what the build reads (not target/, the tests or the fuzz targets).
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../benches
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # The test suite needs root, Btrfs loop devices and an S3 server (scripts/test-all.sh);
  # it cannot run in the build sandbox.
  doCheck = false;

  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd pbak \
      --bash <($out/bin/pbak completions bash) \
      --zsh <($out/bin/pbak completions zsh) \
      --fish <($out/bin/pbak completions fish)
    $out/bin/pbak man man-pages > /dev/null
    installManPage man-pages/*.1
  '';

  meta = {
    description = manifest.package.description;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "pbak";
    platforms = lib.platforms.linux;
  };
}
