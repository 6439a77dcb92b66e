# pyexec's driver inside the CPython runtime: the module `_pyexec`, defined in the snapshot
# (snapshot.rs runs this file once, before the snapshot is taken). Every execution's one turn
# calls `run()`, which reads the request from stdin, runs the code as a fresh `__main__`, and
# sends the reply document (guest/src/lib.rs's protocol: {"ok", "result" | "error"}) through
# the host door, `_host.call`, which the host answers by ending the instance: nothing printed
# can pass for the reply, and nothing runs after it. In a session the host calls `run()` once
# per turn and keeps the instance: a request with `"session": true` runs in the `__main__` of
# the earlier session turns (without the `result` they left), the door returns, and so does
# `run()`; the host keeps the last reply of the turn, which is the driver's.
#
# The code can reach this module and the door (`import _pyexec, _host`) and so end its own
# execution with a reply of its own making; that forges nothing it could not produce by
# assigning `result` or raising, and the host accepts only guest-side error kinds from a reply.

import base64
import builtins
import io
import json
import linecache
import os
import random
import sys
import traceback
import types

import _host

USER_FILENAME = "<code>"
# As the RustPython guest (guest/src/convert.rs, report.rs).
MAX_RESULT_DEPTH = 100
MAX_MESSAGE_CHARS = 4096

# Bound now, so that code replacing the modules' attributes cannot change how the reply is made.
_send = _host.call
_dumps = json.dumps
_encode_string = json.encoder.encode_basestring
_float_repr = float.__repr__
_int_repr = int.__repr__
_list_copy = list.copy
_tuple_items = tuple.__getitem__
_dict_items = dict.items
_str_str = str.__str__
_isinstance = isinstance
_type = type
_id = id
_len = len


# The reply when the code broke the driver itself (replaced a module or a function it uses)
# after it ran: the code's own doing, reported as its exception, never as the sandbox's.
_BROKEN = (b'{"ok":false,"error":{"kind":"python_exception","type":"RuntimeError",'
           b'"message":"the code changed a module pyexec\'s driver uses (sys.stdout, json, '
           b'_pyexec, ...), so its result could not be reported","line":null,"traceback":null}}')


def run(_send=_send, _broken=_BROKEN, _error=BaseException, _modules=sys.modules,
        _turns_main=sys.modules["__main__"]):
    """Runs the request on stdin and replies; the host stops the instance at the reply (in a
    session, the door returns, and so does this)."""
    try:
        request = json.loads(sys.stdin.buffer.read())
        _reseed()
        # A message with a lone surrogate is the only text that does not encode: a "?".
        reply = _execute(request).encode("utf-8", "replace")
    except _error:
        reply = _broken
    # The guest runs each turn in `__main__`'s namespace, where this module is bound: give the
    # name back, so that a session's next turn finds `_pyexec` again. The code's module stays
    # referenced until after the reply: freeing what it built (a list nested 200,000 deep,
    # say) could exhaust the stack, and must not happen before the reply.
    code_main = _modules.get("__main__")
    _modules["__main__"] = _turns_main
    _send(reply)
    del code_main


def _reseed():
    # The snapshot's generators are the same in every instance: draw fresh entropy. Seeding
    # from an int, not from None, costs a twentieth of the fuel (numpy's `seed()` alone cost
    # ~2 M, two thirds of an empty execution); numpy's legacy global generator takes 32 bits.
    random.seed(int.from_bytes(os.urandom(16)))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4)))


# The `__main__` of a session's turns, from its first turn on.
_session_main = None


def _main_module(request):
    global _session_main
    if not request.get("session"):
        return types.ModuleType("__main__")
    if _session_main is None:
        _session_main = types.ModuleType("__main__")
    _session_main.__dict__.pop("result", None)
    return _session_main


def _execute(request):
    main = _main_module(request)
    scope = main.__dict__
    scope["__builtins__"] = builtins
    scope["data"] = request.get("data")
    sys.modules["__main__"] = main
    source = request["code"]
    # Tracebacks quote the lines of the user's code from here.
    linecache.cache[USER_FILENAME] = (_len(source), None, source.splitlines(True), USER_FILENAME)
    try:
        mode = "single" if request.get("interactive") else "exec"
        code = compile(source, USER_FILENAME, mode, dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return _failed(_syntax_error(exc))
    try:
        exec(code, scope)
    except SystemExit as exc:
        if exc.code is not None and exc.code != 0:
            return _failed(_exception("system_exit", exc))
    except MemoryError as exc:
        return _failed(_exception("memory_limit", exc))
    except BaseException as exc:
        return _failed(_exception("python_exception", exc))
    finally:
        _flush()
    limit = request.get("output_limit", 1 << 20)
    try:
        writer = _JsonWriter(limit)
        writer.value(scope.get("result"), 0)
        images = _images(limit - writer.size)
    except _NotSerializable as exc:
        return _failed(_plain("result_not_serializable", "TypeError", exc.args[0]))
    except _TooLarge as exc:
        return _failed(_plain("output_limit", "OutputLimitExceeded", exc.args[0]))
    except Exception as exc:
        return _failed(_exception("python_exception", exc))
    return ('{"ok":true,"result":' + "".join(writer.out) + ',"images":' + _dumps(images) + "}")


def _images(budget):
    """The matplotlib figures the code left open, as PNG images in base64, which share the
    result's budget; the figures are closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    images = []
    try:
        for number in pyplot.get_fignums():
            png = io.BytesIO()
            pyplot.figure(number).savefig(png, format="png")
            data = base64.b64encode(png.getvalue()).decode("ascii")
            budget -= _len(data)
            if budget < 0:
                raise _TooLarge("the result and the figures' images are larger than the "
                                "output limit")
            images.append({"format": "png", "data": data})
    finally:
        pyplot.close("all")
    return images


def _flush():
    # The code may have replaced the streams with anything, or nothing.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _failed(error):
    return _dumps({"ok": False, "error": error}, ensure_ascii=False)


def _plain(kind, type_name, message):
    return {"kind": kind, "type": type_name, "message": message, "line": None, "traceback": None}


def _truncate(text, limit):
    return text if _len(text) <= limit else text[:limit] + "…"


def _message(exc):
    try:
        return _truncate(str(exc), MAX_MESSAGE_CHARS)
    except BaseException:
        return "<exception str() failed>"


def _exception(kind, exc):
    line = None
    for seen in _chain(exc):
        seen.__traceback__ = _user_frames(seen.__traceback__)
    tb = exc.__traceback__
    while tb is not None:
        line = tb.tb_lineno
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(exc)).rstrip("\n")
    except BaseException:
        text = None
    return {"kind": kind, "type": _type(exc).__name__, "message": _message(exc), "line": line,
            "traceback": text}


def _chain(exc):
    seen = []
    while exc is not None and _len(seen) < 8 and not any(exc is s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _user_frames(tb):
    """The traceback without the driver's frames or the library's: the user's code only."""
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == USER_FILENAME:
            frames.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for tb in reversed(frames):
        rebuilt = types.TracebackType(rebuilt, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return rebuilt


def _syntax_error(exc):
    if not _isinstance(exc, SyntaxError):
        # compile() refuses source with NUL bytes with a ValueError.
        return _plain("syntax_error", "SyntaxError", _message(exc))
    text = "".join(traceback.format_exception_only(exc)).rstrip("\n")
    return {"kind": "syntax_error", "type": _type(exc).__name__,
            "message": _truncate(str(exc.msg), MAX_MESSAGE_CHARS), "line": exc.lineno,
            "traceback": text}


class _NotSerializable(Exception):
    pass


class _TooLarge(Exception):
    pass


class _JsonWriter:
    """JSON text of `result`, written without running any of its code: the values of builtin
    types (and their subclasses) are read through the builtin types' own methods, numpy and
    pandas values are converted (arrays and Series to lists, scalars to numbers, a DataFrame to
    a list of row objects), and everything else is refused, as the RustPython runtime does."""

    def __init__(self, limit):
        self.out = []
        self.size = 0
        self.limit = limit
        self.path = []

    def emit(self, text):
        self.out.append(text)
        self.size += _len(text)
        if self.size > self.limit:
            raise _TooLarge(f"result is larger than the output limit of {self.limit} bytes")

    def value(self, obj, depth):
        if obj is None:
            self.emit("null")
        elif obj is True:
            self.emit("true")
        elif obj is False:
            self.emit("false")
        elif _isinstance(obj, int):
            self.emit(_int_repr(obj))
        elif _isinstance(obj, float):
            self.float(obj)
        elif _isinstance(obj, str):
            self.emit(self.string(obj))
        elif _isinstance(obj, list):
            self.array(obj, _list_copy(obj), depth)
        elif _isinstance(obj, tuple):
            self.array(obj, _tuple_items(obj, slice(None)), depth)
        elif _isinstance(obj, dict):
            self.object(obj, list(_dict_items(obj)), depth)
        else:
            self.value(_convert(obj), depth)

    def float(self, number):
        if number != number or number in (float("inf"), float("-inf")):
            raise _NotSerializable(
                f"Out of range float values are not JSON compliant: {_float_repr(number)}")
        self.emit(_float_repr(number))

    def string(self, text):
        text = _str_str(text)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotSerializable(
                "str contains a lone surrogate, which JSON cannot encode") from None
        return _encode_string(text)

    def enter(self, obj, depth):
        if any(obj is seen for seen in self.path):
            raise _NotSerializable("Circular reference detected")
        if depth >= MAX_RESULT_DEPTH:
            raise _NotSerializable(f"result is nested more than {MAX_RESULT_DEPTH} levels deep")
        self.path.append(obj)

    def array(self, obj, items, depth):
        self.enter(obj, depth)
        self.emit("[")
        for i, item in enumerate(items):
            if i:
                self.emit(",")
            self.value(item, depth + 1)
        self.emit("]")
        self.path.pop()

    def object(self, obj, items, depth):
        self.enter(obj, depth)
        self.emit("{")
        for i, (key, item) in enumerate(items):
            if i:
                self.emit(",")
            self.emit(self.key(key))
            self.emit(":")
            self.value(item, depth + 1)
        self.emit("}")
        self.path.pop()

    def key(self, key):
        if _isinstance(key, str):
            return self.string(key)
        if key is None:
            return '"null"'
        if key is True:
            return '"true"'
        if key is False:
            return '"false"'
        if _isinstance(key, int):
            return '"' + _int_repr(key) + '"'
        if _isinstance(key, float):
            if key != key:
                return '"NaN"'
            if key in (float("inf"), float("-inf")):
                return '"Infinity"' if key > 0 else '"-Infinity"'
            return '"' + _float_repr(key) + '"'
        raise _NotSerializable(
            f"keys must be str, int, float, bool or None, not {_type(key).__name__}")


def _convert(obj):
    """A numpy or pandas value as builtin values, or `_NotSerializable`."""
    numpy = sys.modules.get("numpy")
    pandas = sys.modules.get("pandas")
    if numpy is not None:
        if _isinstance(obj, numpy.ndarray):
            return _check_numpy(obj).tolist()
        if _isinstance(obj, numpy.generic):
            return _check_numpy(obj).item()
    if pandas is not None:
        if _isinstance(obj, pandas.DataFrame):
            return obj.to_dict(orient="records")
        if _isinstance(obj, pandas.Series):
            return obj.tolist()
        if _isinstance(obj, pandas.Timestamp):
            return obj.isoformat()
    raise _NotSerializable(f"Object of type {_type(obj).__name__} is not JSON serializable")


def _check_numpy(value):
    # Datetimes, bytes and objects of other kinds would become Python objects JSON refuses
    # anyway; complex numbers would become complex. Name the dtype instead.
    if value.dtype.kind not in "biuf":
        raise _NotSerializable(
            f"numpy values of dtype {value.dtype} are not JSON serializable")
    return value
