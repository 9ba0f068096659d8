"""Seeds many keys of one owner straight into keyward's database, in seconds rather than
the minutes CreateApiKey calls would take: each a copy of a template key the owner already
has (made through the API, so every column holds what keyward writes), with a secret of
its own whose keyed hash is computed here as keyward computes it. Keeps the owner's quota
count (`quota_locks.held`) and, with --audit, writes one audit event per key.

  python3 seed_direct.py <sqlite path | postgres database> <owner> <count> <hash secret>
      [--secrets FILE] [--audit]
PostgreSQL databases are reached with psql on 127.0.0.1 as postgres.
"""
import argparse, hashlib, hmac, io, random, sqlite3, string, subprocess, sys, uuid, zlib


BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


RANDOM = random.Random()


def secret(prefix):
    """A secret of keyward's shape: prefix, 43 random base62 characters, base62 CRC32.
    Drawn from a seeded-at-start PRNG, not a CSPRNG: these are benchmark keys, made by
    the million."""
    head = f"{prefix}_" + "".join(RANDOM.choices(BASE62, k=43))
    value, sum_ = zlib.crc32(head.encode()), []
    for _ in range(6):
        sum_.append(BASE62[value % 62])
        value //= 62
    return head + "".join(reversed(sum_))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("owner")
    parser.add_argument("count", type=int)
    parser.add_argument("hash_secret")
    parser.add_argument("--prefix", default="kw_live")
    parser.add_argument("--secrets")
    parser.add_argument("--audit", action="store_true")
    args = parser.parse_args()
    key = args.hash_secret.encode()
    mac = hmac.new(key, digestmod=hashlib.sha256)
    version = int.from_bytes(hashlib.sha256(b"keyward hash secret id\0" + key).digest()[:4], "big")
    rows, lines = [], []
    for _ in range(args.count):
        text = secret(args.prefix)
        digest = mac.copy()
        digest.update(text.encode())
        rows.append((uuid.uuid4(), digest.hexdigest()))
        lines.append(text)
    if args.secrets:
        with open(args.secrets, "w") as out:
            out.write("\n".join(lines) + "\n")
    if args.database.endswith(".db"):
        sqlite(args, rows, version)
    else:
        postgres(args, rows, version)
    print(f"seeded {args.count} keys of {args.owner}", file=sys.stderr)


def copy_keys_sql(columns, owner, count, version, audit, has_held, has_key_owner, id_text):
    """The statements that copy the template into the seeded ids (table `seed`)."""
    others = [c for c in columns if c not in ("number", "id")]
    template = f"(SELECT * FROM api_keys WHERE owner = '{owner}' ORDER BY number LIMIT 1)"
    listed = ", ".join(others)
    sql = [
        f"INSERT INTO api_keys (id, {listed}) SELECT seed.id, {', '.join('t.' + c for c in others)} "
        f"FROM seed, {template} AS t",
        f"INSERT INTO api_key_secrets (secret_hash, hash_version, key_id, created_at, expires_at) "
        f"SELECT seed.secret_hash, {version}, seed.id, t.created_at, NULL FROM seed, {template} AS t",
    ]
    if has_held:
        sql.append(
            f"UPDATE quota_locks SET held = held + {count} WHERE owner = '{owner}' AND environment = "
            f"(SELECT environment FROM {template} AS t)"
        )
    if audit:
        extra, values = ("", "")
        if has_key_owner:
            extra, values = (", key_owner, key_organization", ", t.owner, t.organization_id")
        sql.append(
            f"INSERT INTO audit_events (actor, action, target, request_id, outcome, occurred_at{extra}) "
            f"SELECT 'seed', 'CreateKey', {id_text}, NULL, 'OK', t.created_at{values} FROM seed, {template} AS t"
        )
    return sql


def sqlite(args, rows, version):
    db = sqlite3.connect(args.database, isolation_level=None, timeout=30)
    columns = [row[1] for row in db.execute("PRAGMA table_info(api_keys)")]
    has_held = any(row[1] == "held" for row in db.execute("PRAGMA table_info(quota_locks)"))
    has_key_owner = any(row[1] == "key_owner" for row in db.execute("PRAGMA table_info(audit_events)"))
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TEMP TABLE seed (id BLOB, id_text TEXT, secret_hash TEXT)")
    db.executemany("INSERT INTO seed VALUES (?, ?, ?)", ((i.bytes, str(i), h) for i, h in rows))
    for statement in copy_keys_sql(columns, args.owner, len(rows), version, args.audit, has_held, has_key_owner,
                                   "seed.id_text"):
        db.execute(statement)
    db.execute("COMMIT")


def postgres(args, rows, version):
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", args.database, "-qAt", "-v", "ON_ERROR_STOP=1"]
    query = lambda sql: subprocess.run(psql + ["-c", sql], check=True, capture_output=True, text=True).stdout.split()
    columns = query("SELECT column_name FROM information_schema.columns WHERE table_name = 'api_keys' "
                    "ORDER BY ordinal_position")
    has_held = "held" in query("SELECT column_name FROM information_schema.columns WHERE table_name = 'quota_locks'")
    has_key_owner = "key_owner" in query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events'")
    script = io.StringIO()
    script.write("BEGIN;\nCREATE TEMP TABLE seed (id uuid, secret_hash text);\nCOPY seed FROM STDIN WITH (FORMAT csv);\n")
    for i, h in rows:
        script.write(f"{i},{h}\n")
    script.write("\\.\n")
    for statement in copy_keys_sql(columns, args.owner, len(rows), version, args.audit, has_held, has_key_owner,
                                   "CAST(seed.id AS TEXT)"):
        script.write(statement + ";\n")
    script.write("COMMIT;\n")
    subprocess.run(psql, input=script.getvalue(), check=True, text=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
