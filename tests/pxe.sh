#!/usr/bin/env bash
# A compute node that boots from the network, end to end, as an operator and a tenant
# would see it: on a CoaL with `--pxe-cns 1`, a QEMU guest PXE-boots from the booter
# (DHCP, iPXE, the platform image's kernel and initramfs) and its cn-agent registers:
#   - `sdcadm server list` shows it, not set up, with its admin address;
#   - CNAPI's allocator refuses it while it is not set up;
#   - `sdcadm server setup UUID --hostname H` makes it set up and running;
#   - with the other nodes reserved, `triton instance create` places an instance on it,
#     and the instance answers ping and HTTP from this host on the external network.
#
# With a CoaL up in $COAL_DIR that has a network-booted guest, that one is used;
# otherwise one is brought up here and taken down at the end.
set -euo pipefail
TRITON_TOOL=pxe
. "$(dirname "$0")/suite.sh"
coal_for_suite --pxe-cns 1

# The guest's row of `sdcadm server list`: UUID HOSTNAME ADMIN_IP SETUP STATUS.
row() { sdcadm server list | awk -v u="$1" '$1 == u'; }
field() { row "$1" | awk -v f="$2" '{print $f}'; }

mac=52:54:00:c0:0a:01
uuid=$(sdcadm server boot-params "$mac" | awk '$1 == "server_uuid" {print $2}')
check "the guest registered: CNAPI knows its admin MAC $mac as server ${uuid:-none}" test -n "$uuid"
step "sdcadm server list:"
sdcadm server list >&2
check "sdcadm server list shows it not set up" test "$(field "$uuid" 4)" = false
admin_ip=$(field "$uuid" 3)
check "its admin address ($admin_ip) is on the admin network" bash -c "[[ $admin_ip == 10.99.99.* ]]"
check "its platform is CNAPI's default ($(sdcadm server boot-params "$mac" | awk '$1 == "platform" {print $2}'))" \
    test -n "$(sdcadm server boot-params "$mac" | awk '$1 == "platform" {print $2}')"

# Every other node reserved, so the allocator has only the guest.
reserved=()
suite_cleanup() {
    local o
    for o in "${reserved[@]}"; do sdcadm server reserve "$o" --reserved false >/dev/null || true; done
}
for other in $(sdcadm server list | awk -v u="$uuid" 'NR > 1 && $1 != u {print $1}'); do
    sdcadm server reserve "$other" >/dev/null
    reserved+=("$other")
done
step "reserved the other nodes: ${reserved[*]}"

refused="pxe-refused-$$"
instances+=("$refused")
triton instance create -w -n "$refused" --network external base-64 g1-small >/dev/null 2>&1 || true
state=$(triton instance get -j "$refused" 2>/dev/null | json "d['state']" || echo none)
check "no instance runs while the only unreserved node is not set up (state: $state)" \
    test "$state" != running
triton instance delete -f -w "$refused" >/dev/null 2>&1 || true

step "sdcadm server setup $uuid --hostname pxe-cn1"
sdcadm server setup "$uuid" --hostname pxe-cn1 >&2
check "after setup it is set up, running and named pxe-cn1" \
    test "$(field "$uuid" 4) $(field "$uuid" 5) $(field "$uuid" 2)" = "true running pxe-cn1"

name="pxe-web-$$"
step "triton instance create -w -n $name --network external base-64 g1-small"
instances+=("$name")
triton instance create -w -n "$name" --network external base-64 g1-small >/dev/null
node=$(triton instance get -j "$name" | json "d['compute_node']")
check "the instance runs on the network-booted node ($node)" test "$node" = "$uuid"
check "it is running" test "$(triton instance get -j "$name" | json "d['state']")" = running
ip=$(triton instance ip "$name")
pings() { busybox ping -c 1 -W 2 "$1" >/dev/null 2>&1; }
fetches() { echo 'GET / HTTP/1.0' | busybox nc -w 3 "$1" 80 2>/dev/null | grep -q "hello from"; }
check "it answers ping from this host ($ip)" within 120 pings "$ip"
check "its httpd answers from this host" within 120 fetches "$ip"
