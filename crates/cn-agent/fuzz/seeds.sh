#!/usr/bin/env bash
# Writes the seed corpus of the `image` target to seeds/image/ (committed; run again
# after changing it). Each seed is the target's form byte (see fuzz_targets/image.rs)
# and a small tarball made by GNU tar: libFuzzer mutates whole members from the start
# instead of having to find a 512-byte header byte by byte. Needs root (owners, device
# nodes, setuid bits).
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD/seeds/image
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
TZ=UTC
export TZ

# seed NAME FORM TAR-OPTIONS... : the form byte, then `tar -c` of the rest (blocks of 512
# bytes, fixed times and owners so a second run writes the same bytes).
seed() {
    local name=$1 form=$2
    shift 2
    {
        printf "\\x$form"
        tar --create --file=- --blocking-factor=1 --mtime=@1600000000 --owner=1000 \
            --group=1000 --numeric-owner --sort=name "$@"
    } >"$out/$name"
}

mkdir -p good/bin good/etc good/run
printf '#!/bin/sh\n' >good/bin/sh
ln good/bin/sh good/bin/ash
ln -s /bin/sh good/bin/bash
ln -s ../run/resolv.conf good/etc/resolv.conf
mkfifo good/run/initctl
chmod 755 good/bin/sh
(cd good && seed good-gnu 00 --format=gnu .)
(cd good && seed good-gzip 01 --format=ustar .)
(cd good && seed good-pax 00 --format=pax --pax-option=delete=atime,delete=ctime .)

mkdir -p special/dev special/bin special/tmp special/var/mail
mknod special/dev/sda b 8 0
mknod special/dev/mem c 1 1
printf suid >special/bin/su
chmod 4755 special/bin/su
chmod 2755 special/var/mail
chmod 1777 special/tmp
(cd special && seed special-gnu 00 --format=gnu .)
(cd special && seed special-pax 01 --format=pax --pax-option=delete=atime,delete=ctime .)

mkdir -p long
deep=long/$(printf 'd%.0s' {1..60})/$(printf 'e%.0s' {1..60})
mkdir -p "$deep"
printf x >"$deep/file"
ln -s "../$(printf 'f%.0s' {1..120})" "$deep/link"
(cd long && seed long-gnu 00 --format=gnu .)
(cd long && seed long-pax 00 --format=pax --pax-option=delete=atime,delete=ctime .)

mkdir -p sparse
truncate -s 300K sparse/holes
printf end >>sparse/holes
(cd sparse && seed sparse-gnu 00 --format=gnu --sparse .)
(cd sparse && seed sparse-pax 00 --format=pax --pax-option=delete=atime,delete=ctime --sparse .)

# Members over and through the planted symlinks (form bit 1): files over `p` and `P`
# and a hard link to `p`; a file through `s`, a directory through `S`.
mkdir -p planted/s planted/S/y
printf evil >planted/s/x
printf evil >planted/p
printf evil >planted/P
ln planted/p planted/h
(cd planted && seed planted-over 02 --format=gnu p P h)
(cd planted && seed planted-through 03 --format=ustar s/x)
(cd planted && seed planted-through-absolute 02 --format=gnu S/y)

# Names tar would not make by itself: `..` and absolute ones.
mkdir -p hostile/a
printf x >hostile/a/x
(cd hostile && seed hostile-dotdot 00 --format=gnu --absolute-names \
    --transform='s,^a/x,a/../../x,' a/x)
(cd hostile && seed hostile-absolute 00 --format=gnu --absolute-names \
    --transform='s,^a/x,/tmp/x,' a/x)
ls -l "$out" >&2
