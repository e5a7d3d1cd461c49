#!/usr/bin/env python3
"""Instructions per request of the hot paths (docs/PERFORMANCE.md, "Per-request CPU").

    callgrind_requests.py BIN DATA_DIR [--n N] [--only a,b] [--keep DIR] [--clients K]

Copies DATA_DIR (a directory loaded with `import`, e.g. from
`gen_export.py --users 10000 --groups 500 --big 5000`) to a temporary directory,
issues a token, starts `BIN serve` there under valgrind's callgrind with
instrumentation on only around the measured requests, and for each scenario sends a
few warm-up requests and then N requests on one keep-alive TLS connection, zeroing
the counters before and dumping them after. Prints the user-space instructions per
request of the whole server (every thread: tokio workers, the store's writer).
Kernel time (fsync, network) is not counted: the count does not depend on the
machine's load. Only talks to 127.0.0.1; every loop is bounded.

`--clients K` sends the N measured `create`s from K connections at once, so the
store's writer batches them into group commits as it does under load (the count per
request then includes the commit's share; one client commits every create alone).
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

SCENARIOS = ["healthz", "me", "get", "get-nogroups", "lookup", "create", "patch", "group-add", "group-remove"]
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("data_dir")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--keep", help="copy each scenario's callgrind dump here "
                    "(for callgrind_annotate)")
    ap.add_argument("--clients", type=int, default=1,
                    help="connections sending the measured creates at once")
    args = ap.parse_args()
    only = args.only.split(",")

    work = tempfile.mkdtemp(prefix="cgreq-")
    data = os.path.join(work, "data")
    shutil.copytree(args.data_dir, data)
    token = subprocess.run([args.bin, "--data-dir", data, "token", "issue", "--name", "cg"],
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    out = os.path.join(work, "cg.out")
    log = open(os.path.join(work, "log"), "w+")
    env = dict(os.environ, SCIMBRIDGE_LOG="warn,scimbridge::cli=info,scimbridge::server=info")
    srv = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                            f"--callgrind-out-file={out}", args.bin, "--data-dir", data,
                            "serve", "--listen", "127.0.0.1:0"], stderr=log, env=env)
    try:
        url = None
        deadline = time.time() + 300
        while url is None and time.time() < deadline:
            log.seek(0)
            m = re.search(r"identity provider: https://([0-9.]+):(\d+)(/\S*)", log.read())
            if m:
                url = m
            else:
                time.sleep(0.2)
        if url is None:
            sys.exit("the server did not start: " + open(log.name).read()[-2000:])
        host, port, prefix = url.group(1), int(url.group(2)), url.group(3).rstrip("/")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # One keep-alive connection per client thread, opened (TLS handshake) before
        # the counters are zeroed.
        conns = [http.client.HTTPSConnection(host, port, context=ctx, timeout=120)
                 for _ in range(max(1, args.clients))]
        local = threading.local()

        def req(method, path, body=None, scim=True):
            conn = getattr(local, "conn", conns[0])
            headers = {"Authorization": f"Bearer {token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/scim+json"
            conn.request(method, (prefix if scim else "") + path, body=data, headers=headers)
            r = conn.getresponse()
            text = r.read()
            return r.status, text

        def cg(*a):
            subprocess.run(["callgrind_control", *a, str(srv.pid)], capture_output=True, check=True)

        def commits():
            """The store's group commits so far (`/metrics`)."""
            st, body = req("GET", "/metrics", scim=False)
            m = re.search(rb"^scimbridge_storage_commits_total (\d+)", body, re.M)
            return int(m.group(1)) if m else 0

        # Ids to work on.
        st, body = req("GET", "/Users?count=400&attributes=userName,groups")
        users = json.loads(body)["Resources"]
        in_groups = [u for u in users if u.get("groups")]
        # gen_export.py names its largest group "All staff".
        st, body = req("GET", '/Groups?filter=displayName%20eq%20%22All%20staff%22&attributes=id')
        big_id = json.loads(body)["Resources"][0]["id"]
        st, body = req("GET", f"/Groups/{big_id}?attributes=members")
        members = {m["value"] for m in json.loads(body).get("members", [])}
        outsiders = [u["id"] for u in users if u["id"] not in members]
        print(f"# {len(in_groups)}/{len(users)} sampled users are in groups; "
              f"\"All staff\" has {len(members)} members; {len(outsiders)} sampled users are not in it")
        sample = in_groups or users
        plain = [u for u in users if not u.get("groups")] or users
        big = (big_id, len(members))

        n = args.n
        stamp = str(os.getpid())

        def scenario(name, i):
            if name == "healthz":
                return req("GET", "/healthz", scim=False)
            if name == "me":  # the bearer check, then a 501 (RFC 7644 §3.11)
                return req("GET", "/Me")
            if name == "get":
                return req("GET", f"/Users/{sample[i % len(sample)]['id']}")
            if name == "get-nogroups":  # as the load harness's users
                return req("GET", f"/Users/{plain[i % len(plain)]['id']}")
            if name == "lookup":
                u = sample[i % len(sample)]["userName"]
                return req("GET", f'/Users?filter=userName%20eq%20%22{u}%22')
            if name == "create":
                return req("POST", "/Users", {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": f"cg{stamp}.{i}@example.com", "externalId": f"x{stamp}-{i}",
                    "name": {"givenName": "Cg", "familyName": f"User{i}"},
                    "displayName": f"Cg User {i}",
                    "emails": [{"value": f"cg{stamp}.{i}@example.com", "type": "work", "primary": True}],
                    "title": "Engineer", "active": True})
            if name == "patch":
                return req("PATCH", f"/Users/{sample[i % len(sample)]['id']}", {
                    "schemas": [PATCH_URN],
                    "Operations": [{"op": "replace", "path": "title", "value": f"Title {i}"}]})
            if name in ("group-add", "group-remove"):
                who = outsiders[i % len(outsiders)]
                op = ({"op": "add", "path": "members", "value": [{"value": who}]}
                      if name == "group-add" else
                      {"op": "remove", "path": f'members[value eq "{who}"]'})
                return req("PATCH", f"/Groups/{big[0]}", {"schemas": [PATCH_URN], "Operations": [op]})
            raise ValueError(name)

        cg("-i", "on")
        results = {}
        for name in SCENARIOS:
            if name not in only:
                continue
            # Warm-up on indices not measured (group-remove removes, in the same
            # order, the members group-add added).
            for i in range(3):
                scenario(name, n + i)
            if name == "create":
                for k in range(1, args.clients):
                    local.conn = conns[k]
                    scenario(name, n + 3 + k)
                local.conn = conns[0]
            before = set(glob.glob(out + "*"))
            cg("-z")
            codes = {}
            clients = args.clients if name == "create" else 1

            def share(k):
                local.conn = conns[k]
                for i in range(k, n, clients):
                    st, _ = scenario(name, i)
                    with lock:
                        codes[st] = codes.get(st, 0) + 1
            lock = threading.Lock()
            commits0 = commits()
            threads = [threading.Thread(target=share, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cg("-d", name)
            batch = f", {n / max(1, commits() - commits0):.1f} writes per commit" if name == "create" else ""
            dumps = sorted(set(glob.glob(out + "*")) - before, key=os.path.getmtime)
            total = 0
            for d in dumps:
                for line in open(d):
                    if line.startswith("totals:") or line.startswith("summary:"):
                        total = max(total, int(line.split()[1]))
            results[name] = total / n
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                for d in dumps:
                    shutil.copy(d, os.path.join(args.keep, f"callgrind.{name}"))
            print(f"{name:13s} {total / n:12,.0f} instructions/request  (n={n}, status {codes}{batch})",
                  flush=True)
        cg("-i", "off")
        return results
    finally:
        srv.terminate()
        srv.wait(timeout=120)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
