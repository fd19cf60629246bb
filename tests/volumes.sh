#!/usr/bin/env bash
# Shared NFS volumes end to end (issue 18), as a tenant would, with the real `triton` CLI
# on a CoaL with two linux compute nodes:
#   - `triton volume sizes/create -w/list/get`: a volume on the account's default fabric
#     network becomes ready with a filesystem_path; bad names, types and sizes are refused
#     with CloudAPI's codes; a volume of another size, on a network named, is made and
#     deleted (-w) until GetVolume answers ResourceNotFound;
#   - two instances created with `-v NAME:/data` on DIFFERENT nodes (an affinity rule): a
#     file written in one is read in the other; a 200 MB file written in one reads back
#     with the same sha256 in the other; an `:ro` mount refuses writes;
#   - `triton volume delete` of the mounted volume is refused (VolumeInUse) and the
#     volume lists the instances in its refs;
#   - a second account: does not see the volume (404), cannot mount it by name, and its
#     instance on its own default fabric cannot reach the volume server's port 2049
#     (the owner's instance can);
#   - once the instances are deleted the volume deletes, and its storage instance is
#     destroyed (VMAPI's record, read with moray-cli).
# node-triton's own volume tests (test/integration/cli-volumes*.test.js,
# `allowVolumesTests`) are not in the npm package and CI cannot fetch them from GitHub;
# they were run by hand against a CoaL (docs/volapi.md, "CloudAPI and the end-to-end
# suite"), and this suite covers their cases, a volume's tags read back included.
#
# With a CoaL up in $COAL_DIR with two linux nodes (scripts/test runs this after
# tests/fabrics.sh on the same CoaL), that one is used; otherwise one is brought up here
# and taken down at the end.
set -euo pipefail
TRITON_TOOL=volumes
. "$(dirname "$0")/suite.sh"
work=$(mktemp -d /var/tmp/triton-volumes-e2e.XXXXXX)
other=vol$$
agent_pid=
volumes=()
suite_cleanup() {
    local v
    for v in "${volumes[@]}"; do triton volume delete -y -w "$v" >/dev/null 2>&1 || true; done
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null
    sdcadm account delete "$other" >/dev/null 2>&1 || true
    rm -rf "$work"
}
coal_for_suite --linux-cns 2
coal_tool coal-zlogin "for its linux compute nodes"

# `triton ...` must fail and say $1 on stderr.
fails_saying() { # text, triton args...
    local says=$1 out; shift
    if out=$(triton "$@" 2>&1); then
        echo "    it succeeded: $out" >&2
        return 1
    fi
    grep -qF -- "$says" <<<"$out" || { echo "    said: $out" >&2; return 1; }
}

# --- sizes and bad input ---------------------------------------------------------------------
sizes=$(triton volume sizes -j)
first_size=$(head -1 <<<"$sizes" | json "d['size']")
last_size=$(tail -1 <<<"$sizes" | json "d['size']")
check "triton volume sizes: tritonnfs from 10 GiB ($first_size MiB) up ($last_size MiB)" \
    bash -c "[ '$first_size' = 10240 ] && [ $last_size -gt 10240 ] && ! grep -qv tritonnfs <<<'$sizes'"
check "a bad name is refused (InvalidArgument, Invalid volume name)" \
    fails_saying "error (InvalidArgument): Error: Invalid volume name: x!y!" volume create -n 'x!y!'
check "a bad type is refused (InvalidArgument, Invalid volume type)" \
    fails_saying "error (InvalidArgument): Error: Invalid volume type: foobar" \
    volume create -n "vol-bad-$$" --type foobar
too_big="$((last_size / 1024 + 1))G"
check "a size not in the list ($too_big) is refused (volume size not available)" \
    fails_saying "volume size not available" volume create -n "vol-big-$$" -s "$too_big" -w
check "nothing was made by the refused creates" \
    bash -c "! triton volume list -j | grep -q 'vol-b[ai][dg]-$$'"

# --- a volume of another size, on a network named, deleted -----------------------------------
default_net=$(triton network get-default -j | json "d['id']")
v20="vol20-$$"
volumes+=("$v20")
step "triton volume create -n $v20 -s 20G --network My-Fabric-Network --tag role=scratch -w"
triton volume create -n "$v20" -s 20G --network My-Fabric-Network --tag role=scratch -w >/dev/null
got=$(triton volume get "$v20")
check "$v20 is ready, 20480 MiB, on the default fabric network" \
    test "$(json "d['state'], d['size'], d['networks']" <<<"$got")" = "ready 20480 ['$default_net']"
check "its tags read back through triton volume get ({'role': 'scratch'})" \
    test "$(json "d.get('tags')" <<<"$got")" = "{'role': 'scratch'}"
step "triton volume delete -y -w $v20"
check "$v20 deletes (-w waits until it is gone)" triton volume delete -y -w "$v20"
check "then triton volume get $v20 answers ResourceNotFound" \
    fails_saying ResourceNotFound volume get "$v20"

# --- the volume the instances share ----------------------------------------------------------
v1="vol1-$$"
volumes+=("$v1")
step "triton volume create -n $v1 -w"
started=$SECONDS
triton volume create -n "$v1" -w >/dev/null
step "  ready after $((SECONDS - started)) s"
vol=$(triton volume get -j "$v1")
vid=$(json "d['id']" <<<"$vol")
fs_path=$(json "d.get('filesystem_path', '')" <<<"$vol")
server_ip=${fs_path%%:*}
check "$v1 is ready, tritonnfs, 10240 MiB, on the default fabric network" \
    test "$(json "d['state'], d['type'], d['size'], d['networks']" <<<"$vol")" \
    = "ready tritonnfs 10240 ['$default_net']"
check "its filesystem_path is <ip>:/exports/data ($fs_path)" \
    bash -c "[[ '$fs_path' =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:/exports/data$ ]]"
check "its storage VM is not among the account's instances" \
    bash -c "! triton instance list -j | grep -q 'nfs-shared-volume-$vid'"
check "triton volume list shows it" bash -c "triton volume list -j | grep -q '\"id\":\"$vid\"'"
check "triton volume list name=$v1 finds exactly it" \
    test "$(triton volume list -j name="$v1" | json "d['id']")" = "$vid"

create() { # name, args...
    local name=$1; shift
    step "triton instance create -w -n $name $* base-64 g1-small"
    triton instance create -w -n "$name" "$@" base-64 g1-small >/dev/null
    instances+=("$name")
}
a1="vol-a1-$$" a2="vol-a2-$$" a3="vol-a3-$$"
create "$a1" --network My-Fabric-Network -v "$v1:/data"
u1=$(triton instance get -j "$a1" | json "d['id']")
create "$a2" --network My-Fabric-Network -v "$v1:/data" -a "instance!=$u1"
u2=$(triton instance get -j "$a2" | json "d['id']")
node1=$(triton instance get -j "$a1" | json "d['compute_node']")
node2=$(triton instance get -j "$a2" | json "d['compute_node']")
check "the two instances are on different compute nodes ($node1, $node2)" test "$node1" != "$node2"

reads_hello() { [ "$(inside "$u2" 'cat /data/hello' 2>/dev/null)" = "hello from $a1" ]; }
step "writing /data/hello in $a1"
inside "$u1" "echo 'hello from $a1' > /data/hello" || bad "writing /data/hello in $a1"
check "$a2, on the other node, reads the file $a1 wrote" within 30 reads_hello
check "the volume's root is the export (no other files but the one written)" \
    test "$(inside "$u2" 'ls /data')" = hello

step "writing a 200 MB file in $a1 (dd from /dev/urandom through sha256sum)"
started=$SECONDS
sum1=$(inside "$u1" 'dd if=/dev/urandom bs=1M count=200 2>/dev/null | tee /data/big | sha256sum' | awk '{print $1}')
step "  written in $((SECONDS - started)) s"
started=$SECONDS
sum2=$(inside "$u2" 'sha256sum /data/big' | awk '{print $1}')
step "  read in $a2 in $((SECONDS - started)) s"
size2=$(inside "$u2" 'wc -c < /data/big' | tr -d ' ')
check "the 200 MB file reads back in $a2 whole ($size2 bytes) with the same sha256 (${sum1:0:16}...)" \
    bash -c "[ '$size2' = 209715200 ] && [ -n '$sum1' ] && [ '$sum1' = '$sum2' ]"

check "triton volume delete of the mounted volume is refused (VolumeInUse)" \
    fails_saying VolumeInUse volume delete -y "$v1"
check "the volume is still ready" test "$(triton volume get -j "$v1" | json "d['state']")" = ready
refs=$(triton volume get -j "$v1" | json "' '.join(sorted(d['refs']))")
check "its refs are the two instances" test "$refs" = "$(printf '%s\n' "$u1" "$u2" | sort | xargs)"

create "$a3" --network My-Fabric-Network -v "$v1:/ro:ro"
u3=$(triton instance get -j "$a3" | json "d['id']")
check "an :ro mount reads the volume" \
    test "$(inside "$u3" 'cat /ro/hello' 2>/dev/null)" = "hello from $a1"
check "an :ro mount refuses writes" not inside "$u3" 'echo x > /ro/x' 2>/dev/null
check "nothing was written through it" not inside "$u2" 'test -e /data/x'

reaches_server() { inside "$1" "nc -w 3 $server_ip 2049 </dev/null" >/dev/null 2>&1; }
check "the owner's instance reaches the volume server ($server_ip:2049)" reaches_server "$u1"

# --- another account ---------------------------------------------------------------------
other_account "$other" "$work/other"
other_fails_saying() { # text, triton args...
    local says=$1 out; shift
    if out=$(as_other "$@" 2>&1); then echo "    it succeeded: $out" >&2; return 1; fi
    grep -qF -- "$says" <<<"$out" || { echo "    said: $out" >&2; return 1; }
}
check "$other does not see the volume by name (ResourceNotFound)" \
    other_fails_saying ResourceNotFound volume get "$v1"
# By id node-triton prints CloudAPI's error body (any code but ResourceNotFound).
not_by_id() { local out; out=$(as_other volume get "$vid" 2>&1); grep -q '"VolumeNotFound"' <<<"$out" && ! grep -q "$v1" <<<"$out"; }
check "$other gets VolumeNotFound for the volume's id, nothing of it" not_by_id
check "$other's volume list is empty" test "$(as_other volume list -j | wc -l)" = 0
# NAPI gives a new account its default fabric from UFDS's feed.
has_fabric() { as_other network get-default -j >/dev/null 2>&1; }
check "$other has a default fabric network" within 60 has_fabric
o1="vol-o1-$$"
step "as $other: triton instance create -w -n $o1 --network My-Fabric-Network base-64 g1-small"
as_other instance create -w -n "$o1" --network My-Fabric-Network base-64 g1-small >/dev/null \
    || bad "$other's instance on its own fabric"
# Every account's default fabric has the same subnet, so the first instance of this one
# may hold the volume server's address on its own fabric; then a second one is made, and
# the check runs from an instance whose address is another, so its packets to the
# server's address have to leave it.
o1b="vol-o1b-$$"
from=$o1
if [ "$(as_other instance ip "$o1")" = "$server_ip" ]; then
    step "as $other: $o1 holds $server_ip on its own fabric; triton instance create -w -n $o1b"
    as_other instance create -w -n "$o1b" --network My-Fabric-Network base-64 g1-small >/dev/null \
        || bad "$other's second instance on its own fabric"
    from=$o1b
fi
uf=$(as_other instance get -j "$from" | json "d['id']")
check "$other's instance $from ($(as_other instance ip "$from")) cannot reach the volume server ($server_ip:2049)" \
    not reaches_server "$uf"
o2="vol-o2-$$"
check "$other cannot mount $v1 by name (its instance is not made)" \
    not as_other instance create -w -n "$o2" --network My-Fabric-Network -v "$v1:/data" base-64 g1-small
as_other instance delete -f -w "$o1" "$o1b" "$o2" >/dev/null 2>&1 || true

# --- the end of the volume ---------------------------------------------------------------
step "triton instance delete -f -w $a1 $a2 $a3"
triton instance delete -f -w "$a1" "$a2" "$a3" >/dev/null
instances=()
step "triton volume delete -y -w $v1"
check "with its instances gone, $v1 deletes" triton volume delete -y -w "$v1"
check "then triton volume get $v1 answers ResourceNotFound" \
    fails_saying ResourceNotFound volume get "$v1"
storage_state() {
    moray-cli findobjects -H vmapi_vms "(alias=nfs-shared-volume-$vid)" 2>/dev/null |
        python3 -c "import json,sys
for l in sys.stdin:
    l = l.strip()
    if l: print(json.loads(l).get('value', {}).get('state', ''))"
}
gone_state=$(storage_state | xargs)
check "its storage instance is destroyed (VMAPI: ${gone_state:-no record})" \
    test "$gone_state" = destroyed
