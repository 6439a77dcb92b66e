"""Runs one module's doctest examples, the way doctest runs them, and reports each one.

The same program runs under pyexec (tests/compat/main.rs) and under CPython when the expected
outputs are recorded (scripts/compat/record.py), so both see the same environment: no file
system, the package's sources served from `data["files"]`, and a fresh copy of the module's
globals for every docstring. It only runs examples and reports what they did; judging is the
host's job, so a bug in the guest's own doctest module cannot make an example pass.

`data`: {"files": {path: source}, "module": name, "globals": "module" | "empty",
         "tests": [{"name": str, "examples": [source, ...]}, ...]}
Each example's report is one line on the real stdout: RECORD_MARK + JSON
{"test": i, "example": j, "out": what it printed, "exc": its exception's last line or null}.
"""

import __future__
import importlib
import importlib.abc
import importlib.util
import io
import json
import random
import sys
import traceback

RECORD_MARK = "\x1e"
FILES = data["files"]
REAL_STDOUT = sys.stdout


class SourceFiles(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the shipped package sources (`pkg/__init__.py`, `pkg/mod.py`) from memory."""

    def find_spec(self, fullname, path=None, target=None):
        base = fullname.replace(".", "/")
        for filename, is_package in ((base + "/__init__.py", True), (base + ".py", False)):
            if filename in FILES:
                spec = importlib.util.spec_from_loader(
                    fullname, self, origin=filename, is_package=is_package
                )
                spec.has_location = True
                return spec
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        filename = module.__spec__.origin
        exec(compile(FILES[filename], filename, "exec"), module.__dict__)


def future_flags(globs):
    """The `from __future__` flags the module's globals carry, as doctest passes them on."""
    flags = 0
    for name in __future__.all_feature_names:
        feature = globs.get(name)
        if feature is getattr(__future__, name):
            flags |= feature.compiler_flag
    return flags


def fresh_globals():
    if data["globals"] == "empty":
        return {"__name__": data["module"]}
    return dict(importlib.import_module(data["module"]).__dict__)


def run_example(source, name, globs, flags):
    """Runs one example in 'single' mode (expression values are displayed, as at a prompt)."""
    captured = io.StringIO()
    sys.stdout = captured
    exc = None
    try:
        exec(compile(source, name, "single", flags, True), globs)
    except KeyboardInterrupt:
        raise
    except BaseException:
        kind, value = sys.exc_info()[:2]
        exc = traceback.format_exception_only(kind, value)[-1]
    finally:
        sys.stdout = REAL_STDOUT
    out = captured.getvalue()
    # doctest's _SpoofOut: whatever was written ends with a newline.
    if out and not out.endswith("\n"):
        out += "\n"
    return out, exc


def report(test, example, out, exc):
    record = {"test": test, "example": example, "out": out, "exc": exc}
    REAL_STDOUT.write(RECORD_MARK + json.dumps(record) + "\n")
    REAL_STDOUT.flush()


sys.meta_path.insert(0, SourceFiles())
sys.displayhook = sys.__displayhook__
for test_index, test in enumerate(data["tests"]):
    # Examples that draw random numbers see the same stream on every run and interpreter.
    random.seed(0)
    try:
        globs = fresh_globals()
    except Exception:
        failure = "module import failed: " + traceback.format_exc().splitlines()[-1] + "\n"
        for example_index in range(len(test["examples"])):
            report(test_index, example_index, "", failure)
        continue
    flags = future_flags(globs)
    for example_index, source in enumerate(test["examples"]):
        name = "<doctest %s[%d]>" % (test["name"], example_index)
        out, exc = run_example(source, name, globs, flags)
        report(test_index, example_index, out, exc)
    globs.clear()
