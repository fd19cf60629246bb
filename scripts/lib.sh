# Shared helpers for the scripts in this folder. Sourced, not run.

# The repository's top folder.
TRITON_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TRITON_ROOT

# Progress lines: "[coal 12s] starting moray" on stderr, so stdout stays clean for `env`.
_TRITON_T0=$(date +%s)
step() {
    local now; now=$(date +%s)
    printf '[%s %3ss] %s\n' "${TRITON_TOOL:-triton}" "$((now - _TRITON_T0))" "$*" >&2
}
die() {
    printf '%s: error: %s\n' "${TRITON_TOOL:-triton}" "$*" >&2
    exit 1
}

# System packages every command needs on a fresh Debian 12 machine. Installed only when
# missing, so a second run costs nothing.
# xfsprogs: instances' disks (cn-agent's linux backend: mkfs.xfs, xfs_growfs).
# nftables: cn-agent's anti-spoofing and tenant-network rules (`nft`).
# knot, nsd, dnsutils, dnsperf: CNS's tests and bench (a real secondary, `dig`, the NSD
# baseline; docs/cns.md).
# prometheus: `promtool check metrics` reads CMon's text format in its tests.
TRITON_PACKAGES=(postgresql etcd-server etcd-client iproute2 procps psmisc util-linux busybox-static openssh-client openssl xfsprogs nftables knot nsd dnsutils dnsperf prometheus)
# booter (dhcpd): its tests' clients (isc-dhcp-client, tftp-hpa, isc-dhcp-relay), the iPXE
# binaries it serves (ipxe), and its bench's load and baseline (kea-admin has perfdhcp;
# kea-dhcp4-server; docs/booter.md).
TRITON_PACKAGES+=(isc-dhcp-client tftp-hpa isc-dhcp-relay ipxe kea-admin kea-dhcp4-server)

ensure_packages() {
    local missing=()
    for p in "${TRITON_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}; run as root or install them"
    step "installing ${missing[*]} (apt-get)"
    if [ -z "${_TRITON_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        _TRITON_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
    # Debian's postgresql package starts a cluster of its own on 5432; our PostgreSQL
    # instances run from their own directories and ports, so that one is not needed.
    # Likewise knot's and nsd's services would take port 53 on every address, which CNS
    # needs: the tests and the bench run their own from temp dirs.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now knot nsd >/dev/null 2>&1 || true
        # Kea's and dhcrelay's services would answer DHCP beside dhcpd: its bench runs Kea
        # itself.
        systemctl disable --now kea-dhcp4-server isc-dhcp-relay >/dev/null 2>&1 || true
    fi
}

# The `triton` CLI (npm package triton, version 7): the tenants' client, used by the tests.
ensure_triton_cli() {
    if command -v triton >/dev/null && triton --version 2>/dev/null | grep -q '^Triton CLI 7\.'; then
        return 0
    fi
    if ! command -v npm >/dev/null; then
        TRITON_PACKAGES+=(nodejs npm)
        ensure_packages
    fi
    step "installing the triton CLI (npm install -g triton@7)"
    npm install -g --no-audit --no-fund --loglevel=error triton@7 >&2 \
        || die "npm install -g triton@7 failed"
}

# cargo-fuzz (the fuzz targets in scripts/test, docs/fuzzing.md), and the C++ compiler
# that libfuzzer-sys builds libFuzzer with. The sanitizer runtime comes with Rust's
# x86_64-unknown-linux-gnu standard library; RUSTC_BOOTSTRAP=1 lets stable use it.
ensure_cargo_fuzz() {
    ensure_packages g++
    if cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.'; then
        return 0
    fi
    step "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install --quiet --locked --version '^0.13' cargo-fuzz >&2 \
        || die "cargo install cargo-fuzz failed"
}

ensure_rust() {
    command -v cargo >/dev/null || die "cargo is not installed (rustup, Rust 1.95 or newer)"
}

# PostgreSQL's binaries: the newest /usr/lib/postgresql/<v>/bin.
pg_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$d" ] || die "PostgreSQL binaries not found under /usr/lib/postgresql"
    echo "$d"
}
