#!/usr/bin/env bash
# Fabrics end to end, as a tenant would: on a CoaL with two linux compute nodes joined by
# an underlay bridge, the account's default fabric network (NAPI made it), two instances
# on it placed on different nodes (an affinity rule), and traffic between them through
# the nodes' VXLAN devices, learned from Portolan:
#   - each pings the other and fetches the other's HTTP;
#   - after one is deleted, its address stops answering (the other node drained its log);
#   - a new instance on the deleted one's address, with a new MAC, is reached (no stale
#     neighbour or forwarding entry);
#   - NAT: instances on the default fabric network (internet_nat) ping the host's external
#     address through their node's NAT ([overlay] nat_ip), on either node; one on a fabric
#     network made with --no-nat on the same VLAN does not.
# Isolation between two accounts' fabrics with the same VLAN id and subnet is shown on
# namespaces by crates/dc-testkit/tests/fabrics.rs.
#
# With a CoaL up in $COAL_DIR with two linux nodes (tests/coal-e2e.sh runs this on its
# own), that one is used; otherwise one is brought up here and taken down at the end.
set -euo pipefail
TRITON_TOOL=fabrics
. "$(dirname "$0")/suite.sh"
coal_for_suite --linux-cns 2
coal_tool coal-zlogin "for its linux compute nodes"

pings() { inside "$1" "ping -c 1 -W 2 $2" >/dev/null 2>&1; }
fetches() { # instance, ip: the other instance's httpd answers through the fabric
    local got
    got=$(inside "$1" "echo 'GET / HTTP/1.0' | nc -w 3 $2 80" 2>/dev/null) || return 1
    grep -q "hello from" <<<"$got"
}

default_net=$(triton network get-default -j | json "d['id']")
default_name=$(triton network get -j "$default_net" | json "d['name']")
check "the account's default network is its default fabric (My-Fabric-Network: $default_name)" \
    test "$default_name" = My-Fabric-Network
check "the default fabric network is a fabric" \
    test "$(triton network get -j "$default_net" | json "d['fabric']")" = True

servers=$(sdcadm servers 2>/dev/null | awk 'NR > 1' | wc -l)
step "$servers compute nodes"

create() { # name, network and placement args...
    local name=$1; shift
    step "triton instance create -w -n $name $* base-64 g1-small"
    triton instance create -w -n "$name" "$@" base-64 g1-small >/dev/null
    instances+=("$name")
}
a1="fab-a1-$$" a2="fab-a2-$$" a3="fab-a3-$$"
create "$a1" --network My-Fabric-Network
u1=$(triton instance get -j "$a1" | json "d['id']")
create "$a2" --network My-Fabric-Network -a "instance!=$u1"
node1=$(triton instance get -j "$a1" | json "d['compute_node']")
node2=$(triton instance get -j "$a2" | json "d['compute_node']")
check "the two instances are on different compute nodes ($node1, $node2)" test "$node1" != "$node2"
ip1=$(triton instance ip "$a1")
ip2=$(triton instance ip "$a2")
u2=$(triton instance get -j "$a2" | json "d['id']")
check "both have addresses on the fabric network ($ip1, $ip2)" \
    bash -c "[[ $ip1 == 192.168.* && $ip2 == 192.168.* ]]"

check "a1 pings a2 across the nodes" within 60 pings "$u1" "$ip2"
check "a2 pings a1 across the nodes" within 60 pings "$u2" "$ip1"
# The fabric's MTU (1400 in NAPI's default fabric) less the IP and ICMP headers.
full_ping() { inside "$1" "ping -c 1 -W 2 -s 1372 $2" >/dev/null 2>&1; }
check "a1 pings a2 with packets of the fabric's full MTU" within 60 full_ping "$u1" "$ip2"
check "a1 fetches a2's HTTP" within 60 fetches "$u1" "$ip2"
check "a2 fetches a1's HTTP" within 60 fetches "$u2" "$ip1"

mac2=$(triton instance nic list -j "$a2" | json "d['mac']")
step "triton instance delete -w $a2"
triton instance delete -f -w "$a2" >/dev/null
check "after a2 is deleted, its address stops answering a1" within 60 not pings "$u1" "$ip2"

create "$a3" -a "instance!=$u1" --nic "ipv4_uuid=$default_net,ipv4_ips=$ip2"
u3=$(triton instance get -j "$a3" | json "d['id']")
mac3=$(triton instance nic list -j "$a3" | json "d['mac']")
check "a3 took a2's address ($ip2) with another MAC ($mac2 -> $mac3)" \
    bash -c "[ '$(triton instance ip "$a3")' = '$ip2' ] && [ '$mac2' != '$mac3' ]"
check "a1 reaches a3 on that address (no stale entry for a2)" within 60 fetches "$u1" "$ip2"
check "a3 pings a1" within 60 pings "$u3" "$ip1"

# NAT. The external network's gateway is this machine (10.88.88.2 on coal-external); the
# host takes pings from tenant networks, nothing else (docs/security.md).
host_ext=10.88.88.2
check "a1 (default fabric, internet_nat) pings the host's external address through its node's NAT" \
    within 60 pings "$u1" "$host_ext"
check "a3, on the other node, too" within 60 pings "$u3" "$host_ext"
vlan=$(triton network get -j "$default_net" | json "d['vlan_id']")
nonat="fab-nonat-$$"
step "triton network create --no-nat --name $nonat (VLAN $vlan)"
triton network create --name "$nonat" --subnet 192.168.250.0/24 --start-ip 192.168.250.10 \
    --end-ip 192.168.250.200 --gateway 192.168.250.1 --no-nat "$vlan" >/dev/null
a4="fab-a4-$$"
suite_cleanup() { # the network goes after its instance
    triton instance delete -f -w "$a4" >/dev/null 2>&1 || true
    triton network delete "$nonat" >/dev/null 2>&1 || true
}
create "$a4" --network "$nonat"
u4=$(triton instance get -j "$a4" | json "d['id']")
check "a4 (a --no-nat fabric network) gets no answer from the host's external address" \
    not pings "$u4" "$host_ext"
