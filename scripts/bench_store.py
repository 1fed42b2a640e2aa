#!/usr/bin/env python3
"""The shared gallery at scale: `make bench-store` (or `python3 scripts/bench_store.py --people N`).

Starts Debian's PostgreSQL 15 on a free loopback port in a temporary folder (as `nobody` when
run as root), lets vigil create its schema, loads N synthetic people of one 128-value embedding
each straight into the tables (COPY, as vigil's own writes would have left them), then times:

1. cold start: `vigil gallery index` on a node with no cache: the whole store read in one
   snapshot, the cache written, the search index built (HNSW above gallery.index.hnsw_above)
   and persisted beside the cache;
2. warm start: the same again, nothing changed (the cache and the persisted index are current);
3. catch-up: 1000 changes (enrolments of new people) committed to the store, then the same
   command: the 1000 changes replayed past the watermark, the cache saved, the persisted HNSW
   index loaded and the new rows inserted in place (an exact index is simply rebuilt);
4. one change: one more enrolment committed, then the same command.

Prints one markdown table; `--out FILE` also writes it into FILE between the lines
`<!-- bench-store begin -->` and `<!-- bench-store end -->` (docs/scaling.md; `make bench`
does). Standard library only. Default N is 1,000,000 (the HNSW build alone takes tens of minutes
on 2 cores, and several GB of RAM and disk); `--people 100000` takes a few minutes.
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "bench-pw"


def owner(cmd):
    return (["runuser", "-u", "nobody", "--"] if os.getuid() == 0 else []) + cmd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_vigil():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = target / "release" / "vigil"
    if not exe.exists():
        sys.exit(f"{exe} is missing: run `cargo build --release` first")
    return exe


def built(rel):
    p = ROOT / "build" / rel
    if not p.exists():
        sys.exit(f"{p} is missing: run `make setup` first")
    return p


class Server:
    def __init__(self, tmp):
        self.dir = Path(tmp) / "pg"
        self.dir.mkdir()
        self.port = free_port()
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.dir)], check=True)
        pw = self.dir / "pw"
        pw.write_text("admin")
        if os.getuid() == 0:
            subprocess.run(["chown", "nobody:nogroup", str(pw)], check=True)
        subprocess.run(owner([str(PG / "initdb"), "-D", str(self.dir / "data"), "-U", "admin",
                              "--auth-local=trust", "--auth-host=scram-sha-256",
                              f"--pwfile={pw}", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(owner([str(PG / "pg_ctl"), "-D", str(self.dir / "data"), "-o", opts,
                              "-w", "-l", str(self.dir / "log"), "start"]),
                       check=True, capture_output=True)
        self.sql("postgres", "CREATE DATABASE vigil")
        self.sql("postgres", f"CREATE ROLE vigil LOGIN PASSWORD '{PASSWORD}'")
        self.sql("vigil", "GRANT ALL ON SCHEMA public TO vigil")

    def psql(self, db, *args, stdin=None):
        return subprocess.run(owner([str(PG / "psql"), "-h", str(self.dir), "-p", str(self.port),
                                     "-U", "admin", "-d", db, "-v", "ON_ERROR_STOP=1", "-At",
                                     *args]),
                              input=stdin, check=True, capture_output=True).stdout.decode()

    def sql(self, db, sql):
        return self.psql(db, "-c", sql)

    def stop(self):
        subprocess.run(owner([str(PG / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                              "immediate", "stop"]), capture_output=True)


def config(folder, port, index="auto"):
    folder.mkdir(parents=True, exist_ok=True)
    m = lambda n: built(f"models/{n}")
    text = f"""streams:
  - {{id: none, url: {built('media/faces_demo.mp4')}}}
faces:
  enabled: true
  detector: {{type: mtcnn, pnet: {m('mtcnn_pnet.onnx')}, rnet: {m('mtcnn_rnet.onnx')}, onet: {m('mtcnn_onet.onnx')}}}
  embedder: {{path: {m('dlib_resnet.onnx')}}}
gallery:
  path: {folder / 'gallery.json'}
  index: {{kind: {index}}}
  postgres: {{url: 'postgres://vigil:{PASSWORD}@127.0.0.1:{port}/vigil'}}
runtime:
  onnxruntime_library: {built('lib/libonnxruntime.so')}
"""
    p = folder / "config.yaml"
    p.write_text(text)
    return p


def timed(vigil, cfg, verb="index"):
    """Runs `vigil gallery VERB` on the node: (seconds, its log, its JSON answer)."""
    started = time.monotonic()
    out = subprocess.run([str(vigil), "gallery", verb, "--json", "--config", str(cfg)],
                         capture_output=True, env={**os.environ, "VIGIL_LOG": "info"})
    took = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"vigil gallery {verb} failed:\n{out.stderr.decode()}")
    return took, out.stderr.decode(), json.loads(out.stdout)


def rows(first, count, change0, rng):
    """COPY text for `count` people from number `first`, one change each from `change0`."""
    changes, people, embeddings = [], [], []
    for i in range(count):
        name, cid = f"person {first + i:07d}", change0 + i
        vec = struct.pack("<128f", *(rng.gauss(0.0, 0.1) for _ in range(128)))
        changes.append(f"{cid}\tenroll\t{name}\n")
        people.append(f"{name}\t{cid}\n")
        embeddings.append(f"{cid}\t{name}\t\\\\x{vec.hex()}\tsynthetic\n")
    return "".join(changes), "".join(people), "".join(embeddings)


def load(server, first, count, change0, rng):
    """Commits `count` enrolments the way vigil's writes leave them (one transaction)."""
    chunk = 50_000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        c, p, e = rows(first + start, n, change0 + start, rng)
        script = (
            "BEGIN;\n"
            "COPY vigil_changes (id, kind, name) FROM STDIN;\n" + c + "\\.\n"
            "COPY vigil_people (name, since_change) FROM STDIN;\n" + p + "\\.\n"
            "COPY vigil_embeddings (change_id, name, embedding, source) FROM STDIN;\n" + e + "\\.\n"
            "SELECT setval('vigil_changes_id_seq', (SELECT max(id) FROM vigil_changes));\n"
            "COMMIT;\n"
        )
        server.psql("vigil", "-f", "-", stdin=script.encode())


BEGIN, END = "<!-- bench-store begin -->", "<!-- bench-store end -->"


def write_into(path, table):
    """Replaces what is between the markers in `path` with `table` (temp file, then rename)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{path} has no `{BEGIN}` ... `{END}` section to write the table into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    when = time.strftime("%Y-%m-%d", time.gmtime())
    body = f"{BEGIN}\n<!-- written by scripts/bench_store.py on {when} -->\n\n{table}\n\n{END}"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(head + body + tail)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--index", choices=["auto", "exact", "hnsw"], default="auto",
                    help="gallery.index.kind of the timed node; `exact` leaves out the HNSW "
                         "build and shows the store's own share")
    ap.add_argument("--out", help="also write the table into this markdown file, between "
                    "`<!-- bench-store begin -->` and `<!-- bench-store end -->`")
    args = ap.parse_args()
    if not (PG / "initdb").exists():
        sys.exit(f"{PG}/initdb is missing: install postgresql-15")
    vigil = find_vigil()
    rng = random.Random(7)
    tmp = tempfile.mkdtemp(prefix="vigil-bench-store")
    os.chmod(tmp, 0o755)
    server = Server(tmp)
    try:
        # vigil makes its schema on first contact.
        timed(vigil, config(Path(tmp) / "seed", server.port), "list")
        started = time.monotonic()
        load(server, 0, args.people, 1, rng)
        loaded = time.monotonic() - started
        node = config(Path(tmp) / "node", server.port, args.index)
        cold, cold_log, cold_ix = timed(vigil, node)
        warm, _, warm_ix = timed(vigil, node)
        load(server, args.people, args.changes, args.people + 1, rng)
        catch_up, log, catch_ix = timed(vigil, node)
        if f"applied {args.changes} changes" not in log:
            sys.exit(f"the node did not replay {args.changes} changes:\n{log}")
        load(server, args.people + args.changes, 1, args.people + args.changes + 1, rng)
        one, one_log, one_ix = timed(vigil, node)
        if "applied 1 changes" not in one_log:
            sys.exit(f"the node did not replay the one change:\n{one_log}")

        def part(pattern, log):
            m = re.search(pattern, log)
            return float(m.group(1)) if m else float("nan")

        def how(ix):
            return {"built": "built", "loaded": "loaded", "caught_up": "changed in place",
                    None: "exact, built"}[ix["origin"]]

        cold_sync = part(r"people whole in ([0-9.]+) s", cold_log)
        catch_sync = part(r"changes after change [0-9]+ in ([0-9.]+) s", log)
        one_sync = part(r"changes after change [0-9]+ in ([0-9.]+) s", one_log)
        size = server.sql("vigil", "SELECT pg_size_pretty(pg_database_size('vigil'))").strip()
        kind = cold_ix["kind"]
        lines = [
            f"| shared gallery, {args.people:,} people, index {args.index} ({kind}), `vigil gallery index` | whole command, s | read from PostgreSQL and cache saved, s | index, s |",
            "|---|---|---|---|",
            f"| load into PostgreSQL (COPY, {size} on disk) | {loaded:.1f} | | |",
            f"| cold start of a fresh node (snapshot, cache, index {how(cold_ix)}) | {cold:.1f} | {cold_sync:.2f} | {cold_ix['seconds']:.2f} |",
            f"| warm start, nothing changed (models loaded, index {how(warm_ix)}) | {warm:.1f} | | {warm_ix['seconds']:.2f} |",
            f"| catch-up of {args.changes} changes (replay, cache, index {how(catch_ix)}) | {catch_up:.1f} | {catch_sync:.2f} | {catch_ix['seconds']:.2f} |",
            f"| one change (replay, cache, index {how(one_ix)}) | {one:.1f} | {one_sync:.2f} | {one_ix['seconds']:.2f} |",
        ]
        table = "\n".join(lines)
        print(table)
        if args.out:
            write_into(Path(args.out), table)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
