#!/usr/bin/env python3
"""Records the compatibility suite: doctest examples of real-world Python, with CPython's output.

Writes tests/compat/data/<source>.json, which tests/compat/main.rs runs against the guest. For
each source it takes the modules' doctest examples (doctest.DocTestFinder), the package files
they import (pinned wheels from PyPI, SHA-256 checked), and runs tests/compat/driver.py under
this CPython (3.11, the reference) RUNS times with different hash seeds. An example is judged:
  "cpython"    - CPython printed the documented output, the same way every run: the guest must
                 print what CPython printed (doctest's comparison, with the example's flags);
  "documented" - CPython's output varies between runs (addresses, str hash order, time) but
                 always matches the documentation: the guest must match the documentation;
  "excluded"   - CPython itself does not print the documented output here (the example needs
                 a file, a global of the test module, another version…): run, never judged.
The driver seeds `random` per docstring, so random examples are deterministic.

Usage: python3 scripts/compat/record.py [SOURCE...]   (default: every source)
Wheels are cached in target/compat-wheels; nothing else is written outside tests/compat/data.
"""

import argparse
import doctest
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "tests" / "compat" / "data"
DRIVER = ROOT / "tests" / "compat" / "driver.py"
WHEEL_CACHE = ROOT / "target" / "compat-wheels"
RUNS = 5
CPYTHON = "3.11.7"

# Option flags the guest-side checker implements (tests/compat/checker.rs).
FLAG_NAMES = [
    "DONT_ACCEPT_TRUE_FOR_1",
    "DONT_ACCEPT_BLANKLINE",
    "NORMALIZE_WHITESPACE",
    "ELLIPSIS",
    "IGNORE_EXCEPTION_DETAIL",
]

SOURCES = {
    "more-itertools": {
        "wheel": ("more-itertools", "11.2.1",
                  "35a7377edd1dd6608dcb2cdf534ded55ea32d49448875ad042cd3f879fb1ded0"),
        "licence": "MIT",
        "modules": ["more_itertools.more", "more_itertools.recipes"],
    },
    "toolz": {
        "wheel": ("toolz", "1.2.0",
                  "890f820b1cb8152785aaf9386d8707770110809035800985ca65cb24ce1120ef"),
        "licence": "BSD-3-Clause",
        "modules": ["toolz.curried", "toolz.curried.exceptions", "toolz.dicttoolz",
                    "toolz.functoolz", "toolz.itertoolz", "toolz.recipes", "toolz.sandbox.core"],
    },
    "sortedcontainers": {
        "wheel": ("sortedcontainers", "2.4.0",
                  "a163dcaede0f1c021485e957a39245190e74249897e2ae4b2aa38595db237ee0"),
        "licence": "Apache-2.0",
        "modules": ["sortedcontainers", "sortedcontainers.sorteddict",
                    "sortedcontainers.sortedlist", "sortedcontainers.sortedset"],
    },
    "boltons": {
        "wheel": ("boltons", "26.2.0",
                  "41942cbce440211bbcf2487ccdc356964ad674f95a01068b8a0dd7a1d1fed036"),
        "licence": "BSD-3-Clause",
        # Not the modules about files, processes, sockets or the garbage collector.
        "modules": ["boltons.cacheutils", "boltons.dictutils", "boltons.formatutils",
                    "boltons.funcutils", "boltons.iterutils", "boltons.listutils",
                    "boltons.mathutils", "boltons.namedutils", "boltons.queueutils",
                    "boltons.setutils", "boltons.statsutils", "boltons.strutils",
                    "boltons.timeutils", "boltons.typeutils", "boltons.urlutils"],
    },
    "python-dateutil": {
        "wheel": ("python-dateutil", "4.0.0",
                  "a5e246f79eb80475e691bf93862cead98decd8a498cf53ba0516fcdc0f50dc1c"),
        "licence": "BSD-3-Clause",
        # Not dateutil.tz: its examples read the system's zoneinfo files.
        "modules": ["dateutil.parser._parser", "dateutil.relativedelta", "dateutil.rrule",
                    "dateutil.utils"],
    },
    "cpython-stdlib": {
        "stdlib": True,
        "licence": "PSF-2.0",
        # The guest's own modules run these: what users of pyexec import.
        "modules": ["_pydecimal", "collections", "difflib", "enum", "fractions", "heapq",
                    "ipaddress", "json", "statistics", "textwrap", "typing"],
    },
    "cpython-tests": {
        "stdlib": True,
        "licence": "PSF-2.0",
        # CPython's own doctest-based language tests, run in fresh globals (the test modules
        # themselves need test.support).
        "globals": "empty",
        "modules": ["test.test_deque", "test.test_descrtut", "test.test_extcall",
                    "test.test_generators", "test.test_genexps", "test.test_listcomps",
                    "test.test_metaclass", "test.test_setcomps", "test.test_unpack",
                    "test.test_unpack_ex"],
    },
}


def fetch_wheel(name, version, sha256):
    """Downloads the pinned wheel with pip (once) and checks its SHA-256."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + version + "-"
    found = [p for p in WHEEL_CACHE.iterdir() if p.name.startswith(prefix)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", "--dest", str(WHEEL_CACHE),
                        f"{name}=={version}"], check=True)
        found = [p for p in WHEEL_CACHE.iterdir() if p.name.startswith(prefix)]
    [wheel] = found
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{wheel.name}: SHA-256 {digest}, expected {sha256}")
    return wheel


def extract(modules, globals_mode, wheel):
    """In a clean interpreter (-I -S: no site-packages), imports the modules and lists their
    examples and, for a wheel, the wheel's files the imports loaded."""
    program = EXTRACT_PROGRAM
    args = [sys.executable, "-I", "-S", "-c", program, json.dumps(modules), globals_mode,
            str(wheel or "")]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


EXTRACT_PROGRAM = r"""
import doctest, importlib, json, sys, zipfile
modules, globals_mode, wheel = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
FLAGS = {name: getattr(doctest, name) for name in %r}
if wheel:
    sys.path.insert(0, wheel)
programs = []
for name in modules:
    module = importlib.import_module(name)
    tests = []
    for test in sorted(doctest.DocTestFinder(exclude_empty=True).find(module, name),
                       key=lambda t: t.name):
        examples = []
        for ex in test.examples:
            if ex.options.get(doctest.SKIP):
                continue
            flags = sorted(n for n, f in FLAGS.items() if ex.options.get(f))
            examples.append({"source": ex.source, "want": ex.want, "exc_msg": ex.exc_msg,
                             "flags": flags, "flag_bits": sum(FLAGS[n] for n in flags)})
        if examples:
            tests.append({"name": test.name, "lineno": test.lineno, "examples": examples})
    programs.append({"module": name, "globals": globals_mode, "tests": tests})
files = {}
if wheel:
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(wheel + "/"):
            files[path[len(wheel) + 1:]] = None
    with zipfile.ZipFile(wheel) as archive:
        files = {path: archive.read(path).decode() for path in sorted(files)}
print(json.dumps({"programs": programs, "files": files}))
""" % (FLAG_NAMES,)


def run_driver(files, program, hash_seed):
    """One run of the driver under this CPython, as the guest runs it: `data` bound, -I -S."""
    data = {"files": files, "module": program["module"], "globals": program["globals"],
            "tests": [{"name": t["name"], "examples": [e["source"] for e in t["examples"]]}
                      for t in program["tests"]]}
    # CPython's `test` package is hidden: the guest has none, and examples that import from it
    # (test.support) are then excluded instead of failing in the guest.
    boot = ("import json, sys\nsys.modules['test'] = None\n"
            "data = json.loads(sys.stdin.read())\n" + DRIVER.read_text())
    env = {"PYTHONHASHSEED": str(hash_seed), "PATH": os.environ.get("PATH", ""),
           "LANG": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", boot], input=json.dumps(data),
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"the driver failed on {program['module']}:\n{proc.stderr}")
    records = {}
    # Not splitlines(): it splits at the record mark too.
    for line in proc.stdout.split("\n"):
        if line.startswith("\x1e"):
            record = json.loads(line[1:])
            records[(record["test"], record["example"])] = (record["out"], record["exc"])
    return records


def documented_output_matches(example, out, exc):
    """doctest's own verdict on one run (DocTestRunner.__run)."""
    checker = doctest.OutputChecker()
    flags = example["flag_bits"]
    if exc is None:
        return checker.check_output(example["want"], out, flags)
    if example["exc_msg"] is None:
        return False
    if checker.check_output(example["exc_msg"], exc, flags):
        return True
    if flags & doctest.IGNORE_EXCEPTION_DETAIL:
        strip = doctest._strip_exception_details
        return checker.check_output(strip(example["exc_msg"]), strip(exc), flags)
    return False


def judge(example, runs):
    """Decides how the guest's output of one example is judged, from CPython's runs."""
    if any(not documented_output_matches(example, out, exc) for out, exc in runs):
        if len(set(runs)) > 1:
            note = "CPython 3.11's output here varies between runs and is not the documented one"
        else:
            out, exc = runs[0]
            note = "CPython 3.11 here prints " + json.dumps((exc if exc is not None else out)[:200])
        return {"judge": "excluded", "note": note}
    if len(set(runs)) == 1:
        out, exc = runs[0]
        return {"judge": "cpython", "want": out, "exc": exc}
    return {"judge": "documented", "want": example["want"], "exc": example["exc_msg"]}


def record(name, spec):
    wheel = fetch_wheel(*spec["wheel"]) if "wheel" in spec else None
    extracted = extract(spec["modules"], spec.get("globals", "module"), wheel)
    files = extracted["files"]
    programs = []
    for program in extracted["programs"]:
        runs = [run_driver(files, program, seed) for seed in range(1, RUNS + 1)]
        tests = []
        for test_index, test in enumerate(program["tests"]):
            examples = []
            for example_index, example in enumerate(test["examples"]):
                key = (test_index, example_index)
                outcome = judge(example, [run[key] for run in runs])
                examples.append({"source": example["source"], "flags": example["flags"],
                                 **outcome})
            tests.append({"name": test["name"], "lineno": test["lineno"],
                          "examples": examples})
        programs.append({"module": program["module"], "globals": program["globals"],
                         "tests": tests})
    if wheel:
        origin = f"{spec['wheel'][0]} {spec['wheel'][1]} from PyPI ({wheel.name}, " \
                 f"SHA-256 {spec['wheel'][2]})"
    else:
        origin = f"CPython {CPYTHON}'s Lib/ (the docstrings; expected output from CPython " \
                 f"{sys.version.split()[0]})"
    document = {"source": name, "origin": origin, "licence": spec["licence"],
                "files": files, "programs": programs}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=0, ensure_ascii=False) + "\n")
    counts = {}
    for program in programs:
        for test in program["tests"]:
            for example in test["examples"]:
                counts[example["judge"]] = counts.get(example["judge"], 0) + 1
    print(f"{name}: {counts} -> {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help=", ".join(SOURCES))
    args = parser.parse_args()
    unknown = set(args.sources) - set(SOURCES)
    if unknown:
        parser.error(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCES)}")
    if sys.version.split()[0] != CPYTHON:
        sys.exit(f"record with CPython {CPYTHON} (this is {sys.version.split()[0]})")
    for name in args.sources or SOURCES:
        record(name, SOURCES[name])


if __name__ == "__main__":
    main()
