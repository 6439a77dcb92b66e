"""Cluster-mode HTTP benchmarks (issue 14), all in one run on one machine: the prototype's
example against `pyexec serve` with the sled store and with the PostgreSQL store, then two
nodes sharing one PostgreSQL database. Starts its own PostgreSQL (as the `postgres` user when
run as root) on a free port in a temporary directory. Reuses scripts/bench_http.py's server
and wrk drivers; prints a Markdown table.

Usage: python3 bench_cluster.py PYEXEC_BINARY
Settings (environment): BENCH_SECONDS, BENCH_WARMUP_SECONDS (as bench_http.py).
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import bench_http as bench


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throw-away PostgreSQL cluster."""

    def __init__(self, tmp):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.dir, self.port = Path(tmp) / "pg", free_port()
        self.dir.mkdir()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.run("initdb", "--auth=trust", "--username=pyexec", "-D", str(self.dir / "data"))
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self.run("pg_ctl", "-w", "-o", options, "-l", str(self.dir / "log"),
                 "-D", str(self.dir / "data"), "start")
        self.url = f"postgres://pyexec@127.0.0.1:{self.port}/postgres"

    def run(self, program, *args):
        subprocess.run(self.as_postgres + [f"{self.bin}/{program}", *args], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self.run("pg_ctl", "-w", "-m", "fast", "-D", str(self.dir / "data"), "stop")


def node(binary, tmp, name, store, log_file):
    """A started `pyexec serve`, with PYEXEC_STORE set to `store` (None: sled)."""
    os.environ.pop("PYEXEC_STORE", None)
    if store:
        os.environ["PYEXEC_STORE"] = store
    server = bench.Pyexec(binary, str(Path(tmp) / name), log_file)
    server.start()
    return server


def timed(servers, key, connections):
    """wrk against every server at once; returns the per-server results."""
    results = [None] * len(servers)

    def drive(i):
        bench.wrk(servers[i], bench.EXAMPLE, key, connections, bench.WARMUP_SECONDS)
        results[i] = bench.wrk(servers[i], bench.EXAMPLE, key, connections, bench.SECONDS)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def row(label, results):
    rps = sum(r["rps"] for r in results)
    p50 = max(r["p50_us"] for r in results) / 1000
    p99 = max(r["p99_us"] for r in results) / 1000
    errors = sum(r["errors"] for r in results)
    return f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} |"


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        pg = Postgres(tmp)
        rows = []
        with open(Path(tmp) / "server.log", "w") as log_file:
            try:
                bench.log("sled store")
                sled = node(binary, tmp, "sled", None, log_file)
                rows.append(row("sled, 1 node, 16 connections",
                                timed([sled], sled.add_key(), 16)))
                sled.stop()

                bench.log("PostgreSQL store, one node")
                first = node(binary, tmp, "pg1", pg.url, log_file)
                key = first.add_key()
                rows.append(row("PostgreSQL, 1 node, 16 connections", timed([first], key, 16)))

                bench.log("PostgreSQL store, two nodes")
                second = node(binary, tmp, "pg2", pg.url, log_file)
                rows.append(row("PostgreSQL, 2 nodes, 8 connections each",
                                timed([first, second], key, 8)))
                first.stop()
                second.stop()
            finally:
                os.environ.pop("PYEXEC_STORE", None)
                pg.stop()
        print("| store | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---:|---:|---:|---:|")
        for line in rows:
            print(line)


if __name__ == "__main__":
    main()
