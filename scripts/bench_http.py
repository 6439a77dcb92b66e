"""The HTTP half of scripts/bench.sh, and its report.

Starts `pyexec serve` on a temporary data directory (once with an empty module cache, then
again with a warm one, timing each until /health answers 200), creates a key, and drives it with
wrk: the prototype's example with 16 connections, then a CPU-heavy body with 4. The naive
baseline (scripts/naive_baseline.py: `python3 -I -c` per request) gets the same runs in the same
invocation. Writes the results, with the in-process numbers of `cargo bench --bench sandbox`
when its summary exists, as Markdown (OUTPUT_MD), and the headline tables into README.md's
generated block.

Usage: python3 bench_http.py PYEXEC_BINARY INPROCESS_JSON OUTPUT_MD COMMAND
Settings (environment): BENCH_SECONDS (each timed run, default 20), BENCH_WARMUP_SECONDS
(default 5), BENCH_GROWTH_EXECUTIONS (default 10000), BENCH_WARM_STARTS (default 5).
"""

import datetime
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECONDS = int(os.environ.get("BENCH_SECONDS", 20))
WARMUP_SECONDS = int(os.environ.get("BENCH_WARMUP_SECONDS", 5))
GROWTH_EXECUTIONS = int(os.environ.get("BENCH_GROWTH_EXECUTIONS", 10_000))
WARM_STARTS = int(os.environ.get("BENCH_WARM_STARTS", 5))

EXAMPLE = {
    "code": "result = sum(data['numbers']) / len(data['numbers'])",
    "data": {"numbers": [1, 2, 3, 4, 5]},
}
# The same 100k-iteration loop as the in-process benchmark's `loop_100k`.
CPU_HEAVY = {
    "code": "total = 0\nfor i in range(100000):\n    total += i\nresult = total",
    "data": {},
}

# One wrk thread: the load generator shares the two cores with the server, and one thread
# drives thousands of requests per second. Bodies without `"success":true` count as failures.
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY")
failures = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if not string.find(body, '"success":true', 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "socket_errors": %d, "failures": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, failed,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def post(addr, body, key, path="/execute"):
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    connection.request("POST", path, json.dumps(body), headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def delete(addr, key, path):
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("DELETE", path, headers={"X-API-Key": key})
    response = connection.getresponse()
    response.read()
    return response.status


def executions_run(addr):
    """Executions the pyexec server has run, from its /metrics."""
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return sum(int(float(n)) for n in
               re.findall(r"^pyexec_executions_total\{[^}]*\} (\S+)", text, re.M))


def healthy(addr):
    host, port = addr.rsplit(":", 1)
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def cpu_seconds(pid):
    """User + system CPU time of a process and its reaped children (the baseline's python3)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # proc(5) fields 14-17 (utime, stime, cutime, cstime); fields[0] is field 3.
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pss_kib(pid):
    """The proportional set size of a process, in KiB: shared pages counted once."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))


def memory_kib(pid):
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M).group(1))
    return field("VmRSS"), field("VmHWM")


class Pyexec:
    """A `pyexec serve` process on its own data directory."""

    def __init__(self, binary, data_dir, log_file, extra_args=()):
        self.binary, self.data_dir, self.log_file = binary, data_dir, log_file
        self.extra_args = list(extra_args)

    def start(self):
        """Starts the server; returns seconds from spawn until /health answered 200."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            [self.binary, "serve", "--addr", "127.0.0.1:0", "--data-dir", self.data_dir,
             *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
        )
        for line in self.process.stdout:
            match = re.match(r"pyexec listening on http://(\S+)", line)
            if match:
                self.addr = match.group(1)
                break
        else:
            raise SystemExit(f"pyexec serve exited with {self.process.wait()}; see its log")
        while not healthy(self.addr):
            time.sleep(0.001)
        return time.monotonic() - started

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        if self.process.wait(timeout=60) != 0:
            raise SystemExit("pyexec serve did not stop cleanly; see its log")

    def add_key(self):
        output = subprocess.run(
            [self.binary, "keys", "add", "--name", "bench", "--description", "bench",
             "--env", "test", "--executions-limit", "100000000",
             "--rate-limit-per-minute", "100000000", "--json", "--data-dir", self.data_dir],
            check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(output)["key"]


class Baseline:
    """scripts/naive_baseline.py."""

    def start(self, log_file):
        script = Path(__file__).with_name("naive_baseline.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=log_file, text=True
        )
        port = re.match(r"listening on (\d+)", self.process.stdout.readline()).group(1)
        self.addr = f"127.0.0.1:{port}"

    def stop(self):
        self.process.kill()
        self.process.wait()


def wrk(server, body, key, connections, seconds, executions=0, path="/execute"):
    """One wrk run against `server` for `seconds`, or until the (pyexec) server has run
    `executions` more; returns its summary with requests/s, an error count and the server's CPU
    time per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    env = dict(os.environ, BENCH_BODY=json.dumps(body), BENCH_KEY=key)
    cpu_before = cpu_seconds(server.process.pid)
    done_at = executions_run(server.addr) + executions if executions else None
    process = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", script.name, f"http://{server.addr}{path}"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    if done_at is not None:
        while process.poll() is None and executions_run(server.addr) < done_at:
            time.sleep(0.05)
        # wrk ends the run early on SIGINT, and still reports it.
        process.send_signal(signal.SIGINT)
    output = process.communicate()[0]
    if process.returncode != 0:
        raise SystemExit(f"wrk failed with exit status {process.returncode}")
    cpu = cpu_seconds(server.process.pid) - cpu_before
    os.unlink(script.name)
    result = json.loads(output.split("BENCH ", 1)[1])
    result["cpu_us_per_request"] = cpu * 1e6 / max(result["requests"], 1)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = result["socket_errors"] + result["failures"]
    return result


# The issue-13 numpy example, on the CPython runtime.
NUMPY_EXAMPLE = {
    "code": "import numpy as np\nresult = float(np.linspace(0, 1, 1000).std())",
    "runtime": "cpython",
}


def load_runs(server, key):
    """The two timed runs every server gets, after a warm-up."""
    check_example(server.addr, key)
    wrk(server, EXAMPLE, key, 16, WARMUP_SECONDS)
    log(f"example, 16 connections, {SECONDS} s")
    example = wrk(server, EXAMPLE, key, 16, SECONDS)
    log(f"CPU-heavy body, 4 connections, {SECONDS} s")
    cpu = wrk(server, CPU_HEAVY, key, 4, SECONDS)
    return example, cpu


def check_example(addr, key, body=EXAMPLE, result=3.0):
    status, reply = post(addr, body, key)
    if status != 200 or reply.get("result") != result:
        raise SystemExit(f"{addr} answered {body['code']!r} with {status} {reply}")


def cpython_runs(binary, tmp, log_file, installed):
    """The CPython runtime (issue 13) on a server that has both runtimes: the example and the
    numpy example at 16 connections, then the example on RustPython, for the peak RSS with
    both loaded and used."""
    server = Pyexec(binary, str(Path(tmp) / "data-cpython"), log_file,
                    ["--runtimes-dir", str(Path(installed) / "runtimes"),
                     "--module-cache-dir", str(Path(installed) / "cache")])
    server.start()
    key = server.add_key()
    example = dict(EXAMPLE, runtime="cpython")
    check_example(server.addr, key, example)
    check_example(server.addr, key, NUMPY_EXAMPLE, 0.2889639542114209)
    wrk(server, example, key, 16, WARMUP_SECONDS)
    log(f"CPython: example, 16 connections, {SECONDS} s")
    results = {"example": wrk(server, example, key, 16, SECONDS)}
    log(f"CPython: numpy example, 16 connections, {SECONDS} s")
    results["numpy"] = wrk(server, NUMPY_EXAMPLE, key, 16, SECONDS)
    log(f"RustPython on the same server: example, 16 connections, {SECONDS} s")
    results["rustpython_example"] = wrk(server, EXAMPLE, key, 16, SECONDS)
    _, results["peak_rss_kib"] = memory_kib(server.process.pid)
    server.stop()
    return results


# Sessions held open while /execute is measured again (issue 15).
IDLE_SESSIONS = 200


def sessions_runs(binary, tmp, log_file):
    """Sessions (issue 15): /execute without, then with IDLE_SESSIONS idle sessions open on the
    server, then without again once they are deleted (so that a server warming up over the runs
    does not pass for a difference); the resident memory each idle session holds; and turns of
    the example in one warm session (one connection: a session runs one turn at a time)."""
    server = Pyexec(binary, str(Path(tmp) / "data-sessions"), log_file,
                    ["--sessions-per-key", str(IDLE_SESSIONS),
                     "--max-sessions", str(IDLE_SESSIONS)])
    server.start()
    key = server.add_key()
    check_example(server.addr, key)
    wrk(server, EXAMPLE, key, 16, WARMUP_SECONDS)
    log(f"sessions: example without sessions, 16 connections, {SECONDS} s")
    results = {"without_sessions": wrk(server, EXAMPLE, key, 16, SECONDS)}
    pss_before = pss_kib(server.process.pid)
    log(f"sessions: opening {IDLE_SESSIONS} sessions, one turn each")
    ids = []
    for _ in range(IDLE_SESSIONS):
        status, opened = post(server.addr, {}, key, "/sessions")
        if status != 201:
            raise SystemExit(f"opening a session answered {status} {opened}")
        ids.append(opened["session_id"])
        status, turn = post(server.addr, EXAMPLE, key, f"/sessions/{ids[-1]}/execute")
        if status != 200 or turn.get("result") != 3.0:
            raise SystemExit(f"a turn answered {status} {turn}")
    results["idle_session_pss_kib"] = (pss_kib(server.process.pid) - pss_before) / IDLE_SESSIONS
    log(f"sessions: example with {IDLE_SESSIONS} idle sessions, 16 connections, {SECONDS} s")
    results["with_idle_sessions"] = wrk(server, EXAMPLE, key, 16, SECONDS)
    log(f"sessions: turns of the example in one session, 1 connection, {SECONDS} s")
    results["turns"] = wrk(server, EXAMPLE, key, 1, SECONDS, path=f"/sessions/{ids[0]}/execute")
    for session in ids:
        status = delete(server.addr, key, f"/sessions/{session}")
        if status != 204:
            raise SystemExit(f"deleting a session answered {status}")
    log(f"sessions: example without sessions again, 16 connections, {SECONDS} s")
    results["without_sessions_after"] = wrk(server, EXAMPLE, key, 16, SECONDS)
    server.stop()
    return results


def run(binary):
    results = {}
    with tempfile.TemporaryDirectory(prefix="pyexec-bench-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log_file:
            server = Pyexec(binary, str(Path(tmp) / "data"), log_file)
            log("pyexec serve, empty module cache (compiles the guest)")
            results["ready_cold_s"] = server.start()
            server.stop()
            log(f"pyexec serve, warm module cache, {WARM_STARTS} starts")
            warm = []
            for _ in range(WARM_STARTS):
                warm.append(server.start())
                server.stop()
            results["ready_warm_s"] = warm

            server.start()
            key = server.add_key()
            results["pyexec"] = load_runs(server, key)
            rss_before, _ = memory_kib(server.process.pid)
            log(f"{GROWTH_EXECUTIONS} executions of the example for the growth check")
            growth = wrk(server, EXAMPLE, key, 16, 3600, executions=GROWTH_EXECUTIONS)
            rss_after, results["pyexec_peak_rss_kib"] = memory_kib(server.process.pid)
            results["growth"] = {
                "executions": growth["requests"],
                "errors": growth["errors"],
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
            }
            server.stop()

            results["sessions"] = sessions_runs(binary, tmp, log_file)

            installed = os.environ.get("PYEXEC_TEST_CPYTHON_DIR")
            if installed:
                results["cpython"] = cpython_runs(binary, tmp, log_file, installed)
            else:
                log("no CPython runtime (PYEXEC_TEST_CPYTHON_DIR is unset): skipping it")

            log("naive baseline: python3 -I -c per request")
            baseline = Baseline()
            baseline.start(log_file)
            try:
                results["baseline"] = load_runs(baseline, "unused")
                _, results["baseline_peak_rss_kib"] = memory_kib(baseline.process.pid)
            finally:
                baseline.stop()
    return results


# Reporting.


def machine():
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return (f"{cpu}, {os.cpu_count()} CPUs, {memory / 2**20:.0f} GiB RAM, "
            f"Linux {platform.release()}; load average at start {os.getloadavg()[0]:.2f}")


IN_FLIGHT_NOTE = ("16 executions in flight through `Sandbox::execute` on every worker; CPU is "
                  "the whole process's user + system time per execution.")


def ms(us):
    return f"{us / 1000:.2f} ms"


def mib(kib):
    return f"{kib / 1024:.0f} MiB"


def verdict(ok):
    return "met" if ok else "**missed**"


def report(results, inprocess, command, started):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    lines = [
        "# pyexec benchmark results",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; commit `{commit}`",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- wrk {wrk_version}, 1 thread, keep-alive; Python {platform.python_version()} for the "
        f"baseline; {SECONDS} s per timed HTTP run after a {WARMUP_SECONDS} s warm-up",
        "",
    ]
    default_id = f"execute/example/{(inprocess or {}).get('default_guest')}"
    example_in = next((s for s in (inprocess or {}).get("executions", [])
                       if s["id"] == default_id), None)
    px_example, px_cpu = results["pyexec"]
    base_example, base_cpu = results["baseline"]
    ratio = px_example["rps"] / base_example["rps"]
    growth = results["growth"]
    ready_warm = statistics.median(results["ready_warm_s"]) * 1000
    rows = []
    if example_in:
        lat = example_in["latency_us"]
        rows += [
            (f"In-process, example, p50 ({inprocess['default_guest']}, the default)", "≤ 1 ms",
             ms(lat["p50"]), lat["p50"] <= 1000),
            ("In-process, example, p99", "≤ 3 ms", ms(lat["p99"]), lat["p99"] <= 3000),
            ("In-process, example, fuel", "≤ 1 M", f"{example_in['fuel'] / 1e6:.2f} M",
             example_in["fuel"] <= 1_000_000),
        ]
    rows += [
        ("HTTP, example, 16 connections", "≥ 2,000 requests/s", f"{px_example['rps']:,.0f}/s",
         px_example["rps"] >= 2000),
        ("HTTP, example, p99", "≤ 25 ms", ms(px_example["p99_us"]), px_example["p99_us"] <= 25000),
        ("HTTP, example, errors", "0", f"{px_example['errors']}", px_example["errors"] == 0),
        ("HTTP, vs `python3 -I -c` per request", "≥ 30×",
         f"{ratio:.0f}× ({base_example['rps']:,.0f}/s)", ratio >= 30),
        ("Peak RSS under load (VmHWM)", "≤ 400 MiB", mib(results["pyexec_peak_rss_kib"]),
         results["pyexec_peak_rss_kib"] <= 400 * 1024),
        (f"RSS growth over {growth['executions']:,} executions", "none",
         f"{mib(growth['rss_before_kib'])} → {mib(growth['rss_after_kib'])}",
         growth["rss_after_kib"] <= growth["rss_before_kib"] * 1.05),
        ("`pyexec serve` until /health 200, warm cache", "≤ 300 ms",
         f"{ready_warm:.0f} ms (median of {len(results['ready_warm_s'])})", ready_warm <= 300),
    ]
    lines += ["## Targets (issue 7)", "", "| target | goal | measured | |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {measured} | {verdict(ok)} |" for name, goal, measured, ok in rows]
    if not example_in:
        lines += ["", "In-process targets: not measured (run `cargo bench --bench sandbox`)."]

    lines += ["", "## HTTP", "",
              "| server | body | connections | requests/s | p50 | p99 | max | errors | "
              "server CPU per request | peak RSS |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (example, cpu), peak in [
        ("pyexec", results["pyexec"], results["pyexec_peak_rss_kib"]),
        ("`python3 -I -c` per request", results["baseline"], results["baseline_peak_rss_kib"]),
    ]:
        for body, connections, run in [("example", 16, example), ("100k loop", 4, cpu)]:
            lines.append(
                f"| {name} | {body} | {connections} | {run['rps']:,.0f} | {ms(run['p50_us'])} | "
                f"{ms(run['p99_us'])} | {ms(run['max_us'])} | {run['errors']} | "
                f"{ms(run['cpu_us_per_request'])} | {mib(peak)} |"
            )
    lines += ["", "Server CPU per request is user + system time of the server process (for the "
              "baseline, with its `python3` children) over the run, divided by requests: it "
              "depends less on other load than requests/s, and bounds requests/s at "
              "(CPUs − the load generator's share) / CPU per request. Peak RSS of the baseline "
              "is its HTTP server alone, without the children."]
    if "cpython" in results:
        lines += cpython_report(results["cpython"], inprocess)
    if "sessions" in results:
        lines += sessions_report(results["sessions"], inprocess)
    summary = len(lines)
    lines += ["", "## Startup", "", "| what | time |", "|---|---|",
              f"| `pyexec serve` until /health 200, empty module cache | "
              f"{results['ready_cold_s']:.2f} s |",
              f"| `pyexec serve` until /health 200, warm module cache | "
              + ", ".join(f"{s * 1000:.0f}" for s in results["ready_warm_s"]) + " ms |"]
    if inprocess:
        if inprocess.get("sandbox_new_empty_cache_ms") is not None:
            lines.append(f"| `Sandbox::new`, empty module cache | "
                         f"{inprocess['sandbox_new_empty_cache_ms'] / 1000:.2f} s |")
        if inprocess.get("sandbox_new_warm_cache_ms"):
            warm = inprocess["sandbox_new_warm_cache_ms"]
            lines.append(f"| `Sandbox::new`, warm module cache | p50 {warm['p50']:.1f} ms, "
                         f"max {warm['max']:.1f} ms |")
        lines += ["", "## In-process (`cargo bench --bench sandbox`)", "",
                  f"From the summary written {inprocess['written']}.", "",
                  "Latency of `Sandbox::execute` end to end (queue, worker thread, fresh "
                  "instance, reply); *instance* is instantiate + run + drop alone.", "",
                  "| case | guest | executions | p50 | p99 | max | instance p50 | fuel | "
                  "page faults |", "|---|---|---|---|---|---|---|---|---|"]
        for s in inprocess.get("executions", []):
            _, case, guest = s["id"].split("/")
            lat = s["latency_us"]
            lines.append(
                f"| {case} | {guest} | {s['executions']} | {ms(lat['p50'])} | {ms(lat['p99'])} | "
                f"{ms(lat['max'])} | {ms(s['instance_us']['p50'])} | {s['fuel']:,} | "
                f"{s['page_faults']:.0f} |"
            )
        if inprocess.get("throughput"):
            lines += ["", f"Throughput: {IN_FLIGHT_NOTE}", "",
                      "| case | guest | executions/s | CPU per execution |", "|---|---|---|---|"]
            for t in inprocess["throughput"]:
                _, case, guest = t["id"].split("/")
                lines.append(f"| {case} | {guest} | {t['per_second']:,.0f} | {ms(t['cpu_us'])} |")
    return "\n".join(lines) + "\n", "\n".join(lines[2:summary]) + "\n"


def sessions_report(sessions, inprocess):
    """The sessions' rows (issue 15): turn latency, memory per idle session, /execute with
    idle sessions open."""
    without, with_idle, turns = (sessions["without_sessions"], sessions["with_idle_sessions"],
                                 sessions["turns"])
    execution = {s["id"]: s for s in (inprocess or {}).get("executions", [])}
    turn_in = execution.get("execute/example/pooling_session")
    idle_in = {i["guest"]: i for i in (inprocess or {}).get("idle_session_memory", [])}
    rows = []
    if turn_in:
        p50 = turn_in["latency_us"]["p50"]
        rows.append(("turn of the example in a warm session, in-process p50 (RustPython)",
                     "≤ 0.3 ms", ms(p50), p50 <= 300))
    for guest, info in idle_in.items():
        goal = "≤ 4 MiB" if guest == "pooling" else "—"
        rows.append((f"memory (PSS) per idle session, in-process ({guest})", goal,
                     f"{info['pss_kib_per_session'] / 1024:.2f} MiB",
                     info["pss_kib_per_session"] <= 4096 if guest == "pooling" else None))
    rows.append((f"memory (PSS) per idle session, `pyexec serve` ({IDLE_SESSIONS} sessions)",
                 "≤ 4 MiB", f"{sessions['idle_session_pss_kib'] / 1024:.2f} MiB",
                 sessions["idle_session_pss_kib"] <= 4096))
    after = sessions["without_sessions_after"]
    ratio = with_idle["rps"] / statistics.mean([without["rps"], after["rps"]])
    rows.append((f"/execute with {IDLE_SESSIONS} idle sessions open, vs none before and after",
                 "noise (≥ 0.95×)",
                 f"{with_idle['rps']:,.0f} vs {without['rps']:,.0f} and {after['rps']:,.0f} "
                 f"requests/s ({ratio:.2f}×)", ratio >= 0.95))
    rows.append(("turns of the example in one session over HTTP, 1 connection", "—",
                 f"{turns['rps']:,.0f} turns/s, p50 {ms(turns['p50_us'])}, p99 "
                 f"{ms(turns['p99_us'])}, {turns['errors']} errors", None))
    lines = ["", "## Sessions (issue 15)", "", "| target | goal | measured | |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {measured} | {'' if ok is None else verdict(ok)} |"
              for name, goal, measured, ok in rows]
    return lines


def cpython_report(cpython, inprocess):
    """The issue-13 targets of the CPython runtime, and its HTTP runs."""
    summaries = {s["id"]: s for s in (inprocess or {}).get("executions", [])}
    rows = []
    for case, goal_ms in [("example", 1.5), ("numpy_std", 2.5), ("pandas_groupby", 10)]:
        s = summaries.get(f"execute/{case}/cpython")
        if s:
            p50 = s["latency_us"]["p50"]
            rows.append((f"In-process, {case}, p50", f"≤ {goal_ms} ms", ms(p50),
                         p50 <= goal_ms * 1000))
    loop_c = summaries.get("execute/sum_squares_100k/cpython")
    loop_r = summaries.get(f"execute/sum_squares_100k/{(inprocess or {}).get('default_guest')}")
    if loop_c and loop_r:
        speedup = loop_r["latency_us"]["p50"] / loop_c["latency_us"]["p50"]
        rows.append(("In-process, `sum(i*i for i in range(100000))`, vs RustPython", "≥ 1.25×",
                     f"{speedup:.2f}× ({ms(loop_c['latency_us']['p50'])} vs "
                     f"{ms(loop_r['latency_us']['p50'])})", speedup >= 1.25))
    example = cpython["example"]
    rows += [
        ("HTTP, example on cpython, 16 connections", "≥ 1,000 requests/s",
         f"{example['rps']:,.0f}/s", example["rps"] >= 1000),
        ("HTTP, example on cpython, p99", "≤ 30 ms", ms(example["p99_us"]),
         example["p99_us"] <= 30000),
        ("Peak RSS, both runtimes loaded and under load", "≤ 1 GiB",
         mib(cpython["peak_rss_kib"]), cpython["peak_rss_kib"] <= 1024 * 1024),
    ]
    lines = ["", "## CPython runtime (issue 13)", "", "| target | goal | measured | |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {measured} | {verdict(ok)} |" for name, goal, measured, ok in rows]
    lines += ["", "| body | connections | requests/s | p50 | p99 | errors | server CPU per request |",
              "|---|---|---|---|---|---|---|"]
    for body, run in [("example, cpython", cpython["example"]),
                      ("numpy example, cpython", cpython["numpy"]),
                      ("example, rustpython (same server)", cpython["rustpython_example"])]:
        lines.append(f"| {body} | 16 | {run['rps']:,.0f} | {ms(run['p50_us'])} | "
                     f"{ms(run['p99_us'])} | {run['errors']} | {ms(run['cpu_us_per_request'])} |")
    return lines


README_BEGIN = "<!-- bench:begin (scripts/bench.sh writes this block) -->"
README_END = "<!-- bench:end -->"


def update_readme(readme, summary, output):
    """Replaces the README's generated block with the summary (headings one level down)."""
    text = readme.read_text()
    begin, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    block = re.sub(r"^## ", "#### ", summary, flags=re.M)
    block += f"\nEverything else measured in the same run: [{output}]({output}).\n"
    readme.write_text(text[:begin] + "\n" + block + "\n" + text[end:])


def main():
    binary, inprocess_path, output, command = sys.argv[1:5]
    started = datetime.datetime.now(datetime.timezone.utc)
    results = run(binary)
    inprocess = None
    if Path(inprocess_path).exists():
        inprocess = json.loads(Path(inprocess_path).read_text())
        written = datetime.datetime.fromtimestamp(Path(inprocess_path).stat().st_mtime,
                                                  datetime.timezone.utc)
        inprocess["written"] = f"{written:%Y-%m-%d %H:%M} UTC"
    text, summary = report(results, inprocess, command, started)
    Path(output).write_text(text)
    update_readme(Path("README.md"), summary, output)
    Path(output).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
