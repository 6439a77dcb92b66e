//! `set` and `frozenset` iterate, print and `pop` in CPython 3.11's order for elements whose hash
//! CPython fixes (ints, floats, bools, tuples of them): random sequences of set operations run
//! in the guest and under `python3`, with `list(s)` compared after every step, plus fixed
//! regressions whose expected answers were recorded from CPython 3.11.7.

use proptest::prelude::*;
use serde_json::json;

use super::{assert_reference_is_cpython_3_11, cpython_result, guest_result, runner};

/// An element literal: small ints (equal hashes), multiples of 8 (colliding in small tables),
/// ints around the hash modulus 2**61 - 1, floats (equal to ints or not), bools, and pairs.
fn element() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        4 => (-40i64..80).prop_map(|n| n.to_string()),
        2 => (-6i64..16).prop_map(|n| (n * 8).to_string()),
        1 => (-2i64..3).prop_map(|n| format!("2**61 - 1 + ({n})")),
        1 => prop::sample::select(vec!["0.5", "-2.25", "3.0", "1e100", "-0.0", "-1.0"])
            .prop_map(String::from),
        1 => prop::sample::select(vec!["True", "False"]).prop_map(String::from),
    ];
    prop_oneof![
        5 => atom.clone(),
        1 => (atom.clone(), atom).prop_map(|(a, b)| format!("({a}, {b})")),
    ]
}

fn elements() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(element(), 0..14)
}

/// An iterable of `elements` in one of the shapes `set_update_internal` and friends treat
/// differently: a list, a generator, a set, a frozenset, an exact dict, a range.
fn iterable() -> impl Strategy<Value = String> {
    (elements(), 0..6u8, -20i64..40, 0i64..30).prop_map(|(items, shape, start, len)| {
        let list = format!("[{}]", items.join(", "));
        match shape {
            0 => list,
            1 => format!("(x for x in {list})"),
            2 => format!("set({list})"),
            3 => format!("frozenset({list})"),
            4 => format!("dict.fromkeys({list})"),
            _ => format!("range({start}, {})", start + len),
        }
    })
}

/// Python statements for one step on the set `s`; each ends by recording `list(s)`.
fn step() -> impl Strategy<Value = String> {
    let set_of = || iterable().prop_map(|items| format!("set({items})"));
    prop_oneof![
        6 => element().prop_map(|e| format!("s.add({e})")),
        3 => element().prop_map(|e| format!("s.discard({e})")),
        1 => element().prop_map(|e| format!("if {e} in s: s.remove({e})")),
        3 => Just("if s: t(s.pop())".to_owned()),
        2 => iterable().prop_map(|i| format!("s.update({i})")),
        1 => (iterable(), iterable()).prop_map(|(a, b)| format!("s.update({a}, {b})")),
        2 => iterable().prop_map(|i| format!("s.difference_update({i})")),
        2 => iterable().prop_map(|i| format!("s.intersection_update({i})")),
        2 => iterable().prop_map(|i| format!("s.symmetric_difference_update({i})")),
        2 => (prop::sample::select(vec!["|", "&", "-", "^"]), set_of())
            .prop_map(|(op, other)| format!("s {op}= {other}")),
        2 => (prop::sample::select(vec!["|", "&", "-", "^"]), set_of())
            .prop_map(|(op, other)| format!("s = s {op} {other}")),
        1 => (prop::sample::select(vec!["|", "&", "-", "^"]), set_of())
            .prop_map(|(op, other)| format!("s = {other} {op} s")),
        1 => prop::sample::select(vec!["s |= s", "s &= s", "s -= s", "s ^= s", "s = s | s"])
            .prop_map(String::from),
        2 => (
            prop::sample::select(vec!["union", "intersection", "difference", "symmetric_difference"]),
            iterable()
        )
            .prop_map(|(method, other)| format!("s = s.{method}({other})")),
        1 => (prop::sample::select(vec!["union", "intersection", "difference"]), iterable(), iterable())
            .prop_map(|(method, a, b)| format!("s = s.{method}({a}, {b})")),
        1 => Just("s.clear()".to_owned()),
        2 => Just("s = s.copy()".to_owned()),
        1 => Just("s = set(s)".to_owned()),
        1 => Just("s = set(frozenset(s))".to_owned()),
        2 => elements().prop_map(|items| format!("s = {{x for x in [{}]}}", items.join(", "))),
        2 => (element(), elements())
            .prop_map(|(first, rest)| format!("s = {{{first}, {}}}", rest.join(", "))),
        1 => (element(), elements())
            .prop_map(|(first, rest)| format!("s = {{*[{}], {first}}}", rest.join(", "))),
        1 => (element(), elements())
            .prop_map(|(first, rest)| format!("t([x for x in {{{first}, {}}}])", rest.join(", "))),
        1 => Just("t(frozenset(s))".to_owned()),
        1 => Just("t(frozenset(s) | frozenset(s))".to_owned()),
    ]
}

/// One program: the steps, each followed by recording the set's order in `result`.
fn program(steps: &[String]) -> String {
    let mut code = String::from(
        "result = []\ndef t(x):\n    result.append(repr(list(x) if isinstance(x, (set, frozenset)) else x))\ns = set()\n",
    );
    for step in steps {
        code.push_str(step);
        code.push_str("\nt(s)\n");
    }
    code
}

#[test]
fn random_set_operations_leave_cpythons_order_after_every_step() {
    assert_reference_is_cpython_3_11();
    runner(48)
        .run(&prop::collection::vec(step(), 1..30), |steps| {
            let code = program(&steps);
            let expected = cpython_result(&code);
            prop_assert_eq!(guest_result(&code), expected, "program:\n{}", code);
            Ok(())
        })
        .unwrap();
}

/// The program of the report: primes kept in a set, walked until a sum passes a limit.
#[test]
fn a_sieve_walking_its_set_of_primes_stops_where_cpython_stops() {
    let code = "primes = set()
for n in range(30, 1, -1):
    if all(n % d for d in range(2, int(n ** 0.5) + 1)):
        primes.add(n)
total = 0
taken = 0
for p in primes:
    if total + p > 20:
        break
    total += p
    taken += 1
result = taken";
    assert_eq!(guest_result(code), json!(4));
}

#[test]
fn pop_empties_a_mixed_set_in_cpythons_order() {
    let code = "s = {-5, 3, 17, -1, 8, 100, 2**61, (1, 2), 0.5, True}
result = repr([s.pop() for _ in range(len(s))])";
    assert_eq!(
        guest_result(code),
        json!("[0.5, 2305843009213693952, True, 3, 100, (1, 2), 8, 17, -5, -1]")
    );
}

#[test]
fn repr_shows_cpythons_order() {
    let code = "s = set(range(-10, 10))
s ^= {(0, 1), 7.5, -3}
result = repr(s)";
    assert_eq!(
        guest_result(code),
        json!("{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7.5, (0, 1), -10, -9, -8, -7, -6, -5, -4, -2, -1}")
    );
}

/// CPython compiles a constant set literal into a frozenset that it rebuilds from its own
/// iteration order, and iterating the literal walks that rebuilt frozenset.
#[test]
fn a_constant_set_literal_iterates_like_cpythons_folded_frozenset() {
    let code = "result = repr([x for x in {10, -490938, 13, 150914, -29, 92487, 7, -908801, 243996, -19, -39}])";
    assert_eq!(
        guest_result(code),
        json!("[150914, -29, -490938, 7, 92487, 10, 13, -19, -39, 243996, -908801]")
    );
}

#[test]
fn set_semantics_hashing_and_errors_are_unchanged() {
    let code = "a = {1, 2, 3, (4, 5)}
b = frozenset([3, 4, (4, 5)])
errors = []
s = {1, 2, 3}
try:
    for x in s:
        s.add(x + 10)
except RuntimeError as e:
    errors.append(str(e))
walked = []
s = {1, 2, 3}
for x in s:
    walked.append(x)
    s.add(99)
    s.discard(99)
it = iter({1, 2, 3})
next(it)
result = [
    sorted(map(repr, a | b)), sorted(map(repr, a & b)), sorted(map(repr, a - b)),
    sorted(map(repr, a ^ b)), a == {3, 2, 1, (4, 5)}, b == frozenset({3, (4, 5), 4}),
    a <= a | b, b < a, hash(frozenset({1, 2, 3})), hash(b) == hash(frozenset([(4, 5), 4, 3])),
    errors, walked, it.__length_hint__(), repr(set()), repr(frozenset()),
    repr(frozenset({1, 2})), {frozenset({1}): 'x'}[frozenset([1])],
]";
    assert_eq!(
        guest_result(code),
        json!([
            ["(4, 5)", "1", "2", "3", "4"],
            ["(4, 5)", "3"],
            ["1", "2"],
            ["1", "2", "4"],
            true,
            true,
            true,
            false,
            -272_375_401_224_217_160_i64,
            true,
            ["Set changed size during iteration"],
            [1, 2, 3],
            2,
            "set()",
            "frozenset()",
            "frozenset({1, 2})",
            "x"
        ])
    );
}
