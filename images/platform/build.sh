#!/usr/bin/env bash
# Builds the Linux platform image: Debian's kernel (package linux-image-amd64) and an
# initramfs holding busybox, the kernel modules and tools cn-agent needs, cn-agent
# itself, volmount beside it (instances' NFS volumes, through FUSE) and
# images/platform/init. Writes <out>/<stamp>/vmlinuz and initrd, the booter's
# os/<platform>/ layout.
#
#   images/platform/build.sh --cn-agent PATH [--volmount PATH] --out DIR [--stamp STAMP]
#
# --volmount defaults to the volmount beside --cn-agent (the same cargo target dir).
# The stamp defaults to the build's UTC time, 20261206T0900Z. Progress lines on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cn_agent="" volmount="" out="" stamp=$(date -u +%Y%m%dT%H%MZ)
while [ $# -gt 0 ]; do
    case "$1" in
    --cn-agent) cn_agent=$2; shift 2 ;;
    --volmount) volmount=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --stamp) stamp=$2; shift 2 ;;
    *) echo "platform: unknown argument $1" >&2; exit 2 ;;
    esac
done
t0=$(date +%s)
step() { printf '[platform %3ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { echo "platform: error: $*" >&2; exit 1; }
[ -x "$cn_agent" ] || die "--cn-agent: $cn_agent is not an executable (cargo build --release -p cn-agent)"
[ -n "$volmount" ] || volmount=$(dirname "$cn_agent")/volmount
[ -x "$volmount" ] || die "--volmount: $volmount is not an executable (cargo build --release -p volmount)"
[ -n "$out" ] || die "--out is required"
case "$stamp" in
*[!A-Za-z0-9_.-]* | "") die "--stamp: $stamp must match [A-Za-z0-9_.-]+" ;;
esac

# The newest Debian kernel with its modules.
kver=""
for k in /boot/vmlinuz-*-amd64; do
    v=${k#/boot/vmlinuz-}
    [ -f "/lib/modules/$v/modules.dep" ] && kver=$v
done
[ -n "$kver" ] || die "no /boot/vmlinuz-*-amd64 with its /lib/modules (apt-get install linux-image-amd64)"
step "kernel $kver, platform $stamp"

root=$(mktemp -d /tmp/triton-platform.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/triton,proc,sys,dev,run,tmp,var/lib/cn-agent,root}
chmod 1777 "$root/tmp"

step "busybox and its applets"
bb=$(command -v busybox || echo /bin/busybox)
file -L "$bb" 2>/dev/null | grep -q 'statically linked' || [ "$(ldd "$bb" 2>&1 | grep -c '=>')" -eq 0 ] \
    || die "$bb is not static (apt-get install busybox-static)"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# The kernel runs /sbin/modprobe for modules it asks for itself.
ln -s ../bin/busybox "$root/sbin/modprobe"

# A binary and the shared libraries it loads (ldd), at their paths.
copy_binary() {
    local src=$1 dst=$2
    install -D -m 0755 "$src" "$root$dst"
    ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}
step "cn-agent, volmount and the tools cn-agent runs (ip, nft, mkfs.xfs, xfs_growfs, losetup, xz)"
copy_binary "$cn_agent" /usr/bin/cn-agent
# cn-agent runs the volmount beside its own executable.
copy_binary "$volmount" /usr/bin/volmount
for tool in ip nft mkfs.xfs xfs_growfs losetup xz; do
    p=$(command -v "$tool") || die "$tool is not installed (scripts/lib.sh ensure_packages)"
    rm -f "$root/bin/$tool" "$root/sbin/$tool"
    copy_binary "$(readlink -f "$p")" "/usr/sbin/$tool"
done

step "kernel modules"
# crc32c_generic first: libcrc32c (xfs, nf_tables) asks for a crc32c, and the CPU may
# have no instructions for crc32c-intel (QEMU's TCG).
modules=(crc32c_generic virtio_pci virtio_net virtio_blk e1000 overlay veth bridge vxlan 8021q loop xfs
    nf_tables nft_ct nft_masq nft_nat nft_chain_nat nft_reject_inet nft_reject_bridge
    nft_limit nft_log nft_fib_inet nft_meta_bridge nf_conntrack_bridge br_netfilter
    nf_nat nf_conntrack tun fuse)
: > "$root/etc/triton/modules"
for m in "${modules[@]}"; do
    deps=$(modprobe -S "$kver" --show-depends "$m" 2>/dev/null) || {
        step "  $m: not in $kver (skipped)"
        continue
    }
    echo "$m" >> "$root/etc/triton/modules"
    echo "$deps" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
        install -D -m 0644 "$ko" "$root$ko"
    done
done
cp "/lib/modules/$kver/modules.order" "/lib/modules/$kver/modules.builtin" "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"
step "  $(find "$root/lib/modules" -name '*.ko*' | wc -l) modules"

install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/udhcpc.script" "$root/etc/triton/udhcpc.script"
echo "$stamp" > "$root/etc/triton/platform"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
: > "$root/etc/resolv.conf"

mkdir -p "$out/$stamp"
step "initramfs (cpio, gzip)"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6) > "$out/$stamp/initrd.tmp"
cp "/boot/vmlinuz-$kver" "$out/$stamp/vmlinuz.tmp"
mv "$out/$stamp/initrd.tmp" "$out/$stamp/initrd"
mv "$out/$stamp/vmlinuz.tmp" "$out/$stamp/vmlinuz"
step "wrote $out/$stamp: vmlinuz $(du -h "$out/$stamp/vmlinuz" | cut -f1), initrd $(du -h "$out/$stamp/initrd" | cut -f1)"
echo "$stamp"
