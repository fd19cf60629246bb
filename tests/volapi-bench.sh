#!/usr/bin/env bash
# `scripts/bench volapi`: a volume's speed through its mount against the server's local
# directory (the floor), in the same run, on the same disk:
#   - the NFS server (`nfsserver`) in one network namespace, serving a directory on this
#     machine's disk; `volmount` (the FUSE NFSv3 client cn-agent starts for an instance)
#     joined to another namespace, the two namespaces linked by a veth pair (MTU 1500);
#   - the same workload on the mount and on the server's directory: sequential write of
#     BENCH_MIB MiB (1 MiB writes, then fsync), sequential read of it with the page cache
#     dropped first, and BENCH_FILES small files (create + write 4 KiB + close) in one
#     directory; each BENCH_RUNS times, the median and the range printed.
#   - With a CoaL up in $COAL_DIR (and VolAPI in it): the time from `triton volume
#     create -w` to ready, BENCH_VOLUMES (5) volumes one after the other, then deleted;
#     the median, min and max. It includes the CLI's start, CloudAPI and VolAPI's
#     create, VMAPI's provision of the storage instance on a compute node, its boot, the
#     updater seeing it running, and the CLI's polling of GetVolume (once a second).
# Excluded from the netns figures: the fabric overlay (VXLAN between two nodes) and the
# instance's own namespaces and idmap; they are in the CoaL suite (tests/volumes.sh).
# Root: network namespaces, FUSE and drop_caches.
set -euo pipefail
TRITON_TOOL=bench
. "$(dirname "$0")/../scripts/lib.sh"
cd "$TRITON_ROOT"
[ "$(id -u)" -eq 0 ] || die "the volapi bench needs root (network namespaces, FUSE, drop_caches)"
[ -e /dev/fuse ] || die "/dev/fuse is missing: the volume client is a FUSE filesystem"

MIB=${BENCH_MIB:-1024}
FILES=${BENCH_FILES:-2000}
RUNS=${BENCH_RUNS:-3}
VOLUMES=${BENCH_VOLUMES:-5}
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
step "building nfsserver and volmount (release)"
cargo build --release -p nfsserver -p volmount --quiet
nfsserver=$target/nfsserver
volmount=$target/volmount

work=$(mktemp -d /var/tmp/triton-volbench.XXXXXX)
srv=volbench-srv-$$ cli=volbench-cli-$$
server_pid= client_pid=
cleanup() {
    [ -n "$client_pid" ] && { kill "$client_pid"; wait "$client_pid"; } 2>/dev/null || true
    umount -l "$work/mnt" 2>/dev/null || true
    [ -n "$server_pid" ] && { kill "$server_pid"; wait "$server_pid"; } 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "network namespaces $srv (10.77.$(($$ % 250)).1, nfsserver) and $cli (.2, volmount), one veth pair"
net=10.77.$(($$ % 250))
ip netns add "$srv"
ip netns add "$cli"
ip link add "vbs$$" netns "$srv" type veth peer name "vbc$$" netns "$cli"
ip -n "$srv" addr add "$net.1/24" dev "vbs$$"
ip -n "$cli" addr add "$net.2/24" dev "vbc$$"
for ns in "$srv" "$cli"; do
    ip -n "$ns" link set lo up
done
ip -n "$srv" link set "vbs$$" up
ip -n "$cli" link set "vbc$$" up

mkdir -p "$work/export" "$work/mnt"
ip netns exec "$srv" "$nfsserver" --listen "$net.1:2049" --root "$work/export" \
    2>"$work/nfsserver.log" &
server_pid=$!
for _ in $(seq 1 50); do
    ip netns exec "$cli" bash -c "exec 3<>/dev/tcp/$net.1/2049" 2>/dev/null && break
    sleep 0.1
done
"$volmount" --source "$net.1:/exports/data" --mountpoint "$work/mnt" \
    --netns "/run/netns/$cli" 2>"$work/volmount.log" &
client_pid=$!
for _ in $(seq 1 100); do
    mountpoint -q "$work/mnt" && break
    kill -0 "$client_pid" 2>/dev/null || { cat "$work/volmount.log" >&2; die "volmount exited"; }
    sleep 0.1
done
mountpoint -q "$work/mnt" || { cat "$work/volmount.log" >&2; die "the volume was not mounted"; }
step "mounted $net.1:/exports/data at $work/mnt"
mkdir "$work/mnt/through-mount"
mkdir "$work/export/local"
[ -d "$work/export/through-mount" ] || die "a directory made through the mount is not on the server"

# The workload, the same on both sides: prints "write_mibs read_mibs files_per_s".
workload() { # dir
    python3 - "$1" "$MIB" "$FILES" <<'EOF'
import os, sys, time
d, mib, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = os.urandom(1 << 20)
big = os.path.join(d, "big")
t = time.perf_counter()
fd = os.open(big, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for _ in range(mib):
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]
os.fsync(fd)
os.close(fd)
write = mib / (time.perf_counter() - t)
os.sync()
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3\n")
t = time.perf_counter()
fd = os.open(big, os.O_RDONLY)
got = 0
while True:
    b = os.read(fd, 1 << 20)
    if not b:
        break
    got += len(b)
os.close(fd)
read = got / (1 << 20) / (time.perf_counter() - t)
assert got == mib << 20, f"read {got} bytes of {mib << 20}"
small = os.path.join(d, "small")
os.mkdir(small)
page = b"x" * 4096
t = time.perf_counter()
for i in range(files):
    fd = os.open(os.path.join(small, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, page)
    os.close(fd)
ops = files / (time.perf_counter() - t)
print(f"{write:.1f} {read:.1f} {ops:.0f}")
EOF
}
clear() { rm -rf "$1/big" "$1/small"; }

declare -A results
for run in $(seq 1 "$RUNS"); do
    for side in local mount; do
        if [ "$side" = local ]; then dir=$work/export/local; else dir=$work/mnt/through-mount; fi
        step "run $run/$RUNS, $side: $MIB MiB write+fsync, read (cold), $FILES x 4 KiB files"
        r=$(workload "$dir")
        step "  $r (write MiB/s, read MiB/s, files/s)"
        results[$side]+="$r"$'\n'
        clear "$dir"
    done
done

# median (min-max) of column $2 of $1's lines
stat() {
    python3 -c "
import sys
v = sorted(float(l.split()[$2]) for l in sys.argv[1].splitlines() if l.strip())
m = v[len(v) // 2]
print(f'{m:.0f} ({v[0]:.0f}-{v[-1]:.0f})')" "$1"
}
echo
echo "### VolAPI: a volume through volmount vs the server's local directory"
echo
echo "nfsserver and volmount (release) in two network namespaces over one veth pair;"
echo "$MIB MiB sequential, $FILES small files, median (min-max) of $RUNS runs; $(nproc) CPUs."
echo
echo "| workload | server's local directory (floor) | through the mount | mount / floor |"
echo "|---|---|---|---|"
for col in 0 1 2; do
    name=("sequential write + fsync, MiB/s" "sequential read (cold cache), MiB/s" "create + write 4 KiB + close, files/s")
    l=$(stat "${results[local]}" $col)
    m=$(stat "${results[mount]}" $col)
    ratio=$(python3 -c "print(f'{float(\"${m%% *}\") / max(float(\"${l%% *}\"), 1e-9):.2f}x')")
    echo "| ${name[$col]} | $l | $m | $ratio |"
done

# --- on a CoaL: triton volume create -w to ready --------------------------------------------
export COAL_DIR=${COAL_DIR:-/var/tmp/triton-coal}
if [ -d "$COAL_DIR" ] && scripts/coal status >/dev/null 2>&1; then
    eval "$(scripts/coal env)"
    times=()
    for i in $(seq 1 "$VOLUMES"); do
        name=volbench-$$-$i
        step "triton volume create -n $name -w"
        start=$(date +%s.%N)
        triton volume create -n "$name" -w >/dev/null || die "triton volume create $name failed"
        times+=("$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")")
        step "  ready after ${times[-1]} s"
    done
    for i in $(seq 1 "$VOLUMES"); do
        triton volume delete -y -w "volbench-$$-$i" >/dev/null || true
    done
    summary=$(python3 -c "
import sys
v = sorted(float(x) for x in sys.argv[1:])
print(f'median {v[len(v) // 2]:.1f} s, min {v[0]:.1f} s, max {v[-1]:.1f} s')" "${times[@]}")
    echo
    echo "CoaL ($COAL_DIR): \`triton volume create -w\` to ready, $VOLUMES one after the other:"
    echo "$summary (each: ${times[*]} s)"
else
    echo
    echo "(no CoaL up in $COAL_DIR: the time from triton volume create to ready is not measured)"
fi
