#!/usr/bin/env python3
"""Regenerates the compatibility suite's known failures from the last run's reports.

Reads each runtime's report, target/tmp/compat-report.json (RustPython) and
target/tmp/compat-report-cpython.json (written by `cargo test --test compat`, the second only
with PYEXEC_TEST_CPYTHON_DIR set), and rewrites:
  tests/compat/known_failures.json,         every failing example's id -> the key of its
  tests/compat/known_failures_cpython.json  cause, for each runtime;
  docs/COMPATIBILITY.md                     per runtime: pass rates, the causes, and every
                                            failure with its cause;
  README.md                                 the pass-rate lines between the compat markers.
A failure keeps the cause it was listed with; a new one gets the first cause whose rule
matches it (CAUSES below, worded for RustPython), or "unclassified" - give it a real cause by
hand in the runtime's list and run this again. Run scripts/compat/update-known-failures.sh
for the whole loop (run the suite on both runtimes, regenerate, run again).
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TMP = ROOT / "target" / "tmp"
COMPAT = ROOT / "tests" / "compat"
# Each runtime the suite runs on: its report and its known failures.
RUNTIMES = [
    {"title": "RustPython (the default runtime)",
     "command": "cargo test --test compat every_example_behaves_as_in_cpython -- --exact",
     "report": TMP / "compat-report.json", "known": COMPAT / "known_failures.json"},
    {"title": "CPython 3.15 (the cpython runtime)",
     "command": "PYEXEC_TEST_CPYTHON_DIR=<installation> cargo test --test compat "
                "every_example_behaves_as_in_cpython_on_the_cpython_runtime",
     "report": TMP / "compat-report-cpython.json", "known": COMPAT / "known_failures_cpython.json"},
]
DOC = ROOT / "docs" / "COMPATIBILITY.md"
README = ROOT / "README.md"
README_BEGIN = "<!-- compat-pass-rate:begin -->"
README_END = "<!-- compat-pass-rate:end -->"


def text(output):
    """The part of an output doctest compares: the exception line if it raised, else stdout."""
    if output is None:
        return ""
    return output["exc"] if output["exc"] is not None else output["out"]


# (key, description, rule): the rule sees the id and the failure and says whether it applies.
CAUSES = [
    ("guest-crash",
     "The guest crashed (`internal`): a RustPython panic. A bug to fix, never acceptable.",
     lambda id, f: "(Internal)" in (f.get("error") or "")),
    ("limit",
     "The execution hit a limit (fuel, time, memory, stack) where CPython finishes quickly.",
     lambda id, f: f.get("error") is not None and "ended" in f["error"]),
    ("not-run",
     "Not run: an earlier example of the same docstring ended the execution.",
     lambda id, f: (f.get("error") or "").startswith("not run")),
    ("sandbox-no-threads",
     "The example starts a thread (more-itertools' `callback_iter` runs its function in one); "
     "the sandbox has no threads, so it raises RuntimeError, and the docstring's later "
     "examples depend on it. By design.",
     lambda id, f: "threads are not available in the sandbox" in text(f["got"])
     or id.startswith("more-itertools:more_itertools.more.callback_iter[")),
    ("exception-message",
     "The same exception with a different message: RustPython words some errors unlike "
     "CPython.",
     lambda id, f: f["got"] is not None and f["want"]["exc"] is not None
     and f["got"]["exc"] is not None
     and f["want"]["exc"].split(":")[0] == f["got"]["exc"].split(":")[0]),
    ("missing-feature",
     "RustPython lacks an attribute, function or module CPython 3.11 has.",
     lambda id, f: f["got"] is not None and f["want"]["exc"] is None
     and (f["got"]["exc"] or "").startswith(("AttributeError", "ImportError",
                                            "ModuleNotFoundError", "NotImplementedError"))),
    ("repr",
     "RustPython's `repr` of an object differs from CPython's.",
     lambda id, f: f["got"] is not None and f["want"]["exc"] is None and f["got"]["exc"] is None
     and text(f["want"]).replace(" ", "") != text(f["got"]).replace(" ", "")
     and sorted(text(f["want"])) == sorted(text(f["got"]))),
    ("unclassified",
     "Not yet analysed.",
     lambda id, f: True),
]


def classify(id, failure):
    return next(key for key, _, rule in CAUSES if rule(id, failure))


def shorten(value, limit=90):
    value = value.strip().replace("\n", "⏎").replace("|", "\\|")
    return value if len(value) <= limit else value[:limit - 1] + "…"


def regenerate(runtime):
    """Rewrites the runtime's known failures from its report; returns (report, failures, causes)."""
    report_path, known_path = runtime["report"], runtime["known"]
    if not report_path.exists():
        raise SystemExit(f"{report_path.relative_to(ROOT)} is missing: run the suite on "
                         f"{runtime['title']} first ({runtime['command']})")
    report = json.loads(report_path.read_text())
    known = json.loads(known_path.read_text())
    causes = {key: description for key, description, _ in CAUSES}
    causes.update(known.get("causes", {}))
    failures = {}
    for id, failure in sorted(report["failures"].items()):
        failures[id] = known["failures"].get(id) or classify(id, failure)
    used = {key: causes[key] for key in sorted(set(failures.values()))}
    known_path.write_text(json.dumps({"causes": used, "failures": failures}, indent=2,
                                     ensure_ascii=False) + "\n")
    return report, failures, used


def rate(counts):
    return 100.0 * counts["passed"] / max(counts["passed"] + counts["failed"], 1)


def section(runtime, report, failures, causes):
    """The doc's part about one runtime: its pass rates, the causes, every failure."""
    total = report["passed"] + report["failed"]
    lines = [
        f"## {runtime['title']}",
        "",
        f"`{runtime['command']}`, whose failures are listed in "
        f"`{runtime['known'].relative_to(ROOT)}`.",
        "",
        f"**{report['passed']} of {total} examples pass ({rate(report):.1f}%).**",
        "",
        "| source | passed | failed | pass rate | not judged |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for source, counts in report["per_source"].items():
        lines.append(f"| {source} | {counts['passed']} | {counts['failed']} | "
                     f"{rate(counts):.1f}% | {counts['excluded']} |")
    lines += ["", "### Causes", "", "| cause | failures | what |", "| --- | ---: | --- |"]
    for key, description in causes.items():
        count = sum(1 for cause in failures.values() if cause == key)
        lines.append(f"| `{key}` | {count} | {description} |")
    lines += ["", "### Every failure", "",
              "| example | cause | CPython 3.11 | pyexec |", "| --- | --- | --- | --- |"]
    for id, cause in failures.items():
        failure = report["failures"][id]
        got = failure.get("error") or text(failure["got"])
        lines.append(f"| `{id}` | `{cause}` | {shorten(text(failure['want']))} | "
                     f"{shorten(got)} |")
    return lines + [""]


def main():
    sections, summary = [], []
    for runtime in RUNTIMES:
        report, failures, causes = regenerate(runtime)
        sections += section(runtime, report, failures, causes)
        total = report["passed"] + report["failed"]
        summary.append(f"- **{runtime['title']}: {report['passed']} of {total} "
                       f"({rate(report):.1f}%)**")
        summary += [f"  - {source}: {c['passed']} of {c['passed'] + c['failed']} pass"
                    for source, c in report["per_source"].items()]
        print(f"{runtime['title']}: {len(failures)} known failures ({rate(report):.1f}% pass); "
              f"wrote {runtime['known'].relative_to(ROOT)}")
    lines = [
        "# Compatibility",
        "",
        "pyexec runs RustPython by default and CPython 3.15 on request (`\"runtime\": "
        "\"cpython\"`). This page lists where each differs from CPython 3.11 on real-world "
        "Python that was not written for pyexec: the doctest examples of PyPI packages and of "
        "CPython's standard library and tests, each run in the sandbox and compared with the "
        "output CPython 3.11 recorded for it (tests/compat/README.md says how the suite is "
        "built and judged).",
        "",
        "Generated by `scripts/compat/known_failures.py` from the last run of "
        "`cargo test --test compat` on each runtime; do not edit by hand (give a failure its "
        "cause in the runtime's `tests/compat/known_failures*.json`).",
        "",
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines + sections).rstrip("\n") + "\n")

    readme = README.read_text()
    if README_BEGIN in readme:
        head, rest = readme.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
        README.write_text(head + README_BEGIN + "\n" + "\n".join(summary) + "\n" + README_END
                          + tail)
    print(f"wrote {DOC.relative_to(ROOT)}, {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
