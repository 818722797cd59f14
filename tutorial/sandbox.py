"""
Where a student's file runs: a child process that imports it and answers the checker's calls, so that nothing the
file does (patching the project's modules, printing PASS lines, exiting, looping forever) can reach the reference
results, which the checker computes in its own process (tutorial/check.py).

    parent (tutorial.check)                          child (python -m tutorial.sandbox STUDENT_FILE)
    Student(path).call(name, *args)  --request-->    getattr(student, name)(*args)
    compares with the project's functions  <--reply--  the value (tensors, numbers, strings only)

Messages are torch.save'd objects, length-prefixed, over two pipes of their own (not stdin/stdout, which the
student's prints may use). The parent reads every reply with torch.load(weights_only=True), which builds tensors
and plain containers and never runs code from the child. Each exercise has a time limit; a child that overruns is
killed and the next exercise starts a fresh one.
"""
import io
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class StudentError(Exception):
    """The student's code did not give an answer: `kind` is 'raised', 'stub', 'returned', 'exited', 'timeout' or
    'broken'; `message` says what happened in one line; `function` names the student's function it happened in."""

    def __init__(self, kind, message, function=None):
        super().__init__(message)
        self.kind, self.function = kind, function


# -----------------------------------------------------------------------------
# the wire: length-prefixed torch.save bytes

class Closed(Exception):
    """The other end of a pipe closed it."""


def _send(fd, obj, deadline=None):
    """Write obj; with a deadline, on a non-blocking fd, so that a reader that stops reading cannot stall us."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _read_exact(fd, n, deadline):
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise Closed
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(fd, deadline=None, trusted=False):
    (n,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    if not trusted and n > 1 << 30:
        raise ValueError(f"a reply of {n} bytes")
    return torch.load(io.BytesIO(_read_exact(fd, n, deadline)), weights_only=True)


# -----------------------------------------------------------------------------
# the parent's side

class Student:
    """The student's file, running in a child process. call() and loss_and_grad() return the child's answers or
    raise StudentError; start_exercise(seconds) sets the time left for the calls of one exercise."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.pid, self.proc, self.left, self.output, self.dead = None, None, 0.0, None, None

    def start_exercise(self, seconds):
        """Give the next calls `seconds` in all; start a child if none is running."""
        if self.dead is not None:
            raise self.dead
        self.left, self.seconds = seconds, seconds  # only the time spent waiting for the child counts
        if self.pid is None:
            self._spawn()

    def _spawn(self):
        """A child that imports the student's file: forked from this process where the OS can (fast: torch and the
        project are imported already), else a fresh interpreter running this module."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.output = tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        if hasattr(os, "fork"):
            self.pid, self.proc = os.fork(), None
            if self.pid == 0:  # the child: never returns into the checker's code
                code = 1
                try:
                    os.close(req_w)
                    os.close(rep_r)
                    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                    os.dup2(self.output.fileno(), 1)
                    os.dup2(self.output.fileno(), 2)
                    for lo, hi in _gaps(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024,
                                        (req_r, rep_w)):
                        os.closerange(lo, hi)  # the checker's other files are not the student's to write
                    sys.stdout = sys.stderr = open(1, "w", closefd=False)
                    torch.set_num_threads(1)
                    serve(self.path, req_r, rep_w)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 1
                finally:
                    os._exit(code)
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
            self.proc = subprocess.Popen([sys.executable, "-m", "tutorial.sandbox", self.path, str(req_r), str(rep_w)],
                                         cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.output,
                                         stderr=subprocess.STDOUT, pass_fds=(req_r, rep_w))
            self.pid = self.proc.pid
        os.close(req_r)
        os.close(rep_w)
        self.req, self.rep = req_w, rep_r
        os.set_blocking(self.req, False)
        try:
            self._ask(("hello",), "importing your file")  # the import's own errors and exits surface here
        except StudentError as e:
            self.dead = e  # every exercise fails for this reason; no use importing the file again
            raise

    def _wait(self):
        if self.proc is not None:
            return self.proc.wait()
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def _ask(self, msg, doing):
        t0 = time.monotonic()
        try:
            _send(self.req, msg, t0 + self.left)
            reply = _recv(self.rep, t0 + self.left)
        except TimeoutError:
            self.close()
            raise StudentError("timeout", f"no answer within {self.seconds:g} s while {doing} (an endless loop?)",
                               msg[1] if len(msg) > 1 else None) from None
        except (Closed, BrokenPipeError):
            code = self.close()
            raise StudentError("exited", f"your file ended the checker's process (exit status {code}) while {doing}; "
                                         "do not call sys.exit or os._exit in it") from None
        except Exception as e:  # a reply that is not one: something wrote to the checker's pipe
            self.close()
            raise StudentError("broken", f"the reply while {doing} was not readable ({type(e).__name__}); does "
                                         "your file write to file descriptors it did not open?") from None
        finally:
            self.left -= time.monotonic() - t0
        if not isinstance(reply, tuple) or not reply or reply[0] not in ("ok", "error"):
            self.close()
            raise StudentError("broken", f"the reply while {doing} was not one of the checker's")
        if reply[0] == "error":
            raise StudentError(*reply[1:4])
        return reply[1]

    def call(self, name, *args, **kw):
        """getattr(student, name)(*args, **kw) in the child; tensors come back detached."""
        return self._ask(("call", name, args, kw), f"calling {name}")

    def loss_and_grad(self, name, logp, *args, **kw):
        """(loss, d loss / d logp or None, stats or None) of the student's name(logp_leaf, *args, **kw)."""
        return self._ask(("grad", name, logp, args, kw), f"calling {name}")

    def has(self, names):
        """The names among `names` that the file defines as functions."""
        return self._ask(("has", list(names)), "looking up your functions")

    def printed(self):
        """What the student's file printed so far (the last 2,000 characters)."""
        if self.output is None:
            return ""
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")[-2000:]

    def _close_pipes(self):
        for fd in (getattr(self, "req", None), getattr(self, "rep", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.req = self.rep = None

    def close(self):
        """Kill the child (if any) and forget it: the next exercise starts a fresh one."""
        self._close_pipes()
        if self.pid is None:
            return None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self._wait()
        self.pid = self.proc = None
        return code


# -----------------------------------------------------------------------------
# the child's side

def _gaps(lo, hi, keep):
    """[lo, hi) without the numbers in keep, as (start, stop) ranges."""
    out = []
    for k in sorted(keep):
        out.append((lo, k))
        lo = k + 1
    return out + [(lo, hi)]


def _wire(x):
    """x made of what the parent can read back safely (tensors, numbers, strings, None, tuples/lists/dicts of
    those); anything else becomes StudentError 'returned'."""
    if torch.is_tensor(x):
        return x.detach().cpu().clone()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(_wire(v) for v in x)
    if isinstance(x, dict):
        return {str(k): _wire(v) for k, v in x.items()}
    raise TypeError(type(x).__name__)


def _unwire(x):
    """The parent sends a model as ('__gpt__', config, state dict): rebuilt here from the project's model.py."""
    if isinstance(x, tuple) and len(x) == 3 and x[0] == "__gpt__":
        import model as M
        gpt = M.GPT(M.GPTConfig(**x[1]))
        gpt.load_state_dict(x[2])
        return gpt.eval()
    if isinstance(x, (tuple, list)):
        return type(x)(_unwire(v) for v in x)
    return x


def _student_frame(tb, path):
    """(function name, line) of the innermost frame of the student's file in traceback tb, else of the last frame."""
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if os.path.abspath(f.filename) == path] or frames[-1:]
    return (mine[-1].name, mine[-1].lineno) if mine else (None, "?")


def _answer(mod, path, msg):
    kind = msg[0]
    if kind == "hello":
        return None
    if kind == "has":
        return [n for n in msg[1] if callable(getattr(mod, n, None))]
    name, fn = msg[1], getattr(mod, msg[1])
    if kind == "call":
        return _returned(name, fn(*_unwire(msg[2]), **msg[3]))
    logp = msg[2].clone().requires_grad_()
    out = fn(logp, *_unwire(msg[3]), **msg[4])
    loss, stats = (out[0], out[1] if len(out) > 1 else None) if isinstance(out, tuple) else (out, None)
    if not torch.is_tensor(loss) or loss.numel() != 1:
        raise StudentError("returned", f"{name} should return a scalar tensor loss (or (loss, stats)), got "
                           f"{type(loss).__name__}{tuple(loss.shape) if torch.is_tensor(loss) else ''}", name)
    grad = torch.autograd.grad(loss, logp, allow_unused=True)[0] if loss.requires_grad else None
    return (loss.detach().reshape(()).clone(), None if grad is None else grad.detach().clone(), _returned(name, stats))


def _returned(name, x):
    try:
        return _wire(x)
    except TypeError as e:
        raise StudentError("returned", f"{name} returned a {e} where tensors, numbers or tuples of them were expected",
                           name) from None


def serve(path, req, rep):
    """Import the student's file, then answer requests until the parent closes the pipe."""
    import importlib.util
    first, mod = _recv(req, trusted=True), None
    try:
        spec = importlib.util.spec_from_file_location("student_impl", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        reply = ("ok", _answer(mod, path, first))
    except Exception as e:
        line = getattr(e, "lineno", None) or _student_frame(e.__traceback__, path)[1]
        reply = ("error", "import", f"cannot import {os.path.basename(path)}: {type(e).__name__} at line {line}: {e}",
                 None)
    _send(rep, reply)
    if mod is None:
        return
    while True:
        try:
            msg = _recv(req, trusted=True)
        except Closed:
            return
        try:
            reply = ("ok", _answer(mod, path, msg))
        except StudentError as e:
            reply = ("error", e.kind, str(e), e.function)
        except NotImplementedError:
            fn, called = _student_frame(sys.exc_info()[2], path)[0], msg[1] if len(msg) > 1 else None
            reply = ("error", "stub", f"{fn} is not implemented yet" if fn == called else
                     f"{called} calls your {fn}, which is not implemented yet", fn)
        except Exception as e:
            fn, line = _student_frame(e.__traceback__, path)
            reply = ("error", "raised", f"{msg[1]} raised {type(e).__name__} at line {line} of "
                     f"{os.path.basename(path)}: {e}", fn)
        _send(rep, reply)


if __name__ == "__main__":
    torch.set_num_threads(1)
    serve(os.path.abspath(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
