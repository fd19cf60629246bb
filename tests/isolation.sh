#!/usr/bin/env bash
# Tenant isolation, tried as a tenant would: from inside real instances on a CoaL, through
# `zlogin` (the instance's own namespaces, uid map, capabilities, seccomp filter and
# cgroup). Every attack below must fail, and everything a tenant needs must still work.
#
# Must fail:
#   - connecting to any port the host listens on (every control-plane port `coal status`
#     lists, and every other), on any of the host's addresses, but CNS's DNS (their
#     resolver);
#   - mknod of the host's root block device and reading it;
#   - a write under /proc/sys (drop_caches, core_pattern);
#   - mounting proc, sysfs or tmpfs;
#   - seeing a host process in ps;
#   - loading a kernel module;
#   - a packet sent with another instance's IP or MAC reaching a third instance;
#   - the agent writing the host's files through an `etc` symlink planted in the
#     instance, across a reboot;
#   - raising its own memory or pids limit.
# Must still work: pid 1, httpd, ping of the gateway and of another instance, and
# `triton instance` stop, start, reboot, snapshot and resize.
#
# With a CoaL up in $COAL_DIR (tests/coal-e2e.sh runs this on its own CoaL), that one is
# used; otherwise one is brought up here and taken down at the end.
set -euo pipefail
TRITON_TOOL=isolation
. "$(dirname "$0")/suite.sh"
probe_dirs=()
suite_cleanup() { local d; for d in "${probe_dirs[@]}"; do rm -rf "$d"; done; }
coal_for_suite
coal_tool zlogin "beside cn-agent"

# Runs a shell command inside instance $1 and prints its exit status as the last line
# ("rc=N"): zlogin itself must work for the answer to count.
inside_rc() {
    local out
    out=$(zl "$1" /bin/sh -c "( $2 ) >/dev/null 2>&1; echo rc=\$?") || { echo 99; return 0; }
    case $out in *rc=*) echo "${out##*rc=}" ;; *) echo 99 ;; esac
}
# A command that must fail inside instance $2 (zlogin working, the command not).
must_fail() { # what, uuid, command
    local rc
    rc=$(inside_rc "$2" "$3")
    if [ "$rc" = 99 ] || [ -z "$rc" ]; then
        bad "$1 (zlogin itself failed)"
    elif [ "$rc" = 0 ]; then
        bad "$1 (it succeeded)"
    else
        ok "$1 (exit $rc)"
    fi
}
must_work() { # what, uuid, command
    local rc
    rc=$(inside_rc "$2" "$3")
    if [ "$rc" = 0 ]; then ok "$1"; else bad "$1 (exit ${rc:-?})"; fi
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# --- three instances on the external network ---------------------------------------------
declare -A uuid ip
for n in a b c; do
    name="iso-$n-$$"
    step "triton instance create -w -n $name base-64 g1-small"
    triton instance create -w -n "$name" base-64 g1-small >/dev/null
    instances+=("$name")
    uuid[$n]=$(triton instance get -j "$name" | json_field id)
    ip[$n]=$(triton instance ip "$name")
done
A=${uuid[a]} B=${uuid[b]} C=${uuid[c]}

answers() { curl -fsS --max-time 5 "http://$1/" 2>/dev/null | grep -q "hello from"; }
wait_answers() { local i; for i in $(seq 1 40); do answers "$1" && return 0; sleep 0.5; done; return 1; }

# --- what must still work ------------------------------------------------------------------
check "zlogin runs a command in the instance as its root (id -u = 0)" \
    test "$(zl "$A" id -u)" = 0
init_pid=$(zl "$A" cat /proc/1/status | awk '/^Name:/ {print $2}')
check "the image's init is pid 1 inside ($init_pid)" test "$init_pid" = init
cg_procs=$(ls /sys/fs/cgroup/pids/triton-coal/"$A"/cgroup.procs /sys/fs/cgroup/triton-coal/"$A"/cgroup.procs 2>/dev/null | head -1 || true)
host_uids=$(for p in $(cat "$cg_procs" 2>/dev/null); do
    awk '/^Uid:/ {print $2}' "/proc/$p/status" 2>/dev/null || true
done | sort -un | tr '\n' ' ')
all_unprivileged() { [ -n "$host_uids" ] && for u in $host_uids; do [ "$u" -ge 65536 ] || return 1; done; }
check "on the host, every process of the instance runs as an unprivileged uid ($host_uids)" \
    all_unprivileged
check "the instance's httpd answers on its IP" wait_answers "${ip[a]}"
gateway=$(zl "$A" ip route | awk '/^default/ {print $3; exit}')
must_work "ping of the gateway ($gateway) from inside" "$A" "ping -c 1 -W 3 $gateway"
must_work "ping of another instance (${ip[b]}) from inside" "$A" "ping -c 1 -W 3 ${ip[b]}"
must_work "a TCP connection to another instance's httpd from inside (nc works)" "$A" \
    "echo 'GET / HTTP/1.0' | nc -w 3 ${ip[b]} 80 | grep -q 'hello from'"

# --- the control plane's ports -------------------------------------------------------------
host_addrs=$(ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -v '^127\.' | sort -u || true)
host_ports=$(ss -ltnH | awk '{print $4}' | sed 's/.*://' | sort -u || true)
status_ports=$(scripts/coal status 2>/dev/null | grep -oE '[0-9.]+:[0-9]+' | sed 's/.*://' | sort -u || true)
missing=$(comm -23 <(echo "$status_ports") <(echo "$host_ports") | tr '\n' ' ' || true)
check "every port coal status lists ($(echo $status_ports)) is among the host's listening ports tried (${missing:-none missing})" \
    test -n "$status_ports" -a -z "$missing"
check "the host itself reaches the control plane (Moray answers on its admin address)" \
    timeout 3 bash -c '</dev/tcp/10.99.99.7/2020'
# CNS's DNS ($CNS_ADDR) is the one host port tenants may reach, their resolver
# (docs/security.md); tests/cns.sh checks it answers from inside.
tries=""
for a in $host_addrs; do for p in $host_ports; do
    [ "$a:$p" = "${CNS_ADDR:-}" ] || tries+="$a:$p "
done; done
count=$(echo "$tries" | wc -w)
open=$(zl "$A" /bin/sh -c "for t in $tries; do
        ( nc -w 2 \${t%:*} \${t#*:} </dev/null >/dev/null 2>&1 && echo \$t ) &
    done; wait" | tr '\n' ' ')
check "none of the host's $count address:port pairs (every listening TCP port on $(echo $host_addrs)) is reachable from inside (open: ${open:-none})" \
    test -z "$open"

# --- devices, /proc, mounts, processes, modules --------------------------------------------
root_dev=$(findmnt -no SOURCE / | head -1)
if [ -b "$root_dev" ]; then
    maj=$((16#$(stat -c %t "$root_dev"))) min=$((16#$(stat -c %T "$root_dev")))
else
    read -r maj min < <(lsblk -dno MAJ:MIN "$(lsblk -no PKNAME "$root_dev" 2>/dev/null | head -1)" | tr ':' ' ')
fi
must_fail "mknod of the host's root disk ($root_dev, $maj:$min) and reading it" "$A" \
    "mknod /root-disk b $maj $min && head -c 512 /root-disk | wc -c | grep -qx 512"
must_fail "a write to /proc/sys/vm/drop_caches" "$A" "echo 3 > /proc/sys/vm/drop_caches"
core_before=$(cat /proc/sys/kernel/core_pattern)
must_fail "a write to /proc/sys/kernel/core_pattern" "$A" "echo '|/bin/sh' > /proc/sys/kernel/core_pattern"
check "the host's core_pattern is unchanged" test "$(cat /proc/sys/kernel/core_pattern)" = "$core_before"
zl "$A" mkdir -p /mnt >/dev/null 2>&1 || true
must_fail "mount -t proc" "$A" "mount -t proc proc /mnt"
must_fail "mount -t sysfs" "$A" "mount -t sysfs sysfs /mnt"
must_fail "mount -t tmpfs over /etc" "$A" "mount -t tmpfs tmpfs /etc"
must_fail "mount -t cgroup (to reach the limits)" "$A" "mount -t cgroup -o memory cgroup /mnt"
procs=$(zl "$A" ps -o comm | tail -n +2 | sort -u | tr '\n' ' ')
check "ps inside shows only the instance's processes ($procs)" \
    bash -c "! echo '$procs' | grep -Eqw 'cn-agent|moray|postgres|etcd|vmapi|systemd|sshd'"
check "the host's cn-agent is running (so the ps check above could fail)" pgrep -x cn-agent
zl "$A" /bin/sh -c "head -c 4096 /dev/urandom > /tmp/evil.ko" >/dev/null 2>&1 || true
mod_err=$(zl "$A" /bin/sh -c "insmod /tmp/evil.ko 2>&1; true")
refused_not_permitted() { grep -qi 'not permitted' <<<"$mod_err"; }
check "insmod is refused as not permitted, not merely as a bad module ($mod_err)" refused_not_permitted

# --- cgroup limits --------------------------------------------------------------------------
cg_mem=$(ls -d /sys/fs/cgroup/memory/triton-coal/"$A" 2>/dev/null || ls -d /sys/fs/cgroup/triton-coal/"$A")
mem_file=$cg_mem/memory.limit_in_bytes; [ -f "$mem_file" ] || mem_file=$cg_mem/memory.max
mem_before=$(cat "$mem_file")
must_fail "raising its memory limit from inside" "$A" \
    "for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do echo 999999999999 > \$f && exit 0; done; exit 1"
must_fail "raising its pids limit from inside" "$A" \
    "for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do echo max > \$f && exit 0; done; exit 1"
check "the memory limit seen on the host is unchanged ($mem_before)" test "$(cat "$mem_file")" = "$mem_before"

# --- spoofing -------------------------------------------------------------------------------
# B's root owns B's network stack (as a zone's root owns an exclusive IP stack), so it can
# take A's IP or MAC; the port guard on the host's side of B's veth must keep such frames
# off the bridge. C watches with a raw ICMP socket (an operator's view of C's namespace).
nsc="coal-$C"
first_nic() { zl "$1" ip -o link show | awk -F': ' '$2 != "lo" {sub(/@.*/, "", $2); print $2; exit}'; }
nic_b=$(first_nic "$B")
mac_a=$(zl "$A" cat "/sys/class/net/$(first_nic "$A")/address")
mac_b=$(zl "$B" cat "/sys/class/net/$nic_b/address")
echo_seen_at_c() { # source IP, then a command B runs inside: does C see an echo request from that source?
    local src=$1 cmd=$2 got listener rc
    got=$(mktemp)
    ip netns exec "$nsc" timeout 8 python3 -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1)
end = time.time() + 6
while time.time() < end:
    try:
        d, a = s.recvfrom(4096)
    except socket.timeout:
        continue
    if d[20] == 8 and socket.inet_ntoa(d[12:16]) == '$src':
        print('seen')
        break" >"$got" &
    listener=$!
    sleep 0.5
    zl "$B" /bin/sh -c "$cmd" >/dev/null 2>&1 || true
    wait "$listener" || true
    grep -q seen "$got" && rc=0 || rc=1
    rm -f "$got"
    return $rc
}
not_seen_at_c() { ! echo_seen_at_c "$@"; }
check "C sees B's echo requests from B's own IP (the watcher works)" \
    echo_seen_at_c "${ip[b]}" "ping -c 3 -W 1 ${ip[c]}"
must_work "B's root takes A's IP (${ip[a]}) on its own stack" "$B" "ip addr add ${ip[a]}/32 dev $nic_b"
check "echo requests B sends with A's IP do not reach C" \
    not_seen_at_c "${ip[a]}" "ping -c 3 -W 1 -I ${ip[a]} ${ip[c]}"
zl "$B" ip addr del "${ip[a]}/32" dev "$nic_b" >/dev/null 2>&1 || true
must_work "B's root takes A's MAC ($mac_a)" "$B" "ip link set dev $nic_b address $mac_a"
check "with A's MAC, B's echo requests do not reach C" \
    not_seen_at_c "${ip[b]}" "ip neigh flush all; ping -c 3 -W 1 ${ip[c]}"
zl "$B" ip link set dev "$nic_b" address "$mac_b" >/dev/null 2>&1 || true
check "with its own MAC back, B reaches C again" \
    echo_seen_at_c "${ip[b]}" "ip neigh flush all; ping -c 3 -W 1 ${ip[c]}"

# --- a planted etc symlink across a reboot ---------------------------------------------------
probe=$(mktemp -d /var/tmp/iso-probe.XXXXXX)
probe_dirs+=("$probe")
for f in hosts resolv.conf hostname; do echo "host's own $f" > "$probe/$f"; done
before=$(cd "$probe" && ls -la --time-style=full-iso && cat ./*)
must_work "planting /etc -> $probe inside A" "$A" "mv /etc /etc.orig && ln -s $probe /etc"
triton instance reboot -w "${instances[0]}" >/dev/null
after=$(cd "$probe" && ls -la --time-style=full-iso && cat ./*)
check "after a reboot, the host's $probe is untouched" test "$before" = "$after"
check "A still runs and answers after the reboot" wait_answers "${ip[a]}"
# The file is read whole first: `zl ... | grep -q` under pipefail fails when grep stops
# reading before zlogin has written everything (SIGPIPE), whatever the file says.
hosts_names_ip() {
    local hosts
    hosts=$(zl "$A" cat /etc/hosts 2>&1) || { echo "zlogin cat /etc/hosts failed: $hosts" >&2; return 1; }
    grep -qF "${ip[a]}" <<<"$hosts" || { echo "A's /etc/hosts: $hosts" >&2; return 1; }
}
check "A's /etc/hosts is written inside the instance (names its IP)" hosts_names_ip

# --- triton instance lifecycle with the sandbox ------------------------------------------------
name=${instances[1]}
triton instance stop -w "$name" >/dev/null
check "stop works" test "$(triton instance get -j "$name" | json_field state)" = stopped
triton instance start -w "$name" >/dev/null
check "start works, and it answers" wait_answers "${ip[b]}"
triton instance snapshot create -w -n snap1 "$name" >/dev/null
check "snapshot create works" bash -c "triton instance snapshot list -H -o name $name | grep -qx snap1"
triton instance resize -w "$name" g1-medium >/dev/null
check "resize works (1024 MiB)" test "$(triton instance get -j "$name" | json_field memory)" = 1024
check "it still answers after resize" wait_answers "${ip[b]}"
