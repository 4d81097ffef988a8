"""The test harness: runs hidden tests against candidate code, inside a sandbox.

Standalone (stdlib only): the host writes this file and ``job.json`` into the
sandbox's work dir and runs ``python3 -S harness.py``. The job gives trusted
``setup`` code (imports, helpers, e.g. a HumanEval prompt), the ``entry``
function's name, the ``tests`` (Python statements; each top-level statement that
contains an ``assert`` is one test) and one or more ``candidates`` (untrusted
source defining ``entry``).

The candidate never runs in this process. A *worker*, a fresh interpreter
(exec'd, so no byte of the tests is in its memory), executes it and serves calls
over a pipe; the tests run here with ``candidate`` (and ``entry``) bound to a
proxy that sends the arguments and gets back the return value, serialized as
plain data (ints, floats, str, list, tuple, dict, set...; anything else arrives
as an opaque value equal to nothing). So the candidate cannot read or patch the
tests, return an object that equals everything, or write this process's output:
the worker's stdout/stderr go to a capped file, it inherits no other descriptor
but its pipe, the job file is deleted before it starts, and this process is
non-dumpable (no /proc access to its memory or descriptors).
A call that runs past its deadline, or a worker that dies (memory, signal,
output cap), fails that test and the worker is restarted for the next one.

Output: one line ``<nonce> <json>`` with, per candidate, the number of tests,
how many passed, and each failure (test index, source, kind, message).
"""

import builtins
import os
import sys
import time

# select, resource and signal are imported where the checker uses them: the worker, a fresh
# interpreter per candidate, starts faster with only built-in modules.

_WORKER_OUTPUT_BYTES = 1 << 20
_MAX_MESSAGE = 8 << 20
_MAX_DEPTH = 60


# -- plain-data serialization (both sides) ------------------------------------------------
class Opaque:
    """A value the worker could not send as plain data: equal to nothing but itself."""

    def __init__(self, type_name, text):
        self.type_name, self.text = type_name, text

    def __repr__(self):
        return f"<{self.type_name} {self.text}>"

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


def encode(x, depth=0):
    if depth > _MAX_DEPTH:
        return {"$o": "value", "$r": "nested too deeply"}
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        x = int(x)
        return x if abs(x) < 10**4000 else {"$o": "int", "$r": "with more than 4000 digits"}
    if isinstance(x, float):
        x = float(x)
        return x if x == x and x not in (float("inf"), float("-inf")) else {"$f": repr(x)}
    if isinstance(x, str):
        return str(x)
    if isinstance(x, list):
        return [encode(v, depth + 1) for v in x]
    if isinstance(x, tuple):
        return {"$t": [encode(v, depth + 1) for v in x]}
    if isinstance(x, dict):
        return {"$d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if isinstance(x, frozenset):
        return {"$fs": [encode(v, depth + 1) for v in x]}
    if isinstance(x, set):
        return {"$s": [encode(v, depth + 1) for v in x]}
    if isinstance(x, bytes | bytearray):
        return {"$b": bytes(x).decode("latin-1")}
    if isinstance(x, complex):
        return {"$c": [x.real, x.imag]}
    try:
        text = ascii(x)[:200]
    except BaseException:
        text = "(repr failed)"
    return {"$o": type(x).__name__, "$r": text}


def decode(x):
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "$t" in x:
        return tuple(decode(v) for v in x["$t"])
    if "$d" in x:
        return {_hashable(decode(k)): decode(v) for k, v in x["$d"]}
    if "$s" in x:
        return {_hashable(decode(v)) for v in x["$s"]}
    if "$fs" in x:
        return frozenset(_hashable(decode(v)) for v in x["$fs"])
    if "$b" in x:
        return x["$b"].encode("latin-1")
    if "$c" in x:
        return complex(*x["$c"])
    if "$f" in x:
        return float(x["$f"])
    return Opaque(str(x.get("$o", "value")), str(x.get("$r", "")))


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((repr(k), _hashable(x)) for k, x in v.items()))
    if isinstance(v, set):
        return frozenset(v)
    return v


def _send(fd, obj):
    """One message: 4-byte length, then ``repr`` of plain data (no json: the worker starts faster)."""
    data = repr(obj).encode()
    if len(data) > _MAX_MESSAGE:
        data = repr({"r": {"$o": "value", "$r": "too large to send"}}).encode()
    data = len(data).to_bytes(4, "big") + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _recv(fd, deadline=None, trusted=False):
    """The next message. From the worker (untrusted) it is parsed with ``ast.literal_eval``
    (literals only, nothing runs); the worker evaluates the checker's own reprs."""
    n = int.from_bytes(_read_exact(fd, 4, deadline), "big")
    if n > _MAX_MESSAGE + 64:
        raise _Died("oversized message")
    text = _read_exact(fd, n, deadline).decode("utf-8", "replace")
    if trusted:
        return eval(text, {"__builtins__": {}})
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {"r": {"$o": "value", "$r": "unreadable reply"}}


class _Timeout(BaseException):
    pass


class _Died(BaseException):
    pass


def _read_exact(fd, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            import select

            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Timeout()
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise _Died()
        buf += chunk
    return bytes(buf)


# -- the worker (untrusted side) ----------------------------------------------------------
def worker_main(argv):
    """``harness.py --worker REQ_FD RESP_FD SEED ENTRY``: a fresh interpreter (exec'd, not forked:
    nothing of the tests is in its memory) that defines the candidate and serves calls. Its
    session and rlimits were set before the exec."""
    import _signal

    req_fd, resp_fd, seed = int(argv[0]), int(argv[1]), int(argv[2])
    _ENTRY[0] = argv[3]
    try:
        for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGPIPE, _signal.SIGXFSZ):
            _signal.signal(sig, _signal.SIG_DFL)  # e.g. passing the output cap kills it
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        first = _recv(req_fd, trusted=True)
        setup, source = first["setup"], first["source"]
        _seed(seed, setup + source)
        ns = {"__name__": "__main__"}
        try:
            exec(compile(setup, "<setup>", "exec"), ns)
            exec(compile(source, "<answer>", "exec"), ns)
            fn = ns.get(_ENTRY[0])
            if not callable(fn):
                raise NameError(f"the code does not define a function {_ENTRY[0]!r}")
        except BaseException as e:
            _send(resp_fd, {"e": [type(e).__name__, _describe(e)]})
            os._exit(0)
        _send(resp_fd, {"ready": True})
        while True:
            req = _recv(req_fd, trusted=True)
            try:
                value = fn(*decode(req["a"]), **decode(req["k"]))
                msg = {"r": encode(value)}
            except BaseException as e:
                msg = {"e": [type(e).__name__, _describe(e)]}
            for f in (sys.stdout, sys.stderr):
                try:  # noqa: SIM105 - contextlib would slow the worker's start
                    f.flush()
                except BaseException:
                    pass
            _send(resp_fd, msg)
    except BaseException:
        pass
    os._exit(0)


_ENTRY = [""]


def _seed(seed, code):
    """Seed `random` for code that uses it (importing it costs start-up time otherwise)."""
    if "random" in code or "random" in sys.modules:
        import random

        random.seed(seed)


def _describe(e):
    text = f"{e}"[:300]
    tb = e.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<answer>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(e, SyntaxError) and e.filename == "<answer>":
        line = e.lineno
    return text + (f" (line {line} of your code)" if line else "")


# -- the parent (trusted side) ------------------------------------------------------------
class CandidateError(Exception):
    """Raised in the tests when the candidate raised an exception that is not a builtin one."""


class _Worker:
    def __init__(self, job, source, out_path):
        self.job, self.source, self.out_path = job, source, out_path
        self.pid = None

    def start(self, deadline):
        import resource

        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # own session, rlimits, stdio to the output file, then a fresh interpreter
            try:
                os.setsid()
                resource.setrlimit(resource.RLIMIT_FSIZE, (_WORKER_OUTPUT_BYTES, _WORKER_OUTPUT_BYTES))
                memory = int(self.job.get("memory_mb") or 0) << 20
                if memory:
                    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                out = os.open(self.out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.set_inheritable(req_r, True)
                os.set_inheritable(resp_w, True)
                args = [str(req_r), str(resp_w), str(self.job.get("seed", 0)), _ENTRY[0]]
                if self.job.get("trusted"):  # the host's own code (table builds): a plain fork is enough
                    worker_main(args)
                py = sys.executable or "python3"
                os.execv(py, [py, "-S", "-s", "-P", _HERE, "--worker", *args])
            finally:
                os._exit(127)
        os.close(req_r)
        os.close(resp_w)
        self.pid, self.req, self.resp = pid, req_w, resp_r
        try:
            _send(self.req, {"setup": self.job["setup"], "source": self.source})
            msg = _recv(self.resp, deadline)
        except _Timeout:
            self.stop()
            raise _LoadError("timeout", "loading your code did not finish in time") from None
        except (_Died, OSError):
            why = self.stop()
            why = f"the process running your code died while loading it ({why})"
            raise _LoadError("crash", why) from None
        if "e" in msg:
            self.stop()
            raise _LoadError("load_error", f"{msg['e'][0]}: {msg['e'][1]}")

    def call(self, args, kwargs, deadline):
        if self.pid is None:
            self.start(deadline)
        try:
            _send(self.req, {"a": encode(list(args)), "k": encode(dict(kwargs))})
            msg = _recv(self.resp, deadline)
        except _Timeout:
            self.stop()
            raise
        except (_Died, OSError):
            why = self.stop()
            raise _Died(why) from None
        if "e" in msg:
            name, text = msg["e"]
            _LAST[0] = (name, text)
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception) and cls is not _Timeout:
                try:
                    raise cls(text)
                except TypeError:
                    pass
            raise CandidateError(f"{name}: {text}")
        return decode(msg["r"])

    def stop(self):
        import contextlib
        import signal

        why = "killed"
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(self.pid, 0)
                if os.WIFSIGNALED(status):
                    sig = os.WTERMSIG(status)
                    why = {9: "killed: out of memory?", 25: "output limit exceeded"}.get(sig, f"signal {sig}")
                    why = f"{why} (signal {sig})" if sig in (9, 25) else why
                else:
                    why = f"exit status {os.WEXITSTATUS(status)}"
            except ChildProcessError:
                pass
            for fd in (self.req, self.resp):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pid = None
        return why


_LAST = [None]


class _LoadError(BaseException):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


class _Fail(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


_OPS = {
    "Eq": ("==", lambda a, b: a == b), "NotEq": ("!=", lambda a, b: a != b),
    "Lt": ("<", lambda a, b: a < b), "LtE": ("<=", lambda a, b: a <= b),
    "Gt": (">", lambda a, b: a > b), "GtE": (">=", lambda a, b: a >= b),
    "Is": ("is", lambda a, b: a is b), "IsNot": ("is not", lambda a, b: a is not b),
    "In": ("in", lambda a, b: a in b), "NotIn": ("not in", lambda a, b: a not in b),
}  # fmt: skip
_OP_BY_NAME = {name: fn for name, fn in _OPS.values()}


def _short(v, n=160):
    s = ascii(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _cmp(left, right, op, call=False):
    if not _OP_BY_NAME[op](left, right):
        if call and op == "==":  # assert f(...) == expected
            raise _Fail(f"got {_short(left)}, expected {_short(right)}")
        raise _Fail(f"left side: {_short(left)}; right side: {_short(right)}")


def _truth(value):
    if not value:
        raise _Fail(f"value: {_short(value)}")


def _instrumenter():
    import ast  # only the checker needs it; the worker starts faster without

    class Instrument(ast.NodeTransformer):
        """``assert a OP b`` -> ``__lpca_cmp(a, b, OP)`` so a failure reports both sides."""

        def visit_Assert(self, node):
            t = node.test
            op = type(t.ops[0]).__name__ if isinstance(t, ast.Compare) and len(t.ops) == 1 else None
            if op in _OPS:
                left = t.left
                is_call = (isinstance(left, ast.Call) and isinstance(left.func, ast.Name)
                           and left.func.id in ("candidate", _ENTRY[0]))  # fmt: skip
                call = ast.Call(ast.Name("__lpca_cmp", ast.Load()),
                                [left, t.comparators[0], ast.Constant(_OPS[op][0]), ast.Constant(is_call)],
                                [])  # fmt: skip
            else:
                call = ast.Call(ast.Name("__lpca_truth", ast.Load()), [t], [])
            return ast.copy_location(ast.Expr(call), node)

    return ast, Instrument


def _tests(source):
    ast, instrument = _instrumenter()
    tree = ast.parse(source)
    lines = source.splitlines()
    out = []
    for stmt in tree.body:
        is_test = any(isinstance(n, ast.Assert) for n in ast.walk(stmt))
        seg = "\n".join(lines[stmt.lineno - 1 : stmt.end_lineno]).strip()
        mod = ast.Module([instrument().visit(stmt)], [])
        ast.fix_missing_locations(mod)
        out.append((is_test, seg, compile(mod, "<tests>", "exec")))
    return out


def run_candidate(job, source, tests, out_path):
    start = time.monotonic()
    budget = float(job.get("budget", 10.0))
    per_test = float(job.get("call_timeout", 2.0))
    worker = _Worker(job, source, out_path)
    result = {"status": "ok", "tests": sum(1 for t in tests if t[0]), "passed": 0, "failures": []}

    def proxy(*args, **kwargs):
        return worker.call(args, kwargs, _DEADLINE[0])

    ns = {"__name__": "__lpca_tests__"}
    _seed(job.get("seed", 0), job["setup"] + job["tests"])
    exec(compile(job["setup"], "<setup>", "exec"), ns)
    ns.update({"candidate": proxy, job["entry"]: proxy, "__lpca_cmp": _cmp, "__lpca_truth": _truth})
    index = 0
    timed_out = False
    try:
        try:
            worker.start(start + min(per_test, budget))
        except _LoadError as e:
            result["status"] = e.kind
            result["message"] = e.message
            return result
        for is_test, seg, code in tests:
            if is_test:
                index += 1
            now = time.monotonic()
            if timed_out or now - start >= budget:
                if is_test:
                    why = "an earlier test timed out" if timed_out else "the time budget was used up"
                    fail = {"i": index, "src": seg, "kind": "skipped", "msg": f"not run: {why}"}
                    result["failures"].append(fail)
                continue
            _DEADLINE[0] = now + min(per_test, budget - (now - start))
            _LAST[0] = None
            kind = msg = None
            try:
                exec(code, ns)
            except _Fail as e:
                kind, msg = "fail", e.message
            except _Timeout:
                kind, msg = "timeout", f"your function did not return within {per_test:g}s"
                timed_out = True
            except _Died as e:
                kind, msg = "crash", f"the process running your function died ({e.args[0] if e.args else ''})"
            except _LoadError as e:
                kind, msg = e.kind, e.message
            except Exception as e:
                kind = "error"
                if _LAST[0] is not None:
                    msg = f"your function raised {_LAST[0][0]}: {_LAST[0][1]}"
                else:
                    msg = f"{type(e).__name__}: {str(e)[:300]}"
            if kind is None:
                if is_test:
                    result["passed"] += 1
            elif is_test:
                result["failures"].append({"i": index, "src": seg, "kind": kind, "msg": msg})
            else:
                result["failures"].append({"i": 0, "src": seg, "kind": kind, "msg": msg})
    finally:
        worker.stop()
    return result


_DEADLINE = [0.0]


def _nondumpable():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


def main():
    import json

    _nondumpable()
    with open("job.json") as f:
        job = json.load(f)
    os.unlink("job.json")
    _ENTRY[0] = job["entry"]
    tests = _tests(job["tests"])
    results = []
    for n, source in enumerate(job["candidates"]):
        out_path = os.path.join(os.getcwd(), f".out{n}")
        r = run_candidate(job, source, tests, out_path)
        try:
            with open(out_path, "rb") as f:
                r["output"] = f.read(2000).decode("utf-8", "replace")
            os.unlink(out_path)
        except OSError:
            r["output"] = ""
        results.append(r)
    sys.stdout.write(job["nonce"] + " " + json.dumps({"results": results}) + "\n")
    sys.stdout.flush()


_HERE = os.path.abspath(__file__) if "__file__" in globals() else "harness.py"

if __name__ == "__main__":
    worker_main(sys.argv[2:]) if sys.argv[1:2] == ["--worker"] else main()
