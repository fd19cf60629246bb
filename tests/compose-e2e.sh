#!/usr/bin/env bash
# End to end, the docker-compose topology without a Docker engine: every service of
# deploy/docker-compose.yml as a process in its own network namespace on one bridge,
# reaching the others by their compose service names (each namespace's /etc/hosts), with
# the environment and command the compose file gives its container:
#
#   * a Triton-rs service runs what its container runs: images/Dockerfile's CMD (the zone
#     image's `start` script, from the image `sdcadm images build` makes), in a mount
#     namespace where /opt/triton is the image's and /var/lib/triton is the service's own;
#   * etcd runs the compose `command` with Debian's etcd (the compose file names the
#     upstream image), the Manatee sitters run their PostgreSQL from Debian's
#     postgresql-15 (as the image installs it), dropping to the postgres user as in CoaL.
#
# Services start in depends_on order, each waited for until healthy (`sdcadm health`).
# Then, from the host: every service healthy at its address, CloudAPI's /--ping, the
# simulated compute nodes registered in CNAPI and reachable at the URL CNAPI has for them
# from another container; `sdcadm seed` seeds the deployment; the `triton` CLI, as a
# tenant, provisions an instance onto a simulated node, stops, starts and deletes it.
# Everything is removed on exit, and checked to be gone.
#
# Each namespace has its container's fixed address from the compose file's network (every
# service listens there, not on 0.0.0.0), on a bridge with the network's first address as
# Docker's would have; only CloudAPI's TLS port is published on the host in compose.
#
# Not covered: `cn-agent` (the linux backend) is left out. It is `privileged` in compose:
# it makes cgroups, bridges, network namespaces and overlay mounts on its host, named
# with CoaL's prefixes (triton-coal, coal-), which a network namespace does not isolate.
# Nor are the images' Debian userland (the host's is used), restart policies, or the
# one published port (every service is reached at its own address instead, as the host
# reaches a compose network).
#
# Run by scripts/test after tests/coal-e2e.sh (SKIP_COMPOSE_E2E=1 leaves it out). Runs as
# root. Uses its own bridge (tcomp0, the compose network's subnet: 10.97.0.0/24, a /24 is
# required), namespaces (tcomp-<service>) and
# directory ($COMPOSE_E2E_DIR, default /var/tmp/triton-compose-e2e); every service
# listens inside its namespace, so a CoaL on this machine is not disturbed.
set -euo pipefail
TRITON_TOOL=compose-e2e
. "$(dirname "$0")/../scripts/lib.sh"
cd "$TRITON_ROOT"

WORK=${COMPOSE_E2E_DIR:-/var/tmp/triton-compose-e2e}
BRIDGE=tcomp0
NET=10.97.0
NS_PREFIX=tcomp-
# Services of the compose file not run here (see above).
SKIP=(cn-agent)
# How long one service has to become healthy.
HEALTH_TIMEOUT=${COMPOSE_E2E_HEALTH_TIMEOUT:-120}
name="compose-e2e-$$"
failed=1
agent_pid=

[ "$(id -u)" -eq 0 ] || die "runs as root (network namespaces, a bridge, mounts)"
ensure_packages
ensure_triton_cli
ensure_rust
REL="${CARGO_TARGET_DIR:-$TRITON_ROOT/target}/release"
SDCADM=$REL/sdcadm

our_namespaces() { ip netns list | awk '{print $1}' | grep "^$NS_PREFIX" || true; }
any_alive() { local p; for p; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# Stops every process in our namespaces (SIGTERM, then SIGKILL after 15 s), removes the
# namespaces, the bridge, /etc/netns/tcomp-* and $WORK. Also run first, for what a killed
# earlier run left.
teardown() {
    local ns pids=() i
    for ns in $(our_namespaces); do
        mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns")
    done
    if [ -n "$agent_pid" ]; then pids+=("$agent_pid"); agent_pid=; fi
    if [ ${#pids[@]} -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for i in $(seq 1 150); do
            any_alive "${pids[@]}" || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for i in $(seq 1 50); do
            any_alive "${pids[@]}" || break
            sleep 0.1
        done
    fi
    for ns in $(our_namespaces); do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf /etc/netns/"$NS_PREFIX"*
    # /etc/netns itself, when this test made it (and nothing else is in it).
    if [ -e "$WORK/made-etc-netns" ]; then rmdir /etc/netns 2>/dev/null || true; fi
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$WORK"
}

show_logs() {
    local log
    echo "--- compose e2e failed; last lines of every service log:" >&2
    for log in "$WORK"/logs/*.log "$WORK"/svc/*/state/*/postgres.log; do
        [ -f "$log" ] || continue
        echo "=== $log" >&2
        tail -n 15 "$log" >&2 || true
    done
}

cleanup() {
    if [ "$failed" -ne 0 ]; then show_logs; fi
    teardown
}

check() { # what, then a command that must succeed
    local what=$1; shift
    "$@" || die "$what"
    step "ok: $what"
}

if [ -n "$(our_namespaces)" ] || ip link show "$BRIDGE" >/dev/null 2>&1 || [ -e "$WORK" ]; then
    step "removing what an earlier run left ($NS_PREFIX* namespaces, $BRIDGE, $WORK)"
    teardown
fi
if ip route show | grep -v "dev $BRIDGE" | grep -q "^$NET\."; then
    die "$NET.0/24 is routed on this machine already; this test needs it for its bridge"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binaries and images ------------------------------------------------------------------
step "building sdcadm (cargo build --release -p sdcadm --bin sdcadm)"
cargo build --release --quiet -p sdcadm --bin sdcadm
args=()
bins=()
while read -r crate bin; do args+=(-p "$crate" --bin "$bin"); bins+=("$bin"); done \
    < <("$SDCADM" coal binaries)
step "building the release binaries ${bins[*]} (the first build takes many minutes)"
cargo build --release "${args[@]}"

mkdir -p "$WORK"/{logs,images,ssh}
chmod 755 "$WORK"

# --- the compose file, read into one directory per service ---------------------------------
# svc/<name>/env      the container's environment, NUL-separated KEY=VALUE
# svc/<name>/cmd      its command, NUL-separated
# svc/<name>/image    "<SERVICE>-<VERSION>" of a built service's image, else absent
# plan                "<name> <address>" per line, in start order (the compose addresses)
step "reading deploy/docker-compose.yml"
python3 - "$WORK" "$NET" "${SKIP[*]}" <<'EOF'
import ipaddress, json, os, sys
work, net, skip = sys.argv[1], sys.argv[2], sys.argv[3].split()
text = open("deploy/docker-compose.yml").read()
doc = json.loads("\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
services = doc["services"]
# The one network, its subnet: this test's bridge.
(netname, network), = doc["networks"].items()
subnet = ipaddress.ip_network(network["ipam"]["config"][0]["subnet"])
if subnet != ipaddress.ip_network(f"{net}.0/24"):
    sys.exit(f"the compose network is {subnet}; this test runs it on {net}.0/24 (set NET)")
# What a built image runs: images/Dockerfile's CMD, with its ENV.
cmd = None
for line in open("images/Dockerfile"):
    if line.startswith("CMD "):
        cmd = json.loads(line[4:])
if not cmd:
    sys.exit("images/Dockerfile has no CMD [...]")
order, seen = [], set()
def visit(n, path=()):
    if n in path:
        sys.exit(f"depends_on cycle: {' -> '.join(path + (n,))}")
    if n in seen:
        return
    for d in services[n].get("depends_on", []):
        if d not in services:
            sys.exit(f"{n} depends on {d}, which is not a service")
        visit(d, path + (n,))
    seen.add(n)
    order.append(n)
for n in sorted(services):
    visit(n)
plan = []
for n in (s for s in order if s not in skip):
    c = services[n]
    if c.get("privileged"):
        sys.exit(f"{n} is privileged; this test cannot give it that (add it to SKIP and say why)")
    d = os.path.join(work, "svc", n)
    os.makedirs(os.path.join(d, "state"))
    os.chmod(os.path.join(d, "state"), 0o755)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    if "build" in c:
        a = c["build"]["args"]
        env["TRITON_SERVICE"] = a["SERVICE"]  # images/Dockerfile: ENV TRITON_SERVICE=${SERVICE}
        open(os.path.join(d, "image"), "w").write(f"{a['SERVICE']}-{a['VERSION']}")
        argv = c.get("command", cmd)
    else:
        argv = c["command"]
    env.update(c.get("environment", {}))
    open(os.path.join(d, "env"), "w").write("".join(f"{k}={v}\0" for k, v in env.items()))
    open(os.path.join(d, "cmd"), "w").write("".join(f"{a}\0" for a in argv))
    address = c["networks"][netname]["ipv4_address"]
    if ipaddress.ip_address(address) not in subnet:
        sys.exit(f"{n}: address {address} is not in {subnet}")
    plan.append(f"{n} {address}")
open(os.path.join(work, "plan"), "w").write("\n".join(plan) + "\n")
EOF
declare -A IP
order=()
while read -r svc addr; do IP[$svc]=$addr; order+=("$svc"); done < "$WORK/plan"
step "services in start order: ${order[*]} (left out: ${SKIP[*]})"

images=()
for svc in "${order[@]}"; do
    [ -f "$WORK/svc/$svc/image" ] && images+=("$svc")
done
step "sdcadm images build ${images[*]} (the images the containers are built from)"
"$SDCADM" images build --bin-dir "$REL" --out "$WORK/images" "${images[@]}"
for svc in "${images[@]}"; do
    mkdir -p "$WORK/svc/$svc/image-root"
    # As images/Dockerfile does: only opt/triton and etc/systemd of the zone's root.
    tar -xzf "$WORK/images/$(cat "$WORK/svc/$svc/image").tar.gz" -C "$WORK/svc/$svc/image-root" \
        opt/triton etc/systemd
done

# What runs inside each namespace, before the service's own command: a mount namespace of
# its own (unshare), where /var/lib and /opt are overlays whose writes land in the
# service's directory, /var/lib/triton is the service's state directory and /opt/triton
# its image's; then the command with only the container's environment.
cat > "$WORK/enter" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
dir=$1; shift
overlay() {
    local o="$dir/overlay/${1//\//_}"
    mkdir -p "$o/upper" "$o/work"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$o/upper,workdir=$o/work" "$1"
}
overlay /var/lib
mkdir -p /var/lib/triton
mount --bind "$dir/state" /var/lib/triton
if [ -d "$dir/image-root/opt/triton" ]; then
    overlay /opt
    mkdir -p /opt/triton
    mount --bind "$dir/image-root/opt/triton" /opt/triton
fi
mapfile -d '' env < "$dir/env"
mapfile -d '' cmd < "$dir/cmd"
cd /
exec env -i "${env[@]}" "${cmd[@]}"
EOF
chmod 755 "$WORK/enter"

# --- the network: one bridge, a namespace per service --------------------------------------
step "bridge $BRIDGE ($NET.1/24) and a namespace per service"
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
[ -d /etc/netns ] || { mkdir /etc/netns; touch "$WORK/made-etc-netns"; }
hosts="127.0.0.1 localhost"$'\n'
for svc in "${order[@]}"; do hosts+="${IP[$svc]} $svc"$'\n'; done
i=0
for svc in "${order[@]}"; do
    ns=$NS_PREFIX$svc
    ip netns add "$ns"
    ip link add "tcv$i" type veth peer name eth0 netns "$ns"
    ip link set "tcv$i" master "$BRIDGE" up
    ip -n "$ns" addr add "${IP[$svc]}/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$NET.1"
    mkdir -p "/etc/netns/$ns"
    printf '%s' "$hosts" > "/etc/netns/$ns/hosts"
    i=$((i + 1))
done

# --- start in depends_on order, each healthy before the next -------------------------------
healthy() { "$SDCADM" health "$1" --host "${IP[$1]}" >/dev/null 2>&1; }

start() {
    local svc=$1 log="$WORK/logs/$1.log" pid t0 why
    step "$svc: starting at ${IP[$svc]}: $(tr '\0' ' ' < "$WORK/svc/$svc/cmd")"
    setsid ip netns exec "$NS_PREFIX$svc" unshare --mount --propagation private \
        "$WORK/enter" "$WORK/svc/$svc" >>"$log" 2>&1 </dev/null &
    pid=$!
    t0=$(date +%s)
    while ! healthy "$svc"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            why="exited during start-up"
        elif [ $(($(date +%s) - t0)) -ge "$HEALTH_TIMEOUT" ]; then
            why="not healthy after ${HEALTH_TIMEOUT}s ($("$SDCADM" health "$svc" --host "${IP[$svc]}" 2>&1 || true))"
        else
            sleep 0.5
            continue
        fi
        echo "--- last lines of $log:" >&2
        tail -n 20 "$log" >&2 || true
        die "$svc: $why"
    done
    step "$svc: healthy at ${IP[$svc]} ($(($(date +%s) - t0))s)"
}

for svc in "${order[@]}"; do start "$svc"; done

# --- checks from the host -------------------------------------------------------------------
all_healthy() {
    local svc bad=0
    for svc in "${order[@]}"; do
        "$SDCADM" health "$svc" --host "${IP[$svc]}" >&2 || bad=1
    done
    return "$bad"
}
check "every service is healthy at its namespace's address" all_healthy

# A sitter's `ip` is its service name, which becomes PostgreSQL's listen_addresses: it
# must listen on the address that name has for the others.
sitters_listen() {
    local svc port bad=0
    for svc in "${order[@]}"; do
        port=$(tr '\0' '\n' < "$WORK/svc/$svc/env" | sed -n 's/^MANATEE_SITTER_PG_PORT=//p')
        [ -n "$port" ] || continue
        ip netns exec "${NS_PREFIX}moray" "$(pg_bindir)/pg_isready" -h "$svc" -p "$port" >&2 || bad=1
    done
    return "$bad"
}
check "every sitter's PostgreSQL answers at its service name, from Moray's namespace" \
    sitters_listen

cloudapi=${IP[cloudapi]}
check "CloudAPI answers GET /--ping over TLS at $cloudapi:8443 (its self-signed certificate)" \
    bash -c "curl -fsSk --max-time 5 https://$cloudapi:8443/--ping | grep -q pong"
check "CloudAPI serves no plain HTTP at $cloudapi:8080" \
    bash -c "! curl -fsS --max-time 3 http://$cloudapi:8080/--ping >/dev/null 2>&1"

dc_hosts=()
for svc in "${order[@]}"; do dc_hosts+=(--host "$svc=${IP[$svc]}"); done
servers() { "$SDCADM" servers "${dc_hosts[@]}"; }
sim_nodes=$(python3 -c "import json,sys; print(json.loads(sys.argv[1]))" \
    "$(tr '\0' '\n' < "$WORK/svc/cn-agent-sim/env" | sed -n 's/^CN_AGENT_SIM__NODES=//p')")
registered() {
    [ "$(servers | awk 'NR > 1 && $3 == "running" && $4 == "true"' | wc -l)" -ge "$sim_nodes" ]
}
wait_registered() {
    local i
    for i in $(seq 1 60); do registered && return 0; sleep 1; done
    servers >&2 || true
    return 1
}
check "the $sim_nodes simulated compute nodes are registered in CNAPI, running and set up" \
    wait_registered
servers >&2
# Each node's agent called at the URL CNAPI has for it, from CNAPI's own namespace (as from
# its container), answering as that node: what CNAPI and VMAPI do on every provision.
agents_reachable() {
    ip netns exec "${NS_PREFIX}cnapi" "$SDCADM" servers --api-host cnapi --agents >&2
}
check "every compute node's agent answers as itself at its URL in CNAPI, from CNAPI's namespace" \
    agents_reachable

# --- seeding and a tenant ---------------------------------------------------------------------
# The tenant's home: its key in ~/.ssh (node-triton looks there and in the agent), and
# no ~/.triton profile of this machine's user.
home=$WORK/home
mkdir -p "$home/.ssh"
chmod 700 "$home/.ssh"
ssh-keygen -q -t ecdsa -N '' -C "$name" -f "$home/.ssh/id_ecdsa"
step "sdcadm seed (admin account and key, packages, base image; networks checked)"
"$SDCADM" seed --key "$home/.ssh/id_ecdsa.pub" "${dc_hosts[@]}"
ssh-agent -D -a "$WORK/ssh/agent.sock" >"$WORK/logs/ssh-agent.log" 2>&1 &
agent_pid=$!
for i in $(seq 1 50); do [ -S "$WORK/ssh/agent.sock" ] && break; sleep 0.1; done
export SSH_AUTH_SOCK=$WORK/ssh/agent.sock HOME=$home
ssh-add -q "$home/.ssh/id_ecdsa"
fingerprint=$(ssh-keygen -l -E md5 -f "$home/.ssh/id_ecdsa.pub" | awk '{print $2}')
unset TRITON_PROFILE
export TRITON_URL=https://$cloudapi:8443 TRITON_ACCOUNT=admin TRITON_KEY_ID=${fingerprint#MD5:}
export SDC_URL=$TRITON_URL SDC_ACCOUNT=$TRITON_ACCOUNT SDC_KEY_ID=$TRITON_KEY_ID
export TRITON_TLS_INSECURE=1 SDC_TLS_INSECURE=1

check "triton account get names the admin account" \
    bash -c 'triton account get | grep -q "^login: admin$"'
check "triton package list shows g1-small" \
    bash -c 'triton package list -H -o name | grep -qx g1-small'
check "triton image list shows base-64" \
    bash -c 'triton image list -H -o name | grep -qx base-64'

field() {
    triton instance get -j "$name" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}
step "triton instance create -w -n $name base-64 g1-small"
triton instance create -w -n "$name" base-64 g1-small
check "the instance is running" test "$(field state)" = running
server=$(field compute_node)
on_sim() { servers | awk -v u="$server" 'NR > 1 && $2 == u {print $1}' | grep -q '^sim'; }
check "it runs on a simulated compute node ($server)" on_sim
triton instance stop -w "$name"
check "stopped after stop -w" test "$(field state)" = stopped
triton instance start -w "$name"
check "running after start -w" test "$(field state)" = running
triton instance delete -f -w "$name"
check "the instance is gone from the list" \
    bash -c "! triton instance list -H -o name | grep -qx '$name'"

# --- teardown, and nothing left ---------------------------------------------------------------
step "stopping every service and removing the namespaces, the bridge and $WORK"
mapfile -t pids < <(for ns in $(our_namespaces); do ip netns pids "$ns"; done)
made_etc_netns=0
[ -e "$WORK/made-etc-netns" ] && made_etc_netns=1
teardown
none_alive() { ! any_alive "$@"; }
check "none of the ${#pids[@]} processes of the test is left" none_alive "${pids[@]}"
check "no $NS_PREFIX* namespace is left" test -z "$(our_namespaces)"
check "no /etc/netns/$NS_PREFIX* is left" bash -c "! compgen -G '/etc/netns/$NS_PREFIX*' >/dev/null"
if [ "$made_etc_netns" = 1 ]; then check "/etc/netns, which the test made, is removed" test ! -e /etc/netns; fi
check "the bridge $BRIDGE is gone" bash -c "! ip link show $BRIDGE >/dev/null 2>&1"
check "no tcv* veth is left" bash -c "! ip -o link show | grep -q ': tcv[0-9]'"
check "$WORK is removed" test ! -e "$WORK"
failed=0
step "compose end-to-end passed"
