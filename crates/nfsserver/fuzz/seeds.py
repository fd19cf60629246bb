#!/usr/bin/env python3
"""Writes seeds/rpc/: one RPC stream per NFSv3 and MOUNT v3 procedure, as a client sends
them (record marking, AUTH_SYS as uid 1000, handles as the FH00..FH03 placeholders the
`rpc` target replaces by the scratch export's root, dir, dir/file and link), plus a stream
of three calls, a call in two fragments and a record over the limit."""
import os
import struct

def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def opaque(b): return u32(len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)
def fh(n): return opaque(b"FH0%d" % n + b"\0" * 16)
NO_SATTR = u32(0) * 4 + u32(0) * 2
def sattr(mode=None, size=None):
    out = (u32(1) + u32(mode)) if mode is not None else u32(0)
    out += u32(1) + u32(1000) + u32(1) + u32(1000)
    out += (u32(1) + u64(size)) if size is not None else u32(0)
    return out + u32(1) + u32(2) + u32(1_600_000_000) + u32(0)

def call(xid, prog, proc, args, uid=1000):
    cred = u32(1) + opaque(u32(1) + opaque(b"client") + u32(uid) + u32(uid) + u32(1) + u32(uid))
    body = u32(xid) + u32(0) + u32(2) + u32(prog) + u32(3) + u32(proc) + cred + u32(0) + u32(0) + args
    return body

def rec(body): return u32(0x8000_0000 | len(body)) + body

NFS, MOUNT = 100003, 100005
calls = {
    "mnt": call(1, MOUNT, 1, opaque(b"/exports/data")),
    "export": call(2, MOUNT, 5, b""),
    "null": call(3, NFS, 0, b""),
    "getattr": call(4, NFS, 1, fh(0)),
    "setattr": call(5, NFS, 2, fh(2) + sattr(0o600, 3) + u32(0)),
    "lookup": call(6, NFS, 3, fh(0) + opaque(b"dir")),
    "lookup_dotdot": call(7, NFS, 3, fh(1) + opaque(b"..")),
    "lookup_through_link": call(8, NFS, 3, fh(3) + opaque(b"sentinel")),
    "access": call(9, NFS, 4, fh(2) + u32(0x3f)),
    "readlink": call(10, NFS, 5, fh(3)),
    "read": call(11, NFS, 6, fh(2) + u64(0) + u32(4096)),
    "write": call(12, NFS, 7, fh(2) + u64(2) + u32(5) + u32(2) + opaque(b"world")),
    "create": call(13, NFS, 8, fh(1) + opaque(b"new") + u32(1) + sattr(0o644)),
    "create_exclusive": call(14, NFS, 8, fh(1) + opaque(b"excl") + u32(2) + b"verifier"),
    "mkdir": call(15, NFS, 9, fh(0) + opaque(b"sub") + sattr(0o755)),
    "symlink": call(16, NFS, 10, fh(0) + opaque(b"out") + NO_SATTR + opaque(b"/etc/passwd")),
    "mknod": call(17, NFS, 11, fh(0) + opaque(b"fifo") + u32(7) + NO_SATTR),
    "remove": call(18, NFS, 12, fh(1) + opaque(b"file")),
    "rmdir": call(19, NFS, 13, fh(0) + opaque(b"dir")),
    "rename": call(20, NFS, 14, fh(1) + opaque(b"file") + fh(0) + opaque(b"moved")),
    "link": call(21, NFS, 15, fh(2) + fh(0) + opaque(b"hard")),
    "readdir": call(22, NFS, 16, fh(0) + u64(0) + b"\0" * 8 + u32(4096)),
    "readdirplus": call(23, NFS, 17, fh(0) + u64(0) + b"\0" * 8 + u32(512) + u32(4096)),
    "fsstat": call(24, NFS, 18, fh(0)),
    "fsinfo": call(25, NFS, 19, fh(0)),
    "pathconf": call(26, NFS, 20, fh(0)),
    "commit": call(27, NFS, 21, fh(2) + u64(0) + u32(0)),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "rpc")
os.makedirs(out, exist_ok=True)
for name, body in calls.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(rec(body))
with open(os.path.join(out, "stream"), "wb") as f:
    f.write(rec(calls["lookup"]) + rec(calls["write"]) + rec(calls["readdirplus"]))
with open(os.path.join(out, "fragments"), "wb") as f:
    body = calls["read"]
    f.write(u32(8) + body[:8] + u32(0x8000_0000 | (len(body) - 8)) + body[8:])
with open(os.path.join(out, "too_large"), "wb") as f:
    f.write(u32(0xffff_ffff) + calls["null"])
