#!/usr/bin/env python3
"""Writes random valid Python programs, one JSON line each ({"code": str}), for a bounded time.

hypothesmith generates them from Python's grammar (from_grammar) and from libcst's node types
(from_node); each one compiles under this CPython, so the guest must never answer `internal` to
it (tests/compat/fuzz.rs runs them). Needs `pip install hypothesmith==0.3.3`.

Usage: python3 scripts/compat/generate_programs.py SECONDS [SEED]
"""

import json
import sys
import time
import warnings

import hypothesis
import hypothesmith
from hypothesis import HealthCheck, Phase, given, settings, strategies as st


class TimeUp(Exception):
    """Ends the generation loop: hypothesis stops at the first exception."""


def main():
    seconds = float(sys.argv[1])
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else None
    deadline = time.monotonic() + seconds
    programs = st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node())
    seen = set()

    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs)
    def emit(code):
        if time.monotonic() > deadline:
            raise TimeUp
        if code in seen:
            return
        seen.add(code)
        try:
            code.encode("utf-8")  # a lone surrogate cannot travel in a JSON request
            compile(code, "<code>", "exec")
        except (UnicodeEncodeError, SyntaxError, ValueError):
            return  # hypothesmith's node strategy may produce code CPython 3.11 rejects
        print(json.dumps({"code": code}), flush=True)

    if seed is not None:
        emit = hypothesis.seed(seed)(emit)
    warnings.simplefilter("ignore")
    try:
        emit()
    except TimeUp:
        pass


if __name__ == "__main__":
    main()
