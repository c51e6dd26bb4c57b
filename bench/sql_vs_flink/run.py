#!/usr/bin/env python3
"""weir vs Apache Flink on the same SQL scripts and the same bid CSV, side by side in one run.

usage: python3 bench/sql_vs_flink/run.py [--bids 5000000] [--cores 2] [--python PYTHON_WITH_PYFLINK]

For each script (tumble_count, hop_count, passthrough) it times, as whole processes:
  weir:  `weir run SCRIPT --var DATA=.. --var OUT=..` on the bids and on an empty file
  Flink: `flink_job.py SCRIPT ..` (PyFlink 2.3 mini-cluster) on the bids and on an empty file
Wall time includes start-up; "running" time subtracts the empty-file run (start-up and
shut-down). Each weir timing is the median of `--repeat` runs (5; a run takes a fraction of a
second and single runs move by 10-25 % on a shared machine), each Flink timing the median of
`--flink-repeat` runs (1: a run takes 5-25 s); every sample is kept in the JSON. The bids are
synced to disk before any run, so no run pays for their writeback. Writes
bench/results/sql_vs_flink.json, with the machine's load averages (1, 5 and 15 minutes)
before and after each script: on a shared machine the ratios are the figure.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPTS = ["tumble_count", "hop_count", "passthrough"]


def write_bids(path, count, seed=7):
    """Nexmark-like bids, in event-time order with up to 3 s of disorder."""
    rng = random.Random(seed)
    channels = ["Apple", "Google", "Facebook", "Baidu"]
    base = 1_700_000_000_000
    with open(path, "w") as f:
        for i in range(count):
            ms = base + i // 10 - rng.randrange(3000)
            auction = 1000 + (i // 50 if rng.random() < 0.5 else rng.randrange(i // 50 + 1))
            f.write(f"{auction},{1000 + rng.randrange(5000)},{rng.randrange(100, 100000)},{channels[i % 4]},https://www.nexmark.com/item.htm?query={i % 7},{ms},x\n")


def timed(cmd, cwd):
    start = time.monotonic()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bids", type=int, default=5_000_000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--python", default=sys.executable, help="a python with apache-flink==2.3.0 installed")
    ap.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"))
    ap.add_argument("--repeat", type=int, default=5, help="weir runs per timing (the median is reported)")
    ap.add_argument("--flink-repeat", type=int, default=1, help="Flink runs per timing (the median is reported)")
    args = ap.parse_args()
    # Runs start in folders of their own: paths given relative to here must not move.
    args.weir = os.path.abspath(args.weir)
    if os.sep in args.python:
        args.python = os.path.abspath(args.python)
    work = tempfile.mkdtemp(prefix="weir-vs-flink-")
    full, empty = os.path.join(work, "full"), os.path.join(work, "empty")
    os.makedirs(full)
    os.makedirs(empty)
    write_bids(os.path.join(full, "bid.csv"), args.bids)
    open(os.path.join(empty, "bid.csv"), "w").close()
    os.sync()
    results = {"command": " ".join(["python3", "bench/sql_vs_flink/run.py"] + sys.argv[1:]), "bids": args.bids, "cores": args.cores,
               "load_average_at_start": os.getloadavg(), "jobs": {}}
    for name in SCRIPTS:
        script = os.path.join(HERE, f"{name}.sql")
        row = {"load_average_before": os.getloadavg()}
        for engine in ["weir", "flink"]:
            repeat = args.repeat if engine == "weir" else args.flink_repeat
            samples = {"wall_s": [], "startup_s": []}
            for _ in range(max(repeat, 1)):
                for data, label in [(full, "wall_s"), (empty, "startup_s")]:
                    out = os.path.join(work, f"out-{engine}-{name}-{label}")
                    shutil.rmtree(out, ignore_errors=True)
                    if engine == "weir":
                        cmd = [args.weir, "run", script, "--var", f"DATA={data}", "--var", f"OUT={out}", "--cores", str(args.cores)]
                    else:
                        cmd = [args.python, os.path.join(HERE, "flink_job.py"), script, data, out, str(args.cores)]
                    # Each run in its own fresh folder (weir writes ./checkpoints there).
                    cwd = tempfile.mkdtemp(dir=work)
                    samples[label].append(timed(cmd, cwd))
                    shutil.rmtree(cwd, ignore_errors=True)
            for label, values in samples.items():
                row[f"{engine}_{label}"] = statistics.median(values)
                row[f"{engine}_{label}_samples"] = values
            row[f"{engine}_running_s"] = max(row[f"{engine}_wall_s"] - row[f"{engine}_startup_s"], 1e-3)
            row[f"{engine}_bids_per_s_running"] = args.bids / row[f"{engine}_running_s"]
        row["load_average_after"] = os.getloadavg()
        row["speedup_wall"] = row["flink_wall_s"] / row["weir_wall_s"]
        row["speedup_running"] = row["flink_running_s"] / row["weir_running_s"]
        results["jobs"][name] = row
        print(name, json.dumps(row), flush=True)
    out_path = os.path.join(ROOT, "bench", "results", "sql_vs_flink.json")
    with open(out_path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"-> {out_path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
