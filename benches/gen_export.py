#!/usr/bin/env python3
"""Writes a realistic scimbridge export file (format 1, docs/EXPORT_FORMAT.md) for
load tests: N users (names, work email, title, department, manager-free), G groups
whose sizes follow a long tail (one "All staff" group with every Nth user up to
--big members), and memberships. `scimbridge import FILE` loads it into an empty
data directory in minutes; benches/load.rs then measures against it.

    python3 benches/gen_export.py --users 1000000 --groups 2000 --big 100000 out.jsonl

Ids are UUIDv7-shaped and increasing (as the bridge assigns them), so the file is
already in id order. Deterministic for a given --seed.
"""
import argparse
import hashlib
import json
import random
import sys

TITLES = ["Software Engineer", "Senior Engineer", "Engineering Manager", "Accountant",
          "Sales Representative", "Designer", "Support Specialist", "Recruiter",
          "Product Manager", "Data Analyst", "Marketing Lead", "Office Manager"]
DEPARTMENTS = ["R&D", "Finance", "Sales", "Design", "Support", "People", "Product",
               "Marketing", "Operations"]
GIVEN = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan",
         "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent",
         "Victor", "Walter", "Yara", "Zoe", "Ahmed", "Mei", "Sanjay", "Ingrid"]
FAMILY = ["Smith", "Jones", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Anderson",
          "Thomas", "Taylor", "Moore", "Martin", "Lee", "Clark", "Lewis", "Walker",
          "Young", "King", "Wright", "Scott", "Nguyen", "Hill", "Kim", "Patel"]
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
STAMP = "2026-11-01T00:00:00.000Z"


def uuid7(ms, counter, rnd):
    """A UUIDv7-shaped id: 48-bit milliseconds, a 12-bit counter, random rest."""
    a = ms & 0xFFFFFFFFFFFF
    b = 0x7000 | (counter & 0x0FFF)
    c = 0x8000 | rnd.getrandbits(14)
    d = rnd.getrandbits(48)
    return f"{a >> 16:08x}-{a & 0xFFFF:04x}-{b:04x}-{c:04x}-{d:012x}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--big", type=int, default=100_000,
                    help="members of the largest group (All staff)")
    ap.add_argument("--per-user", type=float, default=1.4,
                    help="average memberships per user outside the big group")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    digest = hashlib.sha256()
    lines = 0
    out = open(args.out, "w", encoding="utf-8", newline="\n")

    def emit(obj):
        nonlocal lines
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"
        digest.update(text.encode("utf-8"))
        out.write(text)
        lines += 1

    ms = 1_790_000_000_000
    users = []
    for i in range(args.users):
        users.append(uuid7(ms + i // 4096, i % 4096, rnd))
    gms = ms + args.users // 4096 + 10
    groups = [uuid7(gms + i // 4096, i % 4096, rnd) for i in range(args.groups)]

    # Memberships: the big group takes every k-th user; the others get a long tail
    # of sizes (many small teams, a few large departments).
    step = max(1, args.users // max(1, args.big))
    members = {groups[0]: users[::step][: args.big]} if groups else {}
    rest = int(args.users * args.per_user)
    weights = [1.0 / (i + 1) for i in range(1, len(groups))]
    total_w = sum(weights) or 1.0
    for gi, w in zip(range(1, len(groups)), weights):
        n = max(3, min(args.users, int(rest * w / total_w)))
        start = rnd.randrange(0, max(1, args.users - n))
        members[groups[gi]] = users[start:start + n]
    memberships = sum(len(v) for v in members.values())

    emit({"type": "manifest", "format": "scimbridge-export", "formatVersion": 1,
          "sourceVersion": "gen_export.py", "exportedAt": STAMP,
          "counts": {"users": args.users, "groups": args.groups,
                     "memberships": memberships}})
    for i, uid in enumerate(users):
        given, family = GIVEN[i % len(GIVEN)], FAMILY[(i // 7) % len(FAMILY)]
        user_name = f"{given.lower()}.{family.lower()}.{i}@example.com"
        attrs = {
            "userName": user_name,
            "externalId": f"00u{i:09d}",
            "name": {"givenName": given, "familyName": family,
                     "formatted": f"{given} {family}"},
            "displayName": f"{given} {family}",
            "emails": [{"value": user_name, "type": "work", "primary": True}],
            "title": TITLES[rnd.randrange(len(TITLES))],
            "active": i % 50 != 0,
            ENTERPRISE: {"department": DEPARTMENTS[i % len(DEPARTMENTS)],
                         "employeeNumber": str(100000 + i)},
        }
        emit({"type": "User", "id": uid,
              "meta": {"created": STAMP, "lastModified": STAMP, "version": 1},
              "attributes": attrs})
    for i, gid in enumerate(groups):
        name = "All staff" if i == 0 else f"Team {i:05d}"
        emit({"type": "Group", "id": gid,
              "meta": {"created": STAMP, "lastModified": STAMP, "version": 1},
              "attributes": {"displayName": name, "externalId": f"00g{i:09d}"}})
    for gid in groups:
        for m in members.get(gid, []):
            emit({"type": "membership", "group": gid, "member": m, "memberType": "User"})
    # The trailer's hash covers every preceding line (newlines included).
    trailer = {"type": "trailer", "sha256": digest.hexdigest(), "lines": lines}
    out.write(json.dumps(trailer, separators=(",", ":")) + "\n")
    out.close()
    print(f"{args.out}: {args.users} users, {args.groups} groups, "
          f"{memberships} memberships, {lines + 1} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
