#!/usr/bin/env python3
"""The storage floor of firing campaign sends (docs/BENCHMARKS.md, "Timers").

Writes, with nothing else, the rows one campaign-send firing commits in Volley's
SQLite store: the send's timer deleted, a conversation row inserted (time-sorted id,
a 250-byte state) and its four log entries (enter, message, enter, end), in
transactions of 512 firings, with the server's own schema (its migrations), WAL and
fsync on every commit, among a table of other pending timers. No flow runs, no
server, no network: the rate it reaches is what SQLite on this disk allows for these
rows, the ceiling for `volley-load timers`' backlog measurement.

    python3 bench/timers_floor.py --backlog 1000000 --pending 5000000
"""

import argparse
import glob
import os
import random
import sqlite3
import tempfile
import time

MIGRATIONS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "crates", "volley-store", "migrations", "sqlite", "*.sql",
)
BATCH = 512  # volley-store's MAX_BATCH


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backlog", type=int, default=1_000_000, help="overdue sends fired")
    ap.add_argument("--pending", type=int, default=0, help="other timers, not due")
    ap.add_argument("--contacts", type=int, default=1_000_000)
    a = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="volley-floor-")
    db = os.path.join(workdir, "floor.db")
    c = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                   "cache_size=-32768", "wal_autocheckpoint=10000", "temp_store=memory"):
        c.execute("PRAGMA " + pragma)
    for m in sorted(glob.glob(MIGRATIONS)):
        c.executescript(open(m).read())

    contacts = max(a.contacts, 1)
    # Volley's contact ids sort by creation time (an import creates ~50 a millisecond).
    ids = ["ct_%012x%016x" % (1764579600000 + i // 50, random.getrandbits(64))
           for i in range(contacts)]
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO contacts (id, external_id, profile, created_at, updated_at) VALUES (?, ?, ?, 0, 0)",
        ((cid, "c%d" % i, '{"name":"Contact %d","timezone":"Europe/Berlin"}' % i)
         for i, cid in enumerate(ids)))
    c.execute("COMMIT")
    send = '{"campaign":"cp_%024x","contact":"%s","target":1764579600000}'
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO timers (due_at, kind, owner, data) VALUES (?, 'campaign', ?, ?)",
        ((10**13 + i, "campaign:cp_p%d" % (i % 5), send % (i % 5, ids[i % contacts]))
         for i in range(a.pending)))
    c.executemany(
        "INSERT INTO timers (due_at, kind, owner, data) VALUES (?, 'campaign', 'campaign:cp_b', ?)",
        ((1000 + i, send % (9, ids[i % contacts])) for i in range(a.backlog)))
    c.execute("COMMIT")
    due = c.execute(
        "SELECT id, json_extract(data, '$.contact') FROM timers WHERE due_at < 10000000000000 ORDER BY due_at, id"
    ).fetchall()

    state = ('{"format":1,"flow":"note","version":"9a7b087cf2ad47e3","contact":{"id":"%s",'
             '"name":"Contact 1","timezone":"Europe/Berlin"},"vars":{},"at":{"at":"ended",'
             '"outcome":"done"},"answered":0,"rng":7033539605380121326,"sent":1}')
    message = ('{"from":"bot","step":"step-1","text":"A scheduled note for Contact 1.",'
               '"html":"<p>A scheduled note for Contact 1.</p>","typing":false,"delay_ms":0}')
    entries = [("enter", '{"step":"step-1"}'), ("message", message),
               ("enter", '{"step":"step-2"}'), ("end", '{"outcome":"done"}')]
    started = time.time()
    for s in range(0, len(due), BATCH):
        batch = due[s:s + BATCH]
        now = int(time.time() * 1000)
        c.execute("BEGIN IMMEDIATE")
        deleted = c.execute(
            "DELETE FROM timers WHERE id IN (%s) RETURNING id" % ", ".join("?" * len(batch)),
            [t for t, _ in batch]).fetchall()
        assert len(deleted) == len(batch)
        rows = []
        for _, contact in batch:
            rows += ["cv_%012x%016x" % (now, random.getrandbits(64)), "note", 1, contact,
                     "ended", 4, state % contact, "campaign:cp_b", now, now]
        nos = c.execute(
            "INSERT INTO conversations (id, flow_id, flow_version, contact_id, status, last_seq, state, origin, created_at, updated_at) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch)) + " RETURNING no",
            rows).fetchall()
        c.executemany(
            "INSERT INTO events (conversation, seq, kind, at, visible_at, data) VALUES (?, ?, ?, ?, ?, ?)",
            ((no, k + 1, kind, now, now, data) for (no,) in nos for k, (kind, data) in enumerate(entries)))
        c.execute("COMMIT")
    secs = time.time() - started
    c.close()
    for f in glob.glob(db + "*"):
        os.remove(f)
    os.rmdir(workdir)
    print('{"scenario": "timers-floor", "backlog": %d, "pending": %d, "seconds": %.1f, "fired_per_second": %d}'
          % (len(due), a.pending, secs, len(due) / secs))


if __name__ == "__main__":
    main()
