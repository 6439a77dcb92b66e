//! Constant sets, frozensets and tuples in every position the compiler folds them: the top-level
//! compile of `code` must build them as `exec(compile(...))` does (a frozenset constant once
//! panicked the guest). Expected results were recorded from CPython 3.11.

use serde_json::{Value, json};

use super::{result, run};

/// (what, code, `result` under CPython 3.11); set contents are compared sorted, because
/// CPython's order of `str` sets is randomised.
const CASES: &[(&str, &str, &str)] = &[
    (
        "module level set",
        r#"x = {3, 1, 2}
result = sorted(x)"#,
        r#"[1, 2, 3]"#,
    ),
    (
        "module level membership",
        r#"result = ['A' in {'A', 'B'}, 'C' in {'A', 'B'}, 3 not in {1, 2}]"#,
        r#"[true, false, true]"#,
    ),
    (
        "module level loop",
        r#"out = []
for x in {'b', 'a'}:
    out.append(x)
result = sorted(out)"#,
        r#"["a", "b"]"#,
    ),
    (
        "function membership",
        r#"def f(c):
    return c in {'A', 'B'}
result = [f('A'), f('Z')]"#,
        r#"[true, false]"#,
    ),
    (
        "function loop",
        r#"def f():
    out = []
    for x in {'a', 'b', 'c'}:
        out.append(x)
    return sorted(out)
result = f()"#,
        r#"["a", "b", "c"]"#,
    ),
    (
        "lambda",
        r#"f = lambda c: c not in {1, 2, 3}
result = [f(1), f(4)]"#,
        r#"[false, true]"#,
    ),
    (
        "list comprehension",
        r#"result = [c in {'A', 'B'} for c in 'ABC']"#,
        r#"[true, true, false]"#,
    ),
    (
        "set comprehension over a set",
        r#"result = sorted({x * 2 for x in {1, 2, 3}})"#,
        r#"[2, 4, 6]"#,
    ),
    (
        "dict comprehension",
        r#"result = {c: c in {'x', 'y'} for c in 'xz'}"#,
        r#"{"x": true, "z": false}"#,
    ),
    (
        "generator expression",
        r#"result = sum(1 for c in 'abcab' if c in {'a', 'b'})"#,
        r#"4"#,
    ),
    (
        "nested function",
        r#"def outer():
    def inner(x):
        return x in {(1, 2), (3, 4)}
    return [inner((1, 2)), inner((2, 1))]
result = outer()"#,
        r#"[true, false]"#,
    ),
    (
        "closure",
        r#"def outer(k):
    def inner():
        return k in {'p', 'q'} and all(v in {1, 2} for v in (1, 2))
    return inner()
result = [outer('p'), outer('r')]"#,
        r#"[true, false]"#,
    ),
    (
        "class body",
        r#"class C:
    ok = 'a' in {'a', 'b'}
    for _k in {'x', 'y'}:
        pass
    def check(self, k):
        return k in {'x', 'y'}
result = [C.ok, C().check('x'), C().check('a')]"#,
        r#"[true, true, false]"#,
    ),
    (
        "method and staticmethod",
        r#"class C:
    @staticmethod
    def s(x):
        return x in {1.5, 2.5}
    def m(self, x):
        return [y for y in (1, 2, 3) if y in {x, 3}]
result = [C.s(1.5), C.s(1), C().m(1)]"#,
        r#"[true, false, [1, 3]]"#,
    ),
    (
        "mixed constant types",
        r#"def f(x):
    return x in {1, 2.5, 's', b'b', (1, 'two'), None, True, -3, 10**30}
result = [f(v) for v in (1, 2.5, 's', b'b', (1, 'two'), None, True, -3, 10**30, 'zz', (1, 2))]"#,
        r#"[true, true, true, true, true, true, true, true, true, false, false]"#,
    ),
    (
        "equal numbers",
        r#"result = [1 in {1.0}, 1.0 in {True}, len({1, 1.0, True}), 0 in {False, 2}]"#,
        r#"[true, true, 1, true]"#,
    ),
    (
        "big integers",
        r#"def f(n):
    return n in {2**64, -(2**70), 10**30}
result = [f(2**64), f(10**30), f(5)]"#,
        r#"[true, true, false]"#,
    ),
    (
        "frozenset and set values",
        r#"s = {1, 2}
f = frozenset({3, 4})
def g():
    return frozenset({'a'}) | {'b'}
result = [sorted(s), sorted(f), sorted(g()), type(f).__name__]"#,
        r#"[[1, 2], [3, 4], ["a", "b"], "frozenset"]"#,
    ),
    (
        "tuples everywhere",
        r#"T = (1, (2, 3), 'x')
def g():
    return (1, 2, (3, (4, 5)))
class C:
    t = ('a', ('b',))
result = [T, g(), (lambda: (None, True, 1.5))(), C.t, [t for t in ((1, 2), (3, 4))]]"#,
        r#"[[1, [2, 3], "x"], [1, 2, [3, [4, 5]]], [null, true, 1.5], ["a", ["b"]], [[1, 2], [3, 4]]]"#,
    ),
    (
        "default argument",
        r#"def f(x, allowed={1, 2}):
    return x in allowed
result = [f(1), f(3)]"#,
        r#"[true, false]"#,
    ),
    (
        "async function body",
        r#"async def f(x):
    return x in {'a', 'b'}
c = f('a')
try:
    c.send(None)
except StopIteration as stop:
    result = stop.value"#,
        r#"true"#,
    ),
    (
        "generator function",
        r#"def g():
    for x in {3, 4}:
        yield x in {4, 5}
result = sorted(g())"#,
        r#"[false, true]"#,
    ),
    (
        "conditional and boolean",
        r#"def f(x):
    if x in {1, 2} or x in {'a'}:
        return 'yes'
    return 'yes' if x in {(), ('t',)} else 'no'
result = [f(1), f('a'), f(()), f(9)]"#,
        r#"["yes", "yes", "yes", "no"]"#,
    ),
    (
        "try and with",
        r#"import contextlib
def f(x):
    try:
        with contextlib.nullcontext():
            return x in {'a', 'b'}
    finally:
        pass
result = [f('a'), f('c')]"#,
        r#"[true, false]"#,
    ),
    (
        "while loop",
        r#"def f(n):
    steps = 0
    while n not in {1, 0}:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps
result = f(27)"#,
        r#"111"#,
    ),
    (
        "constants in exec",
        r#"ns = {}
exec('r = 2 in {1, 2}\ndef f():\n    return 3 in {3}\nr2 = f()', ns)
result = [ns['r'], ns['r2']]"#,
        r#"[true, true]"#,
    ),
];

#[tokio::test]
async fn constant_sets_frozensets_and_tuples_work_wherever_they_appear() {
    let mut failures = Vec::new();
    for (what, code, expected) in CASES {
        let expected: Value = serde_json::from_str(expected).unwrap();
        let outcome = run(code).await;
        match &outcome.result {
            Ok(raw) if serde_json::from_str::<Value>(raw.get()).unwrap() == expected => {}
            Ok(raw) => failures.push(format!(
                "{what}: got {}, CPython gives {expected}",
                raw.get()
            )),
            Err(err) => failures.push(format!("{what}: {err:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_issue_examples_succeed() {
    assert_eq!(
        result(&run("x = {3, 1, 2}\nresult = len(x)").await),
        json!(3)
    );
    assert_eq!(
        result(&run("result = 'A' in {'A', 'B'}").await),
        json!(true)
    );
}
