#!/usr/bin/env bash
# Debian packages the test tiers need (run as root). Idempotent.
set -euo pipefail
pkgs=(
  python3 python3-venv python3-pip
  grub-common grub-efi-amd64-bin grub-pc-bin      # grub-editenv, grub-mkimage, modules
  qemu-system-x86 ovmf                            # tests/hardware
  mtools dosfstools fdisk gdisk e2fsprogs util-linux
  busybox-static cpio                             # the guest's initramfs
  binutils                                        # strip: the whole-box slot image's extensions
  nginx-light                                     # the real HTTP server of tests/contract
  prometheus                                      # promtool check metrics
  containerd                                      # a real containerd for the probe's contract case
  openssl                                         # the https test makes a self-signed certificate
  zstd gzip curl
  rauc squashfs-tools swupdate dbus-daemon dbus-bin time   # bench/apply_vs_peers.py and its smoke test
  casync                                          # bench/adaptive.py: the reference row
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# tests/hardware downloads a Debian kernel package with `apt-get download`: it needs the lists.
ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -q
# kubectl: the machine's own if present, else Debian's kubernetes-client.
command -v kubectl >/dev/null 2>&1 || apt-get install -y -q --no-install-recommends kubernetes-client
