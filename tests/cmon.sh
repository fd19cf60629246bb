#!/usr/bin/env bash
# CMon with Debian's real Prometheus, as a tenant sets it up (docs/cmon.md): the client
# certificate from the real `triton profile cmon-certgen`, Prometheus's `triton_sd_configs`
# pointing at CoaL's CMon, and CNS as Prometheus's resolver (Prometheus reads
# /etc/resolv.conf: it runs in a mount namespace of its own where a bind-mounted
# resolv.conf names CNS, which answers on port 53).
#
# Checks:
#   - a new instance is discovered within one refresh interval and scraped (`up` 1);
#   - `mem_agg_usage` is within 5 % of the instance's cgroup memory (read on the host);
#   - CPU burnt inside for 3 s raises `cpu_user_usage` by at least 1 s, and by no more
#     than the wall time on every core;
#   - 10 MiB sent from the host to nc in the instance raises `net_agg_bytes_in` by at
#     least that;
#   - a deleted instance leaves discovery;
#   - a second account (made with `sdcadm account create`), with its own cmon-certgen
#     certificate in a second job of the same Prometheus, discovers nothing of the first's
#     instance, and CMon answers its scrape of it with 404;
#   - operators are UFDS's `operators` group: the admin (CoaL's seed makes it a member)
#     discovers the instance's compute node on /v1/gz/discover and scrapes its metrics;
#     the second account gets an empty list and 404 until `sdcadm account operator`
#     makes it a member, then sees and scrapes the node, and after `--remove` no longer.
#
# With a CoaL up in $COAL_DIR (tests/coal-e2e.sh runs this on its own CoaL), that one is
# used; otherwise one is brought up here and taken down at the end.
set -euo pipefail
TRITON_TOOL=cmon
. "$(dirname "$0")/suite.sh"
ensure_packages prometheus
# Debian's package starts a Prometheus of its own on 9090 where systemd runs; this suite
# runs its own.
if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi

work=$(mktemp -d /var/tmp/triton-cmon-e2e.XXXXXX)
prom_pid=
agent_pid=
other=cmon$$
suite_cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null
    sdcadm account delete "$other" >/dev/null 2>&1 || true
    rm -rf "$work"
}
coal_for_suite
coal_tool coal-zlogin "for its linux compute nodes"
zl="$COAL_DIR/bin/coal-zlogin"
[ -n "${CMON_URL:-}" ] && [ -n "${CMON_SUFFIX:-}" ] || die "scripts/coal env gives no CMON_URL/CMON_SUFFIX"
[ -n "${CNS_ADDR:-}" ] || die "scripts/coal env gives no CNS_ADDR"
cns_ip=${CNS_ADDR%:*}
[ "${CNS_ADDR##*:}" = 53 ] || die "CNS answers DNS on $CNS_ADDR; Prometheus's resolver needs port 53"
cmon_port=${CMON_URL##*:}
cmon_host=${CMON_URL#https://}
cmon_host=${cmon_host%:*}
step "CMon at $CMON_URL, suffix $CMON_SUFFIX; CNS at $CNS_ADDR"


# --- the certificates, as a tenant makes them ---------------------------------------------
step "triton profile cmon-certgen (account $TRITON_ACCOUNT)"
mkdir -p "$work/admin" "$work/other"
(cd "$work/admin" && triton profile cmon-certgen -y >"$work/admin/certgen.out" 2>&1) \
    || { cat "$work/admin/certgen.out" >&2; die "cmon-certgen failed"; }
check "cmon-certgen wrote the certificate, key and example config" \
    test -s "$work/admin/cmon-$TRITON_ACCOUNT-cert.pem" -a -s "$work/admin/cmon-$TRITON_ACCOUNT-key.pem" \
    -a -s "$work/admin/cmon-$TRITON_ACCOUNT-prometheus.yml"
check "its example config names CMon's suffix ($CMON_SUFFIX) as dns_suffix and endpoint" \
    bash -c "grep -q 'dns_suffix: $CMON_SUFFIX\$' '$work/admin/cmon-$TRITON_ACCOUNT-prometheus.yml' &&
             grep -q 'endpoint: $CMON_SUFFIX\$' '$work/admin/cmon-$TRITON_ACCOUNT-prometheus.yml'"

# A second account with a key of its own, in an ssh-agent of its own.
# (Its agent is not eval'd: the admin's triton commands keep CoaL's agent.)
other_account "$other" "$work/other"
(cd "$work/other" && as_other profile cmon-certgen -y >"$work/other/certgen.out" 2>&1) \
    || { cat "$work/other/certgen.out" >&2; die "cmon-certgen of $other failed"; }

# --- Prometheus -----------------------------------------------------------------------------
refresh=5
prom_port=19190
ca="$COAL_DIR/data/cmon/tls/cert.pem"
[ -s "$ca" ] || die "no CMon certificate at $ca"
job() { # account, dir
    cat <<EOF
  - job_name: triton-$1
    scheme: https
    scrape_interval: 2s
    scrape_timeout: 2s
    tls_config:
      ca_file: $ca
      cert_file: $2/cmon-$1-cert.pem
      key_file: $2/cmon-$1-key.pem
    relabel_configs:
      - source_labels: [__meta_triton_machine_alias]
        target_label: alias
      - source_labels: [__meta_triton_machine_id]
        target_label: instance
    triton_sd_configs:
      - account: $1
        dns_suffix: $CMON_SUFFIX
        endpoint: $CMON_SUFFIX
        port: $cmon_port
        version: 1
        refresh_interval: ${refresh}s
        tls_config:
          ca_file: $ca
          cert_file: $2/cmon-$1-cert.pem
          key_file: $2/cmon-$1-key.pem
EOF
}
{
    echo "global:"
    echo "  scrape_interval: 2s"
    echo "scrape_configs:"
    job "$TRITON_ACCOUNT" "$work/admin"
    job "$other" "$work/other"
} >"$work/prometheus.yml"
echo "nameserver $cns_ip" >"$work/resolv.conf"
step "prometheus on 127.0.0.1:$prom_port, resolving through CNS ($cns_ip), log $work/prometheus.log"
unshare -m sh -c "mount --bind '$work/resolv.conf' /etc/resolv.conf && exec prometheus \
    --config.file='$work/prometheus.yml' --storage.tsdb.path='$work/data' \
    --web.listen-address=127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
prom="http://127.0.0.1:$prom_port"
ready() { curl -fsS --max-time 2 "$prom/-/ready" >/dev/null 2>&1; }
within 60 ready || { tail -20 "$work/prometheus.log" >&2; die "prometheus did not come up"; }

# Active targets of job $1 whose machine id is $2, as "health" lines.
targets() {
    curl -fsS --max-time 5 "$prom/api/v1/targets?state=active" | python3 -c "
import json, sys
for t in json.load(sys.stdin)['data']['activeTargets']:
    if t['labels'].get('job') == sys.argv[1] and t['discoveredLabels'].get('__meta_triton_machine_id') == sys.argv[2]:
        print(t['health'], t.get('lastError', ''))" "$1" "$2"
}
# The value of the instant PromQL query $1 (one series), or nothing.
value() {
    curl -fsS --max-time 5 "$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c "
import json, sys
r = json.load(sys.stdin)['data']['result']
if len(r) == 1: print(r[0]['value'][1])"
}

# --- an instance, discovered and scraped -----------------------------------------------------
name="cmon-$$"
step "triton instance create -w -n $name --network external base-64 g1-small"
triton instance create -w -n "$name" --network external base-64 g1-small >/dev/null
instances+=("$name")
uuid=$(triton instance get -j "$name" | json "d['id']")
cn=$(triton instance get -j "$name" | json "d['compute_node']")
ip=$(triton instance ip "$name")
up_target() { targets "triton-$TRITON_ACCOUNT" "$uuid" | grep -q '^up'; }
check "Prometheus discovers $uuid and scrapes it (health up) within a refresh interval (${refresh} s) and two scrapes" \
    within $((refresh + 10)) up_target
targets "triton-$TRITON_ACCOUNT" "$uuid" | sed 's/^/    target: /' >&2
check "up{instance=\"$uuid\"} is 1" test "$(value "up{instance=\"$uuid\"}")" = 1

# Memory: the cgroup's (v2 memory.current, v1 memory.usage_in_bytes) on the host.
cg=$(find /sys/fs/cgroup -maxdepth 3 -type d -name "$uuid" | head -1)
cgroup_mem() {
    if [ -f "$cg/memory.current" ]; then cat "$cg/memory.current"; else
        cat "$(find /sys/fs/cgroup/memory -maxdepth 2 -type d -name "$uuid" | head -1)/memory.usage_in_bytes"
    fi
}
mem_close() {
    local prom_mem host_mem
    prom_mem=$(value "mem_agg_usage{instance=\"$uuid\"}")
    host_mem=$(cgroup_mem)
    echo "    mem_agg_usage $prom_mem, cgroup $host_mem" >&2
    python3 -c "import sys; p, h = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(p - h) <= 0.05 * h else 1)" \
        "${prom_mem:-0}" "$host_mem"
}
check "mem_agg_usage is within 5 % of the cgroup's memory" within 10 mem_close

# CPU: a shell loop burning 3 s inside.
cpu0=$(value "cpu_user_usage{instance=\"$uuid\"}")
start=$(date +%s.%N)
"$zl" "$uuid" timeout -s KILL 3 sh -c 'while :; do :; done' || true
wall=$(python3 -c "import sys,time; print(time.time() - float(sys.argv[1]))" "$start")
cores=$(nproc)
cpu_rose() {
    local now
    now=$(value "cpu_user_usage{instance=\"$uuid\"}")
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) >= 1e9 else 1)" "${now:-0}" "$cpu0"
}
check "cpu_user_usage rises by at least 1 s after 3 s of burning" within 10 cpu_rose
cpu1=$(value "cpu_user_usage{instance=\"$uuid\"}")
step "cpu_user_usage rose by $(python3 -c "import sys; print((float(sys.argv[1]) - float(sys.argv[2])) / 1e9)" "$cpu1" "$cpu0") s over ${wall} s of wall time"
check "... and by no more than the wall time on every core ($cores)" python3 -c \
    "import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) <= float(sys.argv[3]) * 1e9 * int(sys.argv[4]) else 1)" \
    "$cpu1" "$cpu0" "$wall" "$cores"

# Network: 10 MiB from the host (bash's /dev/tcp) to nc in the instance.
net0=$(value "sum(net_agg_bytes_in{instance=\"$uuid\"})")
"$zl" "$uuid" sh -c 'nc -l -p 5001 >/dev/null' &
listener=$!
send() { { head -c $((10 * 1024 * 1024)) /dev/zero >"/dev/tcp/$ip/5001"; } 2>/dev/null; }
check "10 MiB sent to nc in the instance ($ip:5001)" within 20 send
wait "$listener" 2>/dev/null || true
net_rose() {
    local now
    now=$(value "sum(net_agg_bytes_in{instance=\"$uuid\"})")
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) >= 10 * 1024 * 1024 else 1)" "${now:-0}" "${net0:-0}"
}
check "net_agg_bytes_in rises by at least 10 MiB" within 10 net_rose
step "net_agg_bytes_in: $net0 -> $(value "sum(net_agg_bytes_in{instance=\"$uuid\"})")"
want_net=$(triton instance nic list -j "$name" | head -1 | json "d['network']")
got_net=$(curl -fsS --max-time 5 "$prom/api/v1/query" \
    --data-urlencode "query=net_agg_bytes_in{instance=\"$uuid\"}" | json "d['data']['result'][0]['metric'].get('network_uuid', '')")
check "its NIC's series carries the NIC's network_uuid ($want_net; got $got_net)" test "$got_net" = "$want_net"

# --- another account sees nothing of it ------------------------------------------------------
not_seen_other() { [ -z "$(targets "triton-$other" "$uuid")" ]; }
check "the second account's job ($other) has no target for $uuid" not_seen_other
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$ca" \
    --cert "$work/other/cmon-$other-cert.pem" --key "$work/other/cmon-$other-key.pem" \
    --resolve "$uuid.$CMON_SUFFIX:$cmon_port:$cmon_host" \
    "https://$uuid.$CMON_SUFFIX:$cmon_port/metrics" || true)
check "CMon answers the second account's scrape of $uuid with 404 (got $code)" test "$code" = 404

# --- operators: the members of UFDS's operators group ----------------------------------------
# CMon over curl with account $2's cmon-certgen certificate (in $1), at Host $3.
cmon_curl() { # dir, account, host, curl arguments...
    local dir=$1 account=$2 host=$3; shift 3
    curl -s --max-time 5 --cacert "$ca" --cert "$dir/cmon-$account-cert.pem" \
        --key "$dir/cmon-$account-key.pem" --resolve "$host:$cmon_port:$cmon_host" "$@"
}
# The compute nodes /v1/gz/discover lists to account $2, space-separated.
gz_cns() { # dir, account
    cmon_curl "$1" "$2" "$CMON_SUFFIX" -f "https://$CMON_SUFFIX:$cmon_port/v1/gz/discover" |
        json "' '.join(c['server_uuid'] for c in d['cns'])"
}
# The status of account $2's scrape of the instance's compute node.
cn_code() { # dir, account
    cmon_curl "$1" "$2" "$cn.$CMON_SUFFIX" -o /dev/null -w '%{http_code}' \
        "https://$cn.$CMON_SUFFIX:$cmon_port/metrics" || true
}
lists_cn() { gz_cns "$1" "$2" | grep -qw "$cn"; }
lists_none() { [ -z "$(gz_cns "$1" "$2")" ]; }
admin_is_operator() { sdcadm account operators | awk '{print $1}' | grep -qx "$TRITON_ACCOUNT"; }
check "sdcadm account operators lists $TRITON_ACCOUNT (CoaL's seed made it a member)" \
    admin_is_operator
check "$TRITON_ACCOUNT (an operator) discovers the instance's compute node $cn" \
    within 10 lists_cn "$work/admin" "$TRITON_ACCOUNT"
check "... and scrapes it (200)" test "$(cn_code "$work/admin" "$TRITON_ACCOUNT")" = 200
check "$other (not an operator) discovers no compute node" lists_none "$work/other" "$other"
code=$(cn_code "$work/other" "$other")
check "... and its scrape of $cn is 404 (got $code)" test "$code" = 404
step "sdcadm account operator $other"
sdcadm account operator "$other" >&2
# CMon reads membership with the account, trusted for its auth cache time (10 s).
check "$other, now an operator, discovers $cn" within 20 lists_cn "$work/other" "$other"
code=$(cn_code "$work/other" "$other")
check "... and scrapes it (got $code)" test "$code" = 200
step "sdcadm account operator $other --remove"
sdcadm account operator "$other" --remove >&2
check "$other, no longer an operator, discovers no compute node" \
    within 20 lists_none "$work/other" "$other"
code=$(cn_code "$work/other" "$other")
check "... and its scrape of $cn is 404 again (got $code)" test "$code" = 404

# --- a deleted instance leaves discovery ------------------------------------------------------
step "triton instance delete -w $name"
triton instance delete -f -w "$name" >/dev/null
gone() { [ -z "$(targets "triton-$TRITON_ACCOUNT" "$uuid")" ]; }
check "the deleted instance leaves discovery within a refresh interval" within $((refresh + 10)) gone
