//! Division answers bit for bit what CPython 3.11 answers: `/`, `//`, `%`, `divmod` and `**`
//! with a negative exponent over ints (small, near 2**53, hundreds of digits, at the overflow and
//! subnormal edges) and floats (zeros of both signs, infinities, NaN, subnormals, random bits),
//! once as literal expressions the compiler folds and once on values it cannot see, compared as
//! `float.hex` (so `-0.0` is not `0.0`) and exception type and message; plus fixed regressions
//! recorded from CPython 3.11.7.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use super::{assert_reference_is_cpython_3_11, cpython_result, guest_result, runner};

/// Encodes every outcome the same way in both interpreters: floats by `float.hex` (NaN's sign is
/// the hardware's, not Python's), tuples element-wise, errors by type and message.
const PRELUDE: &str = "\
def enc(v):
    if isinstance(v, float):
        return v.hex() if v == v else 'nan'
    if isinstance(v, tuple):
        return '(' + ', '.join(map(enc, v)) + ')'
    if isinstance(v, complex):
        return 'complex'
    return repr(v)
def show(f):
    try:
        return enc(f())
    except Exception as e:
        return type(e).__name__ + ': ' + str(e)
result = []
";

/// An int literal, parenthesised when negative.
fn int_operand() -> impl Strategy<Value = String> {
    let magnitude = prop_oneof![
        3 => (0u32..21).prop_map(|n| n.to_string()),
        2 => (-3i32..4).prop_map(|k| format!("(2**53 + {k})")),
        1 => (54u32..70, -3i32..4).prop_map(|(e, k)| format!("(2**{e} + {k})")),
        3 => "[1-9][0-9]{0,399}",
        1 => (0u32..341).prop_map(|e| format!("10**{e}")),
        2 => (0u32..1101).prop_map(|e| format!("2**{e}")),
        1 => (prop::sample::select(vec![969u32, 970, 971]), -1i32..2)
            .prop_map(|(e, k)| format!("(2**1024 - 2**{e} + {k})")),
        2 => (1u64..1 << 60, 0u32..1001).prop_map(|(m, e)| format!("({m} * 2**{e})")),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ];
    (magnitude, any::<bool>()).prop_map(
        |(m, negative)| {
            if negative { format!("(-{m})") } else { m }
        },
    )
}

/// A float literal, parenthesised when negative: special values or any finite bit pattern.
fn float_operand() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        "0.0",
        "(-0.0)",
        "1.5",
        "(-2.5)",
        "1e308",
        "(-1e308)",
        "5e-324",
        "(-5e-324)",
        "2.2250738585072014e-308",
        "float('inf')",
        "float('-inf')",
        "float('nan')",
        "0.1",
        "(-3.0)",
        "7.0",
        "1e-300",
    ])
    .prop_map(String::from);
    let finite = any::<u64>()
        .prop_map(f64::from_bits)
        .prop_filter("finite", |x| x.is_finite())
        .prop_map(|x| format!("float.fromhex('{}')", float_hex(x)));
    prop_oneof![special, finite]
}

/// `x.hex()` as Python writes it, so the literal is exactly `x`.
fn float_hex(x: f64) -> String {
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let mantissa = bits & ((1 << 52) - 1);
    if exponent == 0 {
        format!("{sign}0x0.{mantissa:013x}p-1022")
    } else {
        format!("{sign}0x1.{mantissa:013x}p{}", exponent - 1023)
    }
}

/// The expressions for one pair of operands: every division operator, and a power with a
/// negative exponent (an int one for an int base, the float itself otherwise).
fn cases() -> impl Strategy<Value = Vec<String>> {
    let operand = |is_int: bool| {
        if is_int {
            int_operand().boxed()
        } else {
            float_operand().boxed()
        }
    };
    let pair = prop::sample::select(vec![
        (true, true),
        (true, true),
        (true, false),
        (false, true),
        (false, false),
    ])
    .prop_flat_map(move |(a_int, b_int)| (operand(a_int), operand(b_int), Just(b_int), 1u32..1101));
    pair.prop_map(|(a, b, b_int, exponent)| {
        let power = if b_int {
            format!("{a} ** (-{exponent})")
        } else {
            format!("{a} ** {b}")
        };
        vec![
            format!("{a} / {b}"),
            format!("{a} // {b}"),
            format!("{a} % {b}"),
            format!("divmod({a}, {b})"),
            power,
        ]
    })
}

/// `count` deterministic pairs' expressions (from the suite's fixed seed), flattened.
fn expressions(count: usize) -> Vec<String> {
    let mut runner = runner(1);
    let strategy = prop::collection::vec(cases(), count);
    let tree = strategy
        .new_tree(&mut runner)
        .expect("the generator yields cases");
    tree.current().into_iter().flatten().collect()
}

/// A program evaluating each expression as written, where the compiler folds constants.
fn folded_program(expressions: &[String]) -> String {
    let mut program = PRELUDE.to_owned();
    for expression in expressions {
        program.push_str(&format!("result.append(show(lambda: {expression}))\n"));
    }
    program
}

/// A program evaluating the same operations on values the compiler cannot see: each operand is
/// computed by `eval` from its source text, then the operator runs on the variables.
fn run_time_program(expressions: &[String]) -> String {
    let mut program = PRELUDE.to_owned();
    program.push_str("ops = {\n");
    for (symbol, call) in [
        ("/", "a / b"),
        ("//", "a // b"),
        ("%", "a % b"),
        ("**", "a ** b"),
        ("divmod", "divmod(a, b)"),
    ] {
        program.push_str(&format!("    {symbol:?}: lambda a, b: {call},\n"));
    }
    program.push_str("}\ncases = [\n");
    for expression in expressions {
        let (a, op, b) = split(expression);
        program.push_str(&format!("    ({a:?}, {op:?}, {b:?}),\n"));
    }
    program.push_str(
        "]\nfor a, op, b in cases:\n    a, b = eval(a), eval(b)\n    \
         result.append(show(lambda: ops[op](a, b)))\n",
    );
    program
}

/// `(left, operator, right)` of an expression built by [`cases`].
fn split(expression: &str) -> (&str, &str, &str) {
    if let Some(arguments) = expression.strip_prefix("divmod(") {
        let (a, b) = arguments[..arguments.len() - 1]
            .split_once(", ")
            .expect("divmod of two operands");
        return (a, "divmod", b);
    }
    for op in [" // ", " ** ", " / ", " % "] {
        if let Some((a, b)) = expression.split_once(op) {
            return (a, op.trim(), b);
        }
    }
    panic!("not a generated expression: {expression}")
}

/// Runs `program` in the guest and under `python3` and lists every expression they disagree on.
fn assert_same_answers(kind: &str, expressions: &[String], program: &str) {
    let (guest, cpython) = (guest_result(program), cpython_result(program));
    let (Value::Array(guest), Value::Array(cpython)) = (&guest, &cpython) else {
        panic!("both results are lists: {guest} / {cpython}");
    };
    assert_eq!(
        guest.len(),
        expressions.len(),
        "{kind}: one answer per expression"
    );
    assert_eq!(
        cpython.len(),
        expressions.len(),
        "{kind}: one answer per expression"
    );
    let differences: Vec<String> = expressions
        .iter()
        .zip(guest.iter().zip(cpython))
        .filter(|(_, (guest, cpython))| guest != cpython)
        .map(|(expression, (guest, cpython))| {
            format!("  {expression}\n    guest {guest}\n    CPython {cpython}")
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{kind}: {} of {} answers differ from CPython 3.11:\n{}",
        differences.len(),
        expressions.len(),
        differences.join("\n")
    );
}

/// A few thousand operations, in batches the sandbox runs well inside its limits.
const BATCHES: usize = 4;
const PAIRS_PER_BATCH: usize = 160;

#[test]
fn division_matches_cpython_folded_and_at_run_time() {
    assert_reference_is_cpython_3_11();
    let all = expressions(BATCHES * PAIRS_PER_BATCH);
    for batch in all.chunks(all.len() / BATCHES) {
        assert_same_answers("folded", batch, &folded_program(batch));
        assert_same_answers("run time", batch, &run_time_program(batch));
    }
}

/// The examples and the signed zero's consumers, with CPython 3.11.7's answers.
#[test]
fn signed_zero_and_big_quotients_as_cpython() {
    let program = "\
import math
zero, minus_three, seven, big = 0, -3, 7, -10**30
q = zero / minus_three
def geometric(a, r, n):
    return sum(a * r**k for k in range(n)) if n else a * 0 / (1 - r)
result = [
    (7 / -10**30).hex(), (seven / big).hex(), (-7 / 10**30).hex(),
    q.hex(), repr(q), str(q), f'{q:.2f}', '%g' % q, format(q, 'e'),
    math.copysign(1.0, q).hex(), math.atan2(q, -1.0).hex(), math.atan2(0 / -5, -1.0).hex(),
    (0 / -5).hex(), (zero * 1 / -4).hex(), geometric(0, 2, 0).hex(),
    (10**400 // -10**399, 10**400 % -7, divmod(-10**400, 3)[1]),
    (2**1024 - 2**970 - 1) / 1 == 1.7976931348623157e308,
    ((-1) ** -3).hex(), 2 ** -1074 == 5e-324, ((-2) ** -1075).hex(),
]
for expression in ['1/0', '1//0', '1%0', 'divmod(1, 0)', '1.0/0', '1.0//0', '1.0%0',
                   'divmod(1.0, 0)', '0**-1', '0.0**-1.0', '(2**1024 - 2**970) / 1',
                   '10**400 / 1.0', 'float(2**1024 - 2**970)', '10.0 ** 400']:
    try:
        eval(expression)
    except (ZeroDivisionError, OverflowError) as e:
        result.append(type(e).__name__ + ': ' + str(e))
";
    let expected = json!([
        "-0x1.1bf427f0e4a4cp-97",
        "-0x1.1bf427f0e4a4cp-97",
        "-0x1.1bf427f0e4a4cp-97",
        "-0x0.0p+0",
        "-0.0",
        "-0.0",
        "-0.00",
        "-0",
        "-0.000000e+00",
        "-0x1.0000000000000p+0",
        "-0x1.921fb54442d18p+1",
        "-0x1.921fb54442d18p+1",
        "-0x0.0p+0",
        "-0x0.0p+0",
        "-0x0.0p+0",
        [-10, -3, 2],
        true,
        "-0x1.0000000000000p+0",
        true,
        "-0x0.0p+0",
        "ZeroDivisionError: division by zero",
        "ZeroDivisionError: integer division or modulo by zero",
        "ZeroDivisionError: integer modulo by zero",
        "ZeroDivisionError: integer division or modulo by zero",
        "ZeroDivisionError: float division by zero",
        "ZeroDivisionError: float floor division by zero",
        "ZeroDivisionError: float modulo",
        "ZeroDivisionError: float divmod()",
        "ZeroDivisionError: 0.0 cannot be raised to a negative power",
        "ZeroDivisionError: 0.0 cannot be raised to a negative power",
        "OverflowError: integer division result too large for a float",
        "OverflowError: int too large to convert to float",
        "OverflowError: int too large to convert to float",
        "OverflowError: (34, 'Numerical result out of range')",
    ]);
    assert_eq!(
        cpython_result(program),
        expected,
        "recorded from CPython 3.11.7"
    );
    assert_eq!(guest_result(program), expected);
}
