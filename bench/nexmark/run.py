#!/usr/bin/env python3
"""Nexmark queries in SQL on weir's `nexmark` connector: events/s per core.

usage: python3 bench/nexmark/run.py [--events 10000000] [--cores 1] [--queries q0,q1,...] [--weir PATH]

Each query runs as `weir run` on ddl.sql + qN.sql (the generator's `datagen` table and the
person/auction/bid views, `max-emit-speed` = true, blackhole sink), timed as a whole process
(start-up included; weir's is a few ms). events/s counts every generated event (persons,
auctions and bids, as the Nexmark benchmark does); per core = events/s / cores.
Writes bench/results/nexmark_sql.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def queries():
    names = [f[:-4] for f in os.listdir(HERE) if f.startswith("q") and f.endswith(".sql")]
    return sorted(names, key=lambda q: int(q[1:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--tps", type=int, default=10_000_000, help="first-event.rate: spacing of event times (not a rate limit)")
    ap.add_argument("--queries", default=",".join(queries()))
    ap.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "nexmark_sql.json"))
    args = ap.parse_args()
    ddl = open(os.path.join(HERE, "ddl.sql")).read()
    results = []
    work = tempfile.mkdtemp(prefix="weir-nexmark-")
    for q in args.queries.split(","):
        script = os.path.join(work, f"{q}.sql")
        with open(script, "w") as f:
            f.write(ddl + "\n" + open(os.path.join(HERE, f"{q}.sql")).read())
        cmd = [args.weir, "run", script, "--cores", str(args.cores), "--var", f"EVENTS={args.events}", "--var", f"TPS={args.tps}", "--var", "SINK=blackhole"]
        start = time.monotonic()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        secs = time.monotonic() - start
        if done.returncode != 0:
            sys.exit(f"{q} failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
        rate = args.events / secs
        row = {"query": q, "events": args.events, "cores": args.cores, "seconds": round(secs, 3), "events_per_s": round(rate), "events_per_s_per_core": round(rate / args.cores),
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        results.append(row)
        print(f"{q:>4}: {secs:7.3f} s  {rate / 1e6:6.2f} M events/s  {rate / args.cores / 1e6:6.2f} M events/s per core", flush=True)
    with open(args.out, "w") as f:
        json.dump({"command": " ".join(["python3", "bench/nexmark/run.py"] + sys.argv[1:]), "results": results}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
