# The harness of the tenant suites run on a CoaL (tests/isolation.sh, tests/fabrics.sh),
# sourced with TRITON_TOOL set to the suite's name: it loads scripts/lib.sh, works from the repository's root, and takes the CoaL in $COAL_DIR
# (by default /var/tmp/triton-coal-$TRITON_TOOL).
#   set -euo pipefail
#   TRITON_TOOL=name
#   . "$(dirname "$0")/suite.sh"
# It gives:
#   ok/bad/check     count a check (a failed one is listed at the end; the suite goes on);
#   instances+=(N)   instances the suite made, deleted at the end whatever happens;
#   suite_cleanup    a function the suite may define, run at the end before that;
#   coal_for_suite   uses the CoaL up in $COAL_DIR, or brings one up (with the given
#                    `scripts/coal up` options) and takes it down at the end.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$TRITON_ROOT"
export COAL_DIR=${COAL_DIR:-/var/tmp/triton-coal-$TRITON_TOOL}
own_coal=0
passed=0
failures=()
instances=()

aborted_at=?
trap 'aborted_at=$LINENO' ERR
finish() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ ${#failures[@]} -eq 0 ]; then
        failures+=("the suite stopped early (exit $rc) at line $aborted_at")
    fi
    for name in "${instances[@]}"; do
        triton instance delete -f -w "$name" >/dev/null 2>&1 || true
    done
    if declare -F suite_cleanup >/dev/null; then suite_cleanup || true; fi
    if [ "$own_coal" = 1 ]; then scripts/coal down >/dev/null 2>&1 || true; fi
    echo "$TRITON_TOOL: ${passed} passed, ${#failures[@]} failed"
    if [ ${#failures[@]} -gt 0 ]; then
        printf '  FAILED: %s\n' "${failures[@]}" >&2
        exit 1
    fi
    exit "$rc"
}
trap finish EXIT

ok() { passed=$((passed + 1)); step "ok: $1"; }
bad() { failures+=("$1"); step "FAILED: $1"; }
check() { # what, then a command that must succeed
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

coal_for_suite() { # scripts/coal up options
    if scripts/coal status >/dev/null 2>&1; then
        step "using the CoaL up in $COAL_DIR"
    else
        step "bringing up a CoaL in $COAL_DIR ${*:+($*)}"
        own_coal=1
        scripts/coal up "$@"
    fi
    eval "$(scripts/coal env)"
}

# Small helpers every suite uses:
#   json EXPR        prints EXPR of the JSON on stdin, as `d` (python3);
#   not CMD...       succeeds when CMD fails;
#   within SECS CMD  retries CMD every 0.5 s for up to SECS s (a hang guard, not a timing
#                    check) and prints how long it took.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
not() { ! "$@"; }
within() {
    local secs=$1 start=$SECONDS; shift
    while [ $((SECONDS - start)) -lt "$secs" ]; do
        if "$@"; then
            echo "    (after $((SECONDS - start)) s)" >&2
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# Running commands inside instances:
#   coal_tool NAME WHERE  dies unless CoaL installed $COAL_DIR/bin/NAME (WHERE says where);
#   zl ARGS...            CoaL's zlogin, which reads cn-agent's config for its state dir
#                         and cgroup parent;
#   inside INST CMD       runs shell command CMD inside instance INST, on whichever linux
#                         node holds it (coal-zlogin).
coal_tool() {
    [ -x "$COAL_DIR/bin/$1" ] || die "$COAL_DIR/bin/$1 is missing: CoaL installs it $2"
}
zl() { "$COAL_DIR/bin/zlogin" --config "$COAL_DIR/etc/cn-agent.toml" "$@"; }
inside() { "$COAL_DIR/bin/coal-zlogin" "$1" /bin/sh -c "$2"; }

# A second account, for the checks of what one account may not see of another's:
#   other_account NAME DIR  makes account NAME (`sdcadm account create`) with a new ECDSA
#                           key in DIR, held by an ssh-agent of its own (DIR/agent.sock;
#                           its pid in agent_pid, for the suite's cleanup to kill);
#   as_other ARGS...        `triton ARGS` as that account.
other_account() {
    other_name=$1 other_dir=$2
    mkdir -p "$other_dir"
    ssh-keygen -q -t ecdsa -b 256 -N '' -C "$other_name" -f "$other_dir/id_ecdsa"
    step "sdcadm account create $other_name"
    sdcadm account create "$other_name" --key "$other_dir/id_ecdsa.pub" >/dev/null
    agent_pid=$(ssh-agent -s -a "$other_dir/agent.sock" | sed -n 's/^SSH_AGENT_PID=\([0-9]*\);.*/\1/p')
    SSH_AUTH_SOCK=$other_dir/agent.sock ssh-add -q "$other_dir/id_ecdsa"
    other_fp=$(ssh-keygen -E md5 -lf "$other_dir/id_ecdsa.pub" | awk '{print $2}' | sed 's/^MD5://')
}
as_other() {
    SSH_AUTH_SOCK=$other_dir/agent.sock TRITON_ACCOUNT=$other_name SDC_ACCOUNT=$other_name \
        TRITON_KEY_ID=$other_fp SDC_KEY_ID=$other_fp triton "$@"
}
