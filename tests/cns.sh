#!/usr/bin/env bash
# CNS end to end on a CoaL, as a tenant and an operator would see it: the real `triton`
# CLI, `dig` against CNS's DNS address ($CNS_ADDR from `scripts/coal env`), busybox
# `nslookup` inside an instance (through zlogin) and `cnsadm`.
#
# Checked:
#   - `triton account update triton_cns_enabled=true` sets the flag (read back);
#   - within 2 s of `triton instance create -w` returning, every name in the instance's
#     `dns_names` answers its IP (the time is measured here and printed);
#   - `triton.cns.services=web:80` on two running instances: `web.svc...` answers A with
#     both IPs and an SRV for port 80 to each;
#   - one of them stopped: the service name no longer gives its IP, its instance name still
#     does; started again, the service name gives it again;
#   - `triton.cns.disable=true` removes its names; delete removes all of them;
#   - from inside an instance, busybox `nslookup` of another instance's name answers its IP
#     (the instance's resolver is CNS, from NAPI's network);
#   - `cnsadm status` lists the zone $CNS_SUFFIX with a serial.
# Every check prints what it saw when it fails.
#
# With a CoaL up in $COAL_DIR (tests/coal-e2e.sh runs this on its own CoaL), that one is
# used; otherwise one is brought up here and taken down at the end.
set -euo pipefail
TRITON_TOOL=cns
. "$(dirname "$0")/suite.sh"
coal_for_suite
ensure_packages dnsutils
[ -n "${CNS_ADDR:-}" ] && [ -n "${CNS_SUFFIX:-}" ] \
    || die "scripts/coal env exports no CNS_ADDR/CNS_SUFFIX: is cns in deploy/services.toml and up?"
command -v cnsadm >/dev/null || die "cnsadm is missing from $COAL_DIR/bin (CoaL's tools)"
coal_tool zlogin "beside cn-agent"

cns_host=${CNS_ADDR%:*}
cns_port=${CNS_ADDR##*:}
# dig against CNS: the answer's data, one per line, sorted (empty for NXDOMAIN/NODATA).
q() { # type, name
    dig @"$cns_host" -p "$cns_port" +short +time=1 +tries=1 "$2" "$1" 2>/dev/null | sort || true
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"; }
dns_names_of() {
    triton instance get -j "$1" | python3 -c \
        "import json,sys; print('\n'.join(json.load(sys.stdin).get('dns_names', [])))"
}
now_ms() { date +%s%3N; }
# An instance's addresses (every NIC's: the admin account's instances have an external NIC
# and one on its default fabric, and the wildcard zone lists both), one line, sorted.
ips_of() {
    triton instance get -j "$1" | python3 -c \
        "import json,sys; print(' '.join(sorted(json.load(sys.stdin).get('ips', []))) + ' ')"
}
words() { printf '%s\n' "$@" | grep -v '^$' | sort | tr '\n' ' '; }

# Polls `$@` every 50 ms until it succeeds or `deadline_ms` (absolute, now_ms) passes.
until_deadline() { # deadline_ms, command...
    local deadline=$1; shift
    while true; do
        "$@" && return 0
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
# Polls for up to `secs` seconds (changes after a tag, a stop, a delete).
eventually() { # secs, command...
    local secs=$1; shift
    until_deadline $(($(now_ms) + secs * 1000)) "$@"
}

# --- the account flag ----------------------------------------------------------------------
triton account update triton_cns_enabled=true >/dev/null
flag=$(triton account get -j | json_field triton_cns_enabled)
check "triton account update triton_cns_enabled=true is read back (triton_cns_enabled: $flag)" \
    test "$flag" = True
account=$(triton account get -j | json_field id)

# --- a new instance's names answer within 2 s ---------------------------------------------
a="cns-a-$$" b="cns-b-$$"
step "triton instance create -w -n $a -t triton.cns.services=web:80 base-64 g1-small"
triton instance create -w -n "$a" -t triton.cns.services=web:80 base-64 g1-small >/dev/null
created=$(now_ms)
instances+=("$a")
deadline=$((created + 2000))
ip_a=$(triton instance ip "$a")
ips_a=$(ips_of "$a")
names_a=""
have_names() { names_a=$(dns_names_of "$a"); [ -n "$names_a" ]; }
seen=""
all_answer() { # every name of $names_a answers addresses of $a's, and only those
    local n got ip
    seen=""
    for n in $names_a; do
        got=$(q A "$n" | tr '\n' ' ')
        seen+="$n -> ${got:-nothing}; "
        [ -n "$got" ] || return 1
        for ip in $got; do [[ " $ips_a" == *" $ip "* ]] || return 1; done
    done
}
if until_deadline "$deadline" have_names && until_deadline "$deadline" all_answer; then
    ok "within 2 s of create returning, every dns_names entry of $a answers its addresses ($ips_a) ($(($(now_ms) - created)) ms: $seen)"
else
    bad "within 2 s of create returning ($(($(now_ms) - created)) ms), dns_names of $a were [${names_a//$'\n'/ }] and answered: ${seen:-nothing asked}"
fi
expect_names="$(triton instance get -j "$a" | json_field id).inst.$account.$CNS_SUFFIX"
check "dns_names of $a include $expect_names ([${names_a//$'\n'/ }])" \
    grep -qx "$expect_names" <<< "$names_a"

# --- a service of two instances ------------------------------------------------------------
step "triton instance create -w -n $b -t triton.cns.services=web:80 base-64 g1-small"
triton instance create -w -n "$b" -t triton.cns.services=web:80 base-64 g1-small >/dev/null
instances+=("$b")
ip_b=$(triton instance ip "$b")
ips_b=$(ips_of "$b")
svc="web.svc.$account.$CNS_SUFFIX"
inst_a="$a.inst.$account.$CNS_SUFFIX"
inst_b="$b.inst.$account.$CNS_SUFFIX"
both() { [ "$(q A "$svc" | tr '\n' ' ')" = "$(words $ips_a $ips_b)" ]; }
eventually 5 both || true
check "$svc answers A with both instances' IPs ($ips_a$ips_b; got: $(q A "$svc" | tr '\n' ' '))" both
srv=$(q SRV "$svc" | tr '\n' ';')
srv_to() { [[ "$srv" == *" 80 $1."* ]]; }
srv_both() { srv_to "$inst_a" && srv_to "$inst_b"; }
check "$svc answers SRV port 80 to each instance's name (got: $srv)" srv_both

# --- stopped: out of the service, still its instance name ---------------------------------
step "triton instance stop -w $b"
triton instance stop -w "$b" >/dev/null
only_a() { [ "$(q A "$svc" | tr '\n' ' ')" = "$(words $ips_a)" ]; }
eventually 5 only_a || true
check "with $b stopped, $svc answers only $a's IPs ($ips_a; got: $(q A "$svc" | tr '\n' ' '))" only_a
check "with $b stopped, its instance name $inst_b still answers $ips_b(got: $(q A "$inst_b" | tr '\n' ' '))" \
    test "$(q A "$inst_b" | tr '\n' ' ')" = "$(words $ips_b)"
step "triton instance start -w $b"
triton instance start -w "$b" >/dev/null
eventually 5 both || true
check "started again, $svc answers both IPs (got: $(q A "$svc" | tr '\n' ' '))" both

# --- from inside: an instance resolves another by name ------------------------------------
uuid_a=$(triton instance get -j "$a" | json_field id)
resolv=$(zl "$uuid_a" cat /etc/resolv.conf 2>&1 | tr '\n' ' ' || true)
check "$a's resolv.conf names CNS ($cns_host) as its resolver ($resolv)" \
    grep -q "nameserver $cns_host" <<< "$resolv"
looked=$(zl "$uuid_a" nslookup "$inst_b" 2>&1 | tr '\n' ' ' || true)
check "inside $a, busybox nslookup $inst_b answers $ip_b (got: $looked)" \
    grep -q "$ip_b" <<< "$looked"

# --- disable, then delete -----------------------------------------------------------------
step "triton instance tag set -w $b triton.cns.disable=true"
triton instance tag set -w "$b" triton.cns.disable=true >/dev/null
gone() { [ -z "$(q A "$1")" ]; }
eventually 5 gone "$inst_b" || true
check "with triton.cns.disable=true, $inst_b answers nothing (got: $(q A "$inst_b" | tr '\n' ' '))" \
    gone "$inst_b"
check "with triton.cns.disable=true, $svc answers only $a's IPs ($ips_a; got: $(q A "$svc" | tr '\n' ' '))" only_a

status=$(cnsadm status 2>&1 || true)
serial=$(awk -v z="$CNS_SUFFIX" '$1 == z {print $2}' <<< "$status")
check "cnsadm status lists $CNS_SUFFIX with a serial (${serial:-none}; got: $(tr '\n' ' ' <<< "$status"))" \
    test -n "$serial"

step "triton instance delete -w $a"
triton instance delete -f -w "$a" >/dev/null
eventually 5 gone "$inst_a" || true
all_gone() { local n; for n in $names_a; do gone "$n" || return 1; done; }
check "deleted, none of $a's names answers (got: $(for n in $names_a; do echo "$n -> $(q A "$n" | tr '\n' ' ')"; done | tr '\n' ';'))" \
    all_gone
