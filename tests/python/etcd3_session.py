"""One scripted session with the Python `etcd3` client; prints one normalized line per step.

Run against a real etcd and against MetaStore; node/tests/etcd_conformance.rs compares the two.
Usage: etcd3_session.py HOST PORT [USER PASSWORD]   (with auth on, as that user)
"""
import sys
import threading

import etcd3

host, port = sys.argv[1], int(sys.argv[2])
user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
c = etcd3.client(host=host, port=port, timeout=10, user=user, password=password)
# gRPC Python sends call credentials over TLS only; on this plain channel the token goes in the
# metadata python-etcd3 also attaches (the same for etcd and MetaStore).
c.call_credentials = None
c.watcher._credentials = None
out = []


def rec(label, value):
    out.append(f"{label}: {value!r}")


def err(label, f):
    try:
        f()
        rec(label, "no error")
    except Exception as e:  # the exception type and message are what clients see
        rec(label, f"{type(e).__name__}: {e}")


r = c.put("a", "1")
first = r.header.revision
rec("put a", first)
rec("put b", c.put("b", "2").header.revision)
r = c.put("a", "3", prev_kv=True)
rec("put a prev", (r.header.revision, r.prev_kv.value))
v, m = c.get("a")
rec("get a", (v, m.key, m.create_revision, m.mod_revision, m.version))
rec("get prefix", sorted((v, m.key) for v, m in c.get_prefix("a")))
rec("get all sorted", [m.key for _, m in c.get_all(sort_order="descend", sort_target="key")])
ok, responses = c.transaction(
    compare=[c.transactions.value("a") == "3", c.transactions.version("b") > 0],
    success=[c.transactions.put("c", "4"), c.transactions.get("a")],
    failure=[c.transactions.put("c", "5")],
)
rec("txn", (ok, len(responses)))
ok, _ = c.transaction(
    compare=[c.transactions.mod("a") < 2],
    success=[c.transactions.put("c", "6")],
    failure=[c.transactions.delete("b")],
)
rec("txn failure branch", ok)
rec("get c", c.get("c")[0])
rec("delete b again", c.delete("b"))
rec("delete c prev", c.delete("c", prev_kv=True))

# Watch: history replay from the first revision, with prev_kv.
events, cancel = c.watch_prefix("a", start_revision=first, prev_kv=True)
seen = []
timer = threading.Timer(2.0, cancel)
timer.start()
for e in events:
    seen.append(
        (
            type(e).__name__,
            e.key,
            e.value,
            e.mod_revision,
            e.prev_value if hasattr(e, "prev_value") else None,
        )
    )
    if len(seen) == 2:
        break
cancel()
timer.cancel()
rec("watch replay", seen)

# Leases with attached keys.
lease = c.lease(100)
c.put("leased", "v", lease=lease)
rec("lease ttl", (lease.granted_ttl, lease.remaining_ttl >= 98))
rec("lease keys", sorted(lease.keys))
rec("lease refresh", [r.TTL for r in lease.refresh()])
lease.revoke()
rec("leased key after revoke", c.get("leased")[0])
rec("revoked lease ttl", lease.remaining_ttl)
err("put unknown lease", lambda: c.put("x", "v", lease=0x1234ABCD))

# Compaction and its errors.
now = c.get("a")[1].mod_revision
c.compact(now)
err("compact again", lambda: c.compact(first))

# Shapes of status and member list.
s = c.status()
rec("status", (s.version is not None, s.db_size > 0, s.leader is not None, s.raft_term > 0))
members = list(c.members)
rec("members", [(len(m.peer_urls), len(m.client_urls)) for m in members])

print("\n".join(out))
