#!/usr/bin/env bash
# End to end, as a tenant would: bring up a CoaL from nothing, drive it with the real
# `triton` CLI (provision, list, stop, start, resize, delete), check that the instance
# really runs and answers on its IP; then as an operator: build CloudAPI's zone image,
# import it into IMGAPI, provision it through VMAPI as a zone (`sdcadm create`) and check
# that this second CloudAPI serves the `triton` CLI from the zone's IP, reaching UFDS,
# VMAPI and PAPI from there; then `scripts/coal down` and check nothing is left.
#
# Run by scripts/test after the unit and integration tests. Uses its own COAL_DIR so a
# developer's CoaL is never touched... but the same ports: stop yours first.
set -euo pipefail
TRITON_TOOL=e2e
. "$(dirname "$0")/../scripts/lib.sh"
cd "$TRITON_ROOT"

export COAL_DIR=${E2E_COAL_DIR:-/var/tmp/triton-coal-e2e}
name="e2e-$$"
failed=1

cleanup() {
    if [ "$failed" -ne 0 ] && [ -d "$COAL_DIR/logs" ]; then
        echo "--- e2e failed; last lines of every service log:" >&2
        for log in "$COAL_DIR"/logs/*.log; do
            echo "=== $log" >&2
            tail -n 15 "$log" >&2 || true
        done
    fi
    scripts/coal down >/dev/null 2>&1 || true
}
trap cleanup EXIT

check() { # what, then a command that must succeed
    local what=$1; shift
    "$@" || die "$what"
    step "ok: $what"
}

# Reads one field of `triton instance get -j`.
field() {
    triton instance get -j "$name" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

answers() { curl -fsS --max-time 5 "http://$1/" 2>/dev/null | grep -q "hello from $name"; }

wait_answers() { # ip: polls up to 20 s, the instance's init needs a moment to listen
    local i
    for i in $(seq 1 40); do answers "$1" && return 0; sleep 0.5; done
    return 1
}

step "bringing up a CoaL in $COAL_DIR"
scripts/coal up
eval "$(scripts/coal env)"
check "coal status reports every service healthy" scripts/coal status >/dev/null

check "triton account get names the admin account" \
    bash -c 'triton account get | grep -q "^login: admin$"'

step "triton instance create -w -n $name base-64 g1-small"
triton instance create -w -n "$name" base-64 g1-small
check "the instance is running" test "$(field state)" = running
ip=$(triton instance ip "$name")
check "triton instance ip gives an address ($ip)" test -n "$ip"
check "the instance answers on its IP" wait_answers "$ip"
check "triton instance list shows it running" \
    bash -c "triton instance list -H -o name,state | grep -Eq '^$name +running\$'"

triton instance stop -w "$name"
check "stopped after stop -w" test "$(field state)" = stopped
check "a stopped instance does not answer" bash -c "! curl -fsS --max-time 3 http://$ip/ >/dev/null 2>&1"

triton instance start -w "$name"
check "running after start -w" test "$(field state)" = running
check "it answers again after start" wait_answers "$ip"

triton instance resize -w "$name" g1-medium
check "the package is g1-medium after resize" test "$(field package)" = g1-medium
check "memory is 1024 MiB after resize" test "$(field memory)" = 1024

triton instance delete -f -w "$name"
check "the instance is gone from the list" \
    bash -c "! triton instance list -H -o name | grep -qx '$name'"
check "a deleted instance does not answer" bash -c "! curl -fsS --max-time 3 http://$ip/ >/dev/null 2>&1"

# --- tenant isolation, on this same CoaL (tests/isolation.sh: from inside real instances) ---
step "tenant isolation (tests/isolation.sh)"
tests/isolation.sh

# --- CNS: instances' names in DNS, from dig and from inside (tests/cns.sh) -----------------
step "CNS (tests/cns.sh)"
tests/cns.sh

# --- CMon: Debian's Prometheus discovers and scrapes instances through CNS (tests/cmon.sh) ---
step "CMon (tests/cmon.sh)"
tests/cmon.sh

# --- the operator: a service deployed as a zone, as Triton deploys its own ---------------
images=$(mktemp -d)
zone_cleanup() { rm -rf "$images"; }
trap 'zone_cleanup; cleanup' EXIT
step "sdcadm images build cloudapi (from CoaL's release binary)"
sdcadm images build --bin-dir "$COAL_DIR/bin" --out "$images" cloudapi
manifest=$(ls "$images"/cloudapi-*.imgmanifest)
step "sdcadm images import $(basename "$manifest")"
sdcadm images import "$manifest" "${manifest%.imgmanifest}.tar.gz"
step "sdcadm create cloudapi"
created=$(sdcadm create cloudapi)
read -r zone zone_uuid zone_ip zone_state <<< "$created"
check "the cloudapi zone $zone ($zone_uuid) is $zone_state at $zone_ip" test "$zone_state" = running
check "sdcadm instances lists it" \
    bash -c "sdcadm instances cloudapi | grep -Eq '^cloudapi +$zone +$zone_uuid +$zone_ip +running'"
check "the second CloudAPI answers over TLS on the zone's IP (its own self-signed certificate)" \
    bash -c "curl -fsSk --max-time 5 https://$zone_ip:8443/--ping | grep -q pong"
check "the zone's CloudAPI serves no plain HTTP on its IP" \
    bash -c "! curl -fsS --max-time 3 http://$zone_ip:8080/--ping >/dev/null 2>&1"
# The same tenant, its key checked against UFDS by the CloudAPI in the zone.
zone_env="TRITON_URL=https://$zone_ip:8443 SDC_URL=https://$zone_ip:8443 TRITON_TLS_INSECURE=1 SDC_TLS_INSECURE=1"
check "through the zone, triton account get names the admin account (UFDS)" \
    bash -c "$zone_env triton account get | grep -q '^login: admin\$'"
check "through the zone, triton instance list shows the zone itself (VMAPI)" \
    bash -c "$zone_env triton instance list -H -o name,state | grep -Eq '^$zone +running\$'"
check "through the zone, triton package list shows g1-small (PAPI)" \
    bash -c "$zone_env triton package list -H -o name | grep -qx g1-small"
step "sdcadm delete $zone"
sdcadm delete "$zone"
check "sdcadm instances no longer lists it" bash -c "! sdcadm instances cloudapi | grep -q '$zone_uuid'"
check "the deleted zone does not answer" \
    bash -c "! curl -fsSk --max-time 3 https://$zone_ip:8443/--ping >/dev/null 2>&1"

step "scripts/coal down"
scripts/coal down
check "$COAL_DIR is removed" test ! -e "$COAL_DIR"
# "[/]var/..." matches the path but not this pattern's own command line.
none_left() { ! pgrep -af "[${COAL_DIR:0:1}]${COAL_DIR:1}/" >&2; }
check "no process of CoaL is left" none_left
failed=0
step "end-to-end passed"
