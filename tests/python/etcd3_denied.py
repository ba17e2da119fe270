"""What the Python `etcd3` client sees when auth refuses: prints one line per step.

Run against a real etcd and against MetaStore (node/tests/auth_conformance.rs compares them),
as a user that may read `a` and nothing else.
Usage: etcd3_denied.py HOST PORT USER PASSWORD
"""
import sys

import etcd3
import grpc

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def step(label, f):
    try:
        print(f"{label}: {f()!r}")
    except grpc.RpcError as e:  # the code and message are what applications branch on
        print(f"{label}: {e.code()} {e.details()}")
    except Exception as e:
        print(f"{label}: {type(e).__name__}: {e}")


step("wrong password", lambda: etcd3.client(host=host, port=port, timeout=10, user=user, password="wrong"))
c = etcd3.client(host=host, port=port, timeout=10, user=user, password=password)
# gRPC Python sends call credentials over TLS only; on this plain channel the token goes in the
# metadata python-etcd3 also attaches (the same for etcd and MetaStore).
c.call_credentials = None
step("get a", lambda: c.get("a")[0])
step("put a", lambda: c.put("a", "x").header.revision > 0)
step("get b", lambda: c.get("b")[0])
step("delete a", lambda: c.delete("a"))
step("txn reading b", lambda: c.transaction(compare=[c.transactions.value("b") == "1"], success=[], failure=[])[0])
anon = etcd3.client(host=host, port=port, timeout=10)
step("anonymous get", lambda: anon.get("a")[0])
