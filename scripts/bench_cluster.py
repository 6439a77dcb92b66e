"""Cluster-mode HTTP benchmarks (issue 14), all in one run on one machine: the prototype's
example against `pyexec serve` with the sled store and with the PostgreSQL store, then two
nodes sharing one PostgreSQL database. Starts its own PostgreSQL (as the `postgres` user when
run as root) on a free port in a temporary directory. Reuses scripts/bench_http.py's server
and wrk drivers; prints a Markdown table with the CPU time each request cost the nodes and the
database (what the README's on-paper scaling is computed from), and for each PostgreSQL run
the statements the database spent its time in (pg_stat_statements, nested statements too):
calls per request shows how many admissions each batched statement carried.

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
            # The temporary directory is root's and private: let the postgres user through.
            os.chmod(tmp, 0o711)
            shutil.chown(self.dir, "postgres", "postgres")
        self.run("initdb", "--auth=trust", "--username=pyexec", "-D", str(self.dir / "data"))
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c shared_preload_libraries=pg_stat_statements "
                   "-c pg_stat_statements.track=all")
        self.run("pg_ctl", "-w", "-o", options, "-l", str(self.dir / "log"),
                 "-D", str(self.dir / "data"), "start")
        self.url = f"postgres://pyexec@127.0.0.1:{self.port}/postgres"
        self.sql("CREATE EXTENSION pg_stat_statements")

    def sql(self, query):
        """Rows of `query`, each a list of text fields."""
        out = subprocess.run([f"{self.bin}/psql", "-X", "-At", "-F", "\t", self.url, "-c", query],
                             check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines()]

    def statements(self, requests):
        """Where the database spent its executor time since the last reset, per request."""
        rows = self.sql(
            "SELECT calls, rows, total_exec_time, regexp_replace(left(query, 70), '\\s+', ' ', 'g')"
            " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
            " ORDER BY total_exec_time DESC LIMIT 8")
        lines = ["| statement | calls per request | rows per call | ms per call "
                 "| ms per request |", "|---|---:|---:|---:|---:|"]
        for calls, returned, total_ms, query in rows:
            calls, returned, total_ms = int(calls), int(returned), float(total_ms)
            lines.append(f"| `{query.replace('|', '/')}` | {calls / requests:.3f} "
                         f"| {returned / max(calls, 1):.1f} | {total_ms / max(calls, 1):.3f} "
                         f"| {total_ms / requests:.3f} |")
        return lines

    def run(self, program, *args):
        subprocess.run(self.as_postgres + [f"{self.bin}/{program}", *args], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self.run("pg_ctl", "-w", "-m", "fast", "-D", str(self.dir / "data"), "stop")

    def cpu_seconds(self):
        """CPU time of the whole server: the postmaster (with its exited backends) and every
        process it runs now."""
        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        total = bench.cpu_seconds(postmaster)
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == postmaster:  # proc(5) field 4, the parent
                total += sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")
        return total


def node(binary, tmp, name, store, log_file):
    """A started `pyexec serve`, with PYEXEC_STORE set to `store` (None: sled)."""
    os.environ.pop("PYEXEC_STORE", None)
    if store:
        os.environ["PYEXEC_STORE"] = store
    server = bench.Pyexec(binary, str(Path(tmp) / name), log_file)
    server.start()
    return server


# The statement profile of each PostgreSQL run, in order.
PROFILES = []


def timed(servers, key, connections, pg=None):
    """wrk against every server at once (a warm-up, then the timed run); returns the
    per-server results and the database's CPU seconds per request over the timed run."""
    results = [None] * len(servers)

    def drive(i, seconds):
        results[i] = bench.wrk(servers[i], bench.EXAMPLE, key, connections, seconds)

    def all_at_once(seconds):
        threads = [threading.Thread(target=drive, args=(i, seconds)) for i in range(len(servers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    all_at_once(bench.WARMUP_SECONDS)
    if pg:
        pg.sql("SELECT pg_stat_statements_reset()")
    pg_before = pg.cpu_seconds() if pg else 0
    all_at_once(bench.SECONDS)
    pg_cpu = pg.cpu_seconds() - pg_before if pg else 0
    requests = max(sum(r["requests"] for r in results), 1)
    if pg:
        PROFILES.append(pg.statements(requests))
    return results, pg_cpu / requests


def row(label, measured):
    results, pg_cpu = measured
    requests = sum(r["requests"] for r in results)
    rps = sum(r["rps"] for r in results)
    p50 = max(r["p50_us"] for r in results) / 1000
    p99 = max(r["p99_us"] for r in results) / 1000
    errors = sum(r["errors"] for r in results)
    node_cpu = sum(r["cpu_us_per_request"] * r["requests"] for r in results) / max(requests, 1)
    pg = f"{pg_cpu * 1000:.2f}" if pg_cpu else "–"
    return (f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} "
            f"| {node_cpu / 1000:.2f} | {pg} |")


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
                rows.append(row("PostgreSQL, 1 node, 16 connections", timed([first], key, 16, pg)))

                bench.log("PostgreSQL store, two nodes")
                second = node(binary, tmp, "pg2", pg.url, log_file)
                rows.append(row("PostgreSQL, 2 nodes, 8 connections each",
                                timed([first, second], key, 8, pg)))
                first.stop()
                second.stop()
            finally:
                os.environ.pop("PYEXEC_STORE", None)
                pg.stop()
        print("| store | requests/s | p50 ms | p99 ms | errors | node CPU ms/request "
              "| PostgreSQL CPU ms/request |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for line in rows:
            print(line)
        for label, profile in zip(["PostgreSQL, 1 node", "PostgreSQL, 2 nodes"], PROFILES):
            print(f"\nWhere PostgreSQL's executor time went, {label} (pg_stat_statements):\n")
            print("\n".join(profile))


if __name__ == "__main__":
    main()
