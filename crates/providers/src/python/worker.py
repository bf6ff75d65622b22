# Gleitzeit python worker: runs jobs sent as JSON lines by the Rust pool.
#
# Started as `python3 -u -c <this file> MEMORY_LIMIT_BYTES`. The protocol uses
# private duplicates of the original stdin/stdout; fd 0 becomes /dev/null and
# fd 1 is pointed at fd 2, so neither `os.system("echo hi")` nor C-level writes
# can corrupt the protocol. One JSON object per line each way:
#   -> {"id", "kind": "execute"|"script"|"function", ...}
#   <- {"id", "ok": true, "result", "stdout", "stderr"}
#   <- {"id", "ok": false, "error": {"type", "message", "traceback", "lineno"}, "stdout", "stderr"}
# The first line the worker writes is {"ready": true, "version", "pid"}.

import builtins
import faulthandler
import importlib
import importlib.util
import io
import json
import linecache
import os
import sys
import traceback

try:
    import resource
except ImportError:  # not on this platform: no memory limits
    resource = None

CAPTURE_LIMIT = 1024 * 1024
WORKER_FILE = sys._getframe().f_code.co_filename
_MISSING = object()


class Capture(io.TextIOBase):
    """A bounded in-memory text stream standing in for sys.stdout / sys.stderr."""

    def __init__(self):
        super().__init__()
        self.parts = []
        self.size = 0
        self.truncated = False

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        room = CAPTURE_LIMIT - self.size
        if room > 0:
            part = s if len(s) <= room else s[:room]
            self.parts.append(part)
            self.size += len(part)
            if len(part) < len(s):
                self.truncated = True
        elif s:
            self.truncated = True
        return len(s)

    def getvalue(self):
        text = "".join(self.parts)
        if self.truncated:
            text += "\n[gleitzeit: output truncated after %d characters]\n" % CAPTURE_LIMIT
        return text


class JobError(Exception):
    """An error about the job itself (bad parameters), reported without traceback."""


def user_processes():
    """How many processes and threads the current user runs (RLIMIT_NPROC counts
    both; Linux /proc, 0 elsewhere)."""
    uid, count = os.getuid(), 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    count += len(os.listdir("/proc/%s/task" % name))
            except OSError:
                pass
    return count


def set_hard_limit(argv):
    """argv: [memory bytes, extra processes, file size bytes]; 0 = unlimited."""
    if resource is None:
        return
    values = []
    for text in argv[1:4]:
        try:
            values.append(int(text))
        except ValueError:
            values.append(0)
    values += [0] * (3 - len(values))
    memory, processes, file_size = values
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    if processes > 0 and hasattr(resource, "RLIMIT_NPROC"):
        # Counted per user, so the limit is relative to what already runs.
        limit = user_processes() + processes
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        except (ValueError, OSError):
            pass
    if file_size > 0 and hasattr(resource, "RLIMIT_FSIZE"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))


def lower_limit(job_limit):
    """Lowers the soft address-space limit for one job; returns what to restore."""
    if resource is None or not job_limit:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = int(job_limit)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and wanted >= soft:
        return None
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    return (soft, hard)


_code_cache = {}


def compile_cached(source, filename):
    key = (filename, source)
    code = _code_cache.get(key)
    if code is None:
        code = compile(source, filename, "exec")
        if len(_code_cache) >= 256:
            _code_cache.clear()
        _code_cache[key] = code
    # Tracebacks read source lines through linecache; register this source.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return code


def load_module(spec_text):
    looks_like_path = spec_text.endswith(".py") or os.sep in spec_text or "/" in spec_text
    if looks_like_path:
        path = os.path.abspath(spec_text)
        name = os.path.splitext(os.path.basename(path))[0] or "module"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise JobError("cannot load a python module from %s" % path)
        module = importlib.util.module_from_spec(spec)
        directory = os.path.dirname(path)
        sys.path.insert(0, directory)
        try:
            spec.loader.exec_module(module)
        finally:
            try:
                sys.path.remove(directory)
            except ValueError:
                pass
        return module
    return importlib.import_module(spec_text)


def run_function(req):
    module = load_module(req["module"])
    name = req["function"]
    target = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise JobError("module %s has no function %s" % (req["module"], name)) from None
    if not callable(target):
        raise JobError("%s.%s is not callable" % (req["module"], name))
    args = req.get("args") or []
    kwargs = req.get("kwargs") or {}
    return target(*args, **kwargs)


def user_traceback(tb):
    """Skips the worker's own frames at the start of a traceback."""
    while tb is not None and tb.tb_frame.f_code.co_filename == WORKER_FILE:
        tb = tb.tb_next
    return tb


def describe(exc, filename):
    tb = user_traceback(exc.__traceback__)
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: a broken __str__ must not kill the worker
        text = "%s: <unprintable exception>\n" % type(exc).__name__
    lineno = None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        lineno = exc.lineno
    else:
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                lineno = tb.tb_lineno
            tb = tb.tb_next
    try:
        message = str(exc)
    except BaseException:
        message = "<unprintable exception>"
    return {
        "type": type(exc).__name__,
        "message": message,
        "traceback": text,
        "lineno": lineno,
    }


def encode_result(value, notes):
    converted = []

    def fallback(obj):
        converted.append(type(obj).__name__)
        return repr(obj)

    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=fallback)
        if converted:
            names = ", ".join(sorted(set(converted)))
            notes.append(
                "result contains values that are not JSON-serialisable (%s); converted with repr()" % names
            )
        return text
    except Exception as exc:  # circular data, NaN, non-string keys, huge ints, ...
        notes.append(
            "result of type %s is not JSON-serialisable (%s); converted with repr()"
            % (type(value).__name__, exc)
        )
        try:
            return json.dumps(repr(value), ensure_ascii=False)
        except Exception:
            return json.dumps("<%s object>" % type(value).__name__)


def restore_cwd():
    try:
        if os.getcwd() == START_DIR:
            return
    except OSError:  # the job deleted its working directory
        pass
    try:
        os.chdir(START_DIR)
    except OSError:
        pass


def handle(req):
    kind = req.get("kind")
    filename = req.get("filename") or "<task>"
    out, err = Capture(), Capture()
    saved_streams = (sys.stdout, sys.stderr)
    saved_argv = sys.argv
    saved_path = list(sys.path)
    namespace = None
    value = _MISSING
    error = None
    try:
        restore = lower_limit(req.get("memory_limit"))
        try:
            sys.stdout, sys.stderr = out, err
            if kind == "function":
                value = run_function(req)
            elif kind in ("execute", "script"):
                inputs = req.get("inputs")
                namespace = {
                    "__name__": "__main__",
                    "inputs": {} if inputs is None else inputs,
                    "__builtins__": builtins,
                }
                if kind == "script":
                    namespace["__file__"] = filename
                    sys.argv = [filename] + list(req.get("argv") or [])
                    sys.path.insert(0, os.path.dirname(os.path.abspath(filename)))
                code = compile_cached(req.get("code") or "", filename)
                exec(code, namespace)
            else:
                raise JobError("unknown job kind %r" % (kind,))
        finally:
            sys.stdout, sys.stderr = saved_streams
            sys.argv = saved_argv
            if sys.path != saved_path:
                sys.path[:] = saved_path
            if restore is not None:
                resource.setrlimit(resource.RLIMIT_AS, restore)
            restore_cwd()
    except SystemExit as exc:
        status = exc.code
        if status is not None and status != 0:
            if isinstance(status, int):
                message = "exit code %d" % status
            else:
                message = str(status)
            error = describe(exc, filename)
            error["message"] = message
    except JobError as exc:
        error = {"type": "JobError", "message": str(exc), "traceback": "", "lineno": None}
    except BaseException as exc:
        error = describe(exc, filename)
    stdout = out.getvalue()
    notes = []
    if error is None:
        if value is _MISSING:
            if namespace is not None and "result" in namespace:
                value = namespace["result"]
            elif stdout:
                value = stdout[:-1] if stdout.endswith("\n") else stdout
            else:
                value = None
        result_text = encode_result(value, notes)
    stderr = err.getvalue()
    for note in notes:
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
        stderr += "[gleitzeit] %s\n" % note
    head = {"id": req.get("id"), "ok": error is None, "stdout": stdout, "stderr": stderr}
    if error is not None:
        head["error"] = error
        line = json.dumps(head, ensure_ascii=False)
    else:
        line = json.dumps(head, ensure_ascii=False)[:-1] + ', "result": ' + result_text + "}"
    if namespace is not None:
        namespace.clear()
    return line


def main():
    global START_DIR
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    faulthandler.enable(file=sys.__stderr__)
    set_hard_limit(sys.argv)
    START_DIR = os.getcwd()

    def send(text):
        proto_out.write(text.encode("utf-8", "replace") + b"\n")
        proto_out.flush()

    send(json.dumps({"ready": True, "version": sys.version.split()[0], "pid": os.getpid()}))
    while True:
        line = proto_in.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError as exc:
            send(json.dumps({"id": None, "ok": False, "stdout": "", "stderr": "",
                             "error": {"type": "ProtocolError", "message": str(exc), "traceback": ""}}))
            continue
        try:
            reply = handle(req)
        except BaseException as exc:  # a bug here must be reported, not kill the worker
            reply = json.dumps({"id": req.get("id"), "ok": False, "stdout": "", "stderr": "",
                                "error": {"type": "WorkerError", "message": repr(exc),
                                          "traceback": traceback.format_exc()}})
        send(reply)


START_DIR = None
main()
