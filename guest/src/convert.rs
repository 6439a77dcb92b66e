//! Exact conversion between JSON and Python values.
//!
//! Conversion runs no Python code: it reads the objects' Rust payloads, so a `result` whose type
//! overrides `__iter__`, `items` or `__repr__` serialises as its underlying value, and user code
//! cannot change how the reply is written.

use std::fmt::Write;
use std::str::FromStr;

use malachite_bigint::BigInt;
use rustpython_vm::{
    builtins::{PyDict, PyFloat, PyInt, PyList, PyStr, PyTuple},
    AsObject, PyObject, PyObjectRef, VirtualMachine,
};
use serde_json::Value;

use crate::report::ErrorReport;

/// Deeper `result`s are refused: CPython's json would hit its recursion limit near here too,
/// and the host parses the reply with a bounded parser.
pub const MAX_RESULT_DEPTH: usize = 100;

/// JSON to Python, the way `json.loads` does it: numbers without a fraction or exponent become
/// exact ints, the rest floats.
pub fn json_to_python(vm: &VirtualMachine, value: &Value) -> PyObjectRef {
    match value {
        Value::Null => vm.ctx.none(),
        Value::Bool(b) => vm.ctx.new_bool(*b).into(),
        Value::Number(n) => {
            let text = n.as_str();
            if text.contains(['.', 'e', 'E']) {
                vm.ctx
                    .new_float(f64::from_str(text).unwrap_or(f64::NAN))
                    .into()
            } else if let Ok(small) = i64::from_str(text) {
                vm.ctx.new_int(small).into()
            } else {
                let big = BigInt::from_str(text).unwrap_or_default();
                vm.ctx.new_bigint(&big).into()
            }
        }
        Value::String(s) => vm.ctx.new_str(s.as_str()).into(),
        Value::Array(items) => vm
            .ctx
            .new_list(items.iter().map(|v| json_to_python(vm, v)).collect())
            .into(),
        Value::Object(map) => {
            let dict = vm.ctx.new_dict();
            for (key, v) in map {
                dict.set_item(key.as_str(), json_to_python(vm, v), vm)
                    .expect("setting a str key on a fresh dict cannot fail");
            }
            dict.into()
        }
    }
}

/// Python to JSON text, the way `json.dumps` would write it, or a `result_not_serializable`
/// (or `output_limit`, past `limit` bytes) report.
pub fn python_to_json(
    vm: &VirtualMachine,
    obj: &PyObject,
    limit: usize,
) -> Result<String, ErrorReport> {
    let mut writer = JsonWriter {
        vm,
        out: String::new(),
        path: Vec::new(),
        limit,
    };
    writer.value(obj)?;
    Ok(writer.out)
}

struct JsonWriter<'vm> {
    vm: &'vm VirtualMachine,
    out: String,
    /// Ids of the containers being written, outermost first: depth and cycle detection.
    path: Vec<usize>,
    limit: usize,
}

impl JsonWriter<'_> {
    fn value(&mut self, obj: &PyObject) -> Result<(), ErrorReport> {
        if self.out.len() > self.limit {
            return Err(ErrorReport::plain(
                "output_limit",
                "OutputLimitExceeded",
                format!(
                    "result is larger than the output limit of {} bytes",
                    self.limit
                ),
            ));
        }
        let vm = self.vm;
        if vm.is_none(obj) {
            self.out.push_str("null");
        } else if obj.is(&vm.ctx.true_value) {
            self.out.push_str("true");
        } else if obj.is(&vm.ctx.false_value) {
            self.out.push_str("false");
        } else if let Some(int) = obj.downcast_ref::<PyInt>() {
            write!(self.out, "{}", int.as_bigint()).expect("writing to a String");
        } else if let Some(float) = obj.downcast_ref::<PyFloat>() {
            self.float(float.to_f64())?;
        } else if let Some(s) = obj.downcast_ref::<PyStr>() {
            self.string(s)?;
        } else if let Some(list) = obj.downcast_ref::<PyList>() {
            let items = list.borrow_vec().to_vec();
            self.array(obj, &items)?;
        } else if let Some(tuple) = obj.downcast_ref::<PyTuple>() {
            self.array(obj, tuple.as_slice())?;
        } else if let Some(dict) = obj.downcast_ref::<PyDict>() {
            self.object(obj, dict.items_vec())?;
        } else {
            return Err(not_serializable(format!(
                "Object of type {} is not JSON serializable",
                obj.class().name()
            )));
        }
        Ok(())
    }

    fn float(&mut self, f: f64) -> Result<(), ErrorReport> {
        if !f.is_finite() {
            return Err(not_serializable(format!(
                "Out of range float values are not JSON compliant: {}",
                rustpython_vm::literal::float::to_string(f)
            )));
        }
        self.out
            .push_str(&rustpython_vm::literal::float::to_string(f));
        Ok(())
    }

    fn string(&mut self, s: &PyStr) -> Result<(), ErrorReport> {
        let text = s.to_str().ok_or_else(|| {
            not_serializable("str contains a lone surrogate, which JSON cannot encode".into())
        })?;
        self.out
            .push_str(&serde_json::to_string(text).expect("a str serialises"));
        Ok(())
    }

    /// Enters a container, refusing cycles and excessive depth.
    fn enter(&mut self, obj: &PyObject) -> Result<(), ErrorReport> {
        let id = obj.get_id();
        if self.path.contains(&id) {
            return Err(not_serializable("Circular reference detected".into()));
        }
        if self.path.len() >= MAX_RESULT_DEPTH {
            return Err(not_serializable(format!(
                "result is nested more than {MAX_RESULT_DEPTH} levels deep"
            )));
        }
        self.path.push(id);
        Ok(())
    }

    fn array(&mut self, obj: &PyObject, items: &[PyObjectRef]) -> Result<(), ErrorReport> {
        self.enter(obj)?;
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.value(item)?;
        }
        self.out.push(']');
        self.path.pop();
        Ok(())
    }

    fn object(
        &mut self,
        obj: &PyObject,
        items: Vec<(PyObjectRef, PyObjectRef)>,
    ) -> Result<(), ErrorReport> {
        self.enter(obj)?;
        self.out.push('{');
        for (i, (key, value)) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.key(key)?;
            self.out.push(':');
            self.value(value)?;
        }
        self.out.push('}');
        self.path.pop();
        Ok(())
    }

    /// Keys as `json.dumps` converts them: str as is; int, float, bool and None to their JSON
    /// text in quotes.
    fn key(&mut self, key: &PyObject) -> Result<(), ErrorReport> {
        let vm = self.vm;
        if let Some(s) = key.downcast_ref::<PyStr>() {
            return self.string(s);
        }
        let text = if vm.is_none(key) {
            "null".to_owned()
        } else if key.is(&vm.ctx.true_value) {
            "true".to_owned()
        } else if key.is(&vm.ctx.false_value) {
            "false".to_owned()
        } else if let Some(int) = key.downcast_ref::<PyInt>() {
            int.as_bigint().to_string()
        } else if let Some(float) = key.downcast_ref::<PyFloat>() {
            match float.to_f64() {
                f if f.is_nan() => "NaN".to_owned(),
                f if f == f64::INFINITY => "Infinity".to_owned(),
                f if f == f64::NEG_INFINITY => "-Infinity".to_owned(),
                f => rustpython_vm::literal::float::to_string(f),
            }
        } else {
            return Err(not_serializable(format!(
                "keys must be str, int, float, bool or None, not {}",
                key.class().name()
            )));
        };
        self.out.push('"');
        self.out.push_str(&text);
        self.out.push('"');
        Ok(())
    }
}

fn not_serializable(message: String) -> ErrorReport {
    ErrorReport::plain("result_not_serializable", "TypeError", message)
}
