#!/usr/bin/env python3
"""Run one Flink SQL script end to end with PyFlink's local mini-cluster (for the benchmark).

usage: flink_job.py SCRIPT.sql DATA_DIR OUT_DIR PARALLELISM
Replaces ${DATA} and ${OUT}, executes every statement, waits for the final INSERT to finish.
"""
import re
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

script, data, out, parallelism = sys.argv[1:5]
text = open(script).read().replace("${DATA}", data).replace("${OUT}", out)
statements = [s.strip() for s in re.sub(r"--[^\n]*", "", text).split(";") if s.strip()]
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
env.get_config().set("parallelism.default", parallelism)
env.get_config().set("table.local-time-zone", "UTC")
for statement in statements[:-1]:
    env.execute_sql(statement)
env.execute_sql(statements[-1]).wait()
