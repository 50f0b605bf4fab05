"""The sandbox's inside: everything that runs in a forked or freshly started process. Standard library only.

This file is both an importable module (``study.sandbox`` uses ``read_line``/``parse_result``) and a script whose
*source text* is executed with ``python -I -c`` by the fork server (``serve()``) and by the subprocess fallback
(``subprocess_main()``), so it must never import ``study`` or any third-party package.

Processes (both modes)::

    supervisor: the fork server (one per worker, long-lived) or, in the fallback, a fresh interpreter per program.
      Once, at start (``setup_supervisor``): own network namespace (no interface up), IPC and mount namespaces;
      the other world-writable folders covered by root-owned tmpfs; the interpreter exposed to uid 65534.
      Per program (``supervise``): fork G into a new pid namespace, wait for ONE result line (carrying the job's
      nonce) or the wall timeout, SIGKILL G's process group, reap, report.
      └─ G  pid 1 of its pid namespace, own mount namespace: fresh size-limited tmpfs on /tmp (cwd), fresh /proc;
            rlimits, uid/gid 65534 (+RLIMIT_NPROC), no_new_privs, empty environment, fds 0-2 on /dev/null;
            compiles and runs program + tests in-process, writes the result line, ``os._exit``.
           └─ H  (stdio style only) one fork per test case: stdin/stdout/stderr on files in the tmpfs

When G dies the kernel kills every process left in its pid namespace, and its tmpfs vanishes with its mount
namespace, so nothing a program starts or writes outlives it. Each namespace step degrades silently when the
kernel refuses it; the result's ``isolation`` list (``study.sandbox.probe()``) says what was applied.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
STDERR_EXCERPT = 800
SHARED_WRITABLE = ("/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    return _libc.unshare(ctypes.c_int(flags)) == 0


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    return _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def _prctl(option: int, arg: int) -> None:
    _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_EXCERPT else "..." + text[-STDERR_EXCERPT:]


def _format_exc(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return _excerpt("".join(tb))


MS_BIND, MNT_DETACH = 4096, 2
_EXPOSE_PLAN: list | None = None


def expose_plan() -> list[tuple[str, list[str]]]:
    """Where the interpreter lives behind a folder uid 65534 cannot enter (e.g. pyenv under /root, mode 700):
    [(closed ancestor, [interpreter prefixes under it])]. Inside the sandbox's mount namespace each closed ancestor
    is covered by an empty tmpfs into which only the prefixes are bind-mounted back, so the dropped
    uid can import the standard library without seeing anything else there."""
    global _EXPOSE_PLAN
    if _EXPOSE_PLAN is None:
        plan: dict[str, list[str]] = {}
        for prefix in {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}:
            parts = prefix.strip("/").split("/")
            for i in range(1, len(parts)):
                anc = "/" + "/".join(parts[:i])
                if not os.stat(anc).st_mode & 0o001:
                    plan.setdefault(anc, []).append(prefix)
                    break
        _EXPOSE_PLAN = sorted(plan.items())
    return _EXPOSE_PLAN


def _expose(plan) -> bool:
    staged = []
    for anc, prefixes in plan:
        for prefix in prefixes:
            stage = f"/tmp/.expose{len(staged)}"
            os.mkdir(stage)
            if not _mount(prefix, stage, None, MS_BIND | MS_REC):
                return False
            staged.append((stage, prefix))
        if not _mount("tmpfs", anc, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755"):
            return False
    for stage, prefix in staged:
        os.makedirs(prefix, exist_ok=True)
        ok = _mount(stage, prefix, None, MS_BIND | MS_REC)
        _libc.umount2(stage.encode(), MNT_DETACH)
        os.rmdir(stage)
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------------------- supervisor setup
# Set up once per supervisor process (fork server or fallback interpreter) by ``setup_supervisor``.
_STATE: dict = {"applied": [], "orig_net": None, "self_pid_ns": None, "private": False}


def setup_supervisor() -> list[str]:
    """Move this supervisor into its own network, IPC and mount namespaces (it talks only over pipes): no
    interface is up, the interpreter is exposed to uid 65534 (``expose_plan``), and the other world-writable
    folders are covered by empty root-owned tmpfs (nobody can write there). Each program then only needs a new
    pid and mount namespace on top. Steps the kernel refuses are skipped; returns what was applied."""
    applied = _STATE["applied"]
    try:
        _STATE["orig_net"] = os.open("/proc/self/ns/net", os.O_RDONLY)
        _STATE["self_pid_ns"] = os.open("/proc/self/ns/pid", os.O_RDONLY)
    except OSError:
        pass
    if _unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS):
        applied.append("netns")
        if _mount("none", "/", None, MS_REC | MS_PRIVATE):
            _STATE["private"] = True
            if _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"):
                if _expose(expose_plan()):
                    applied.append("expose")
                for extra in SHARED_WRITABLE:
                    if os.path.isdir(extra):
                        _mount("tmpfs", extra, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    return applied


def start_program(job: dict, result_fd: int) -> int:
    """Fork G, the program's process, as pid 1 of a new pid namespace when allowed; returns its pid (also its
    process group). Must be called from the single-threaded supervisor."""
    new_pid_ns = job["limits"]["namespaces"] and _unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            _grandchild(job, result_fd, new_pid_ns)
        finally:
            os._exit(1)
    try:
        os.setpgid(pid, pid)  # also here, so that killpg cannot race the child's own setpgid
    except OSError:
        pass
    if new_pid_ns and _STATE["self_pid_ns"] is not None:
        _libc.setns(_STATE["self_pid_ns"], CLONE_NEWPID)  # later forks of the supervisor: back in our pid ns
    return pid


def death_message(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = {signal.SIGKILL: " (memory/CPU limit or killed)", signal.SIGXCPU: " (CPU limit)"}.get(sig, "")
        return f"program killed by signal {signal.Signals(sig).name}{why}"
    return f"program exited (code {os.WEXITSTATUS(status)}) before the tests finished"


# ------------------------------------------------------------------------------------- the program (G)
def _private_tmp(lim: dict, applied: list, new_pid_ns: bool) -> str | None:
    """G's own mount namespace: a fresh size-limited tmpfs on /tmp (the working dir) and a /proc of its pid ns."""
    if not lim["namespaces"] or not _unshare(CLONE_NEWNS):
        return None
    if not _STATE["private"] and not _mount("none", "/", None, MS_REC | MS_PRIVATE):
        return None
    if not _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(lim['disk_mb'])}m,mode=1777"):
        return None
    applied.append("tmpfs")
    if new_pid_ns and _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC):
        applied.append("proc")
    os.mkdir("/tmp/sandbox", 0o700)
    if os.geteuid() == 0 and lim["drop_privileges"]:
        os.chown("/tmp/sandbox", NOBODY, NOBODY)
    return "/tmp/sandbox"


def _lockdown(lim: dict, workdir: str, keep_fd: int, applied: list) -> None:
    root = os.geteuid() == 0
    if lim["network"] and _STATE["orig_net"] is not None:
        _libc.setns(_STATE["orig_net"], CLONE_NEWNET)
        applied.remove("netns")
    os.chdir(workdir)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for lo, hi in ((3, keep_fd), (keep_fd + 1, 1 << 16)):
        os.closerange(lo, hi)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                       "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"})
    mem = int(lim["memory_mb"]) << 20
    cpu = int(math.ceil(lim["cpu_seconds"]))
    fsize = int(lim["file_size_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(lim["max_open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Dropping to 65534 needs the interpreter readable by it (see expose_plan).
    if root and lim["drop_privileges"] and (not expose_plan() or "expose" in applied):
        n = int(lim["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))  # counted per uid: enforced once we are not root
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        applied.append("uid")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid (a uid change clears it)
    applied.append("rlimits")
    _fresh_stdio()
    sys.argv = ["solution.py"]
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]


def _fresh_stdio() -> None:
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="replace", closefd=False)


def _grandchild(job: dict, result_fd: int, new_pid_ns: bool) -> None:
    applied = list(_STATE["applied"]) + (["pidns"] if new_pid_ns else [])
    workdir = _private_tmp(job["limits"], applied, new_pid_ns)
    if workdir is None:  # no mount namespace: a plain folder, removed by the supervisor
        workdir = job["workdir"]
        os.mkdir(workdir, 0o700)
        if os.geteuid() == 0 and job["limits"]["drop_privileges"]:
            os.chown(workdir, NOBODY, NOBODY)
    _lockdown(job["limits"], workdir, result_fd, applied)
    tests = job["tests"]
    try:
        if tests["style"] == "asserts":
            res = _run_asserts(job["program"], tests)
        else:
            res = _run_stdio(job["program"], tests)
    except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError inside the harness itself
        res = {"status": "runtime_error", "passed": 0, "stderr": _format_exc(exc)}
    res["nonce"] = job["nonce"]
    res["isolation"] = applied
    _write_all(result_fd, (json.dumps(res) + "\n").encode())
    os._exit(0)


def _compile(src: str, name: str):
    try:
        return compile(src, name, "exec"), None
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        return None, _excerpt("".join(traceback.format_exception_only(type(exc), exc)))


def _run_asserts(program: str, tests: dict) -> dict:
    code, err = _compile(program, "<solution>")
    if code is None:
        return {"status": "compile_error", "passed": 0, "stderr": err}
    glb = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(code, glb)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at top level is a crash too
        return {"status": "runtime_error", "passed": 0, "stderr": _format_exc(exc)}
    if tests.get("setup"):
        try:
            exec(compile(tests["setup"], "<tests-setup>", "exec"), glb)
        except BaseException as exc:  # noqa: BLE001
            return {"status": "runtime_error", "passed": 0, "stderr": "in test setup: " + _format_exc(exc)}
    passed, errors, first_msg = 0, 0, ""
    for i, case in enumerate(tests["cases"]):
        try:
            exec(compile(case, f"<test {i}>", "exec"), glb)
            passed += 1
        except AssertionError as exc:
            first_msg = first_msg or f"test {i} failed: {case.strip()[:200]}" + (f" ({exc})" if str(exc) else "")
        except BaseException as exc:  # noqa: BLE001
            errors += 1
            first_msg = first_msg or f"test {i} raised: " + _format_exc(exc)
    status = "passed" if passed == len(tests["cases"]) else ("runtime_error" if errors else "failed")
    return {"status": status, "passed": passed, "stderr": _excerpt(first_msg)}


# ---------------------------------------------------------------------------------------- stdio (APPS)
def _as_float(tok: str):
    try:
        return float(tok)
    except ValueError:
        return None


def same_output(got: str, want: str) -> bool:
    """APPS-style tolerant stdout comparison: exact after stripping each line and dropping blank edges; else the
    whitespace-separated tokens must match, numbers within 1e-6 (absolute or relative)."""
    g = [ln.strip() for ln in got.strip().splitlines()]
    w = [ln.strip() for ln in want.strip().splitlines()]
    if g == w:
        return True
    gt, wt = got.split(), want.split()
    if len(gt) != len(wt):
        return False
    for a, b in zip(gt, wt):
        if a == b:
            continue
        fa, fb = _as_float(a), _as_float(b)
        if fa is None or fb is None or not math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-6):
            return False
    return True


def _normalise(v):
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return [_normalise(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _normalise(x) for k, x in v.items()}
    return v


def same_value(got, want) -> bool:
    """Call-based comparison: equal after tuple->list; floats within 1e-6; APPS wraps returns as ``[value]``."""
    got, want = _normalise(got), _normalise(want)
    if _eq(got, want):
        return True
    return isinstance(want, list) and len(want) == 1 and _eq(got, want[0])


def _eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _json_or_raw(v):
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _run_stdio(program: str, tests: dict) -> dict:
    code, err = _compile(program, "<solution>")
    if code is None:
        return {"status": "compile_error", "passed": 0, "stderr": err}
    if tests.get("fn_name"):
        return _run_call_based(code, tests)
    passed, errors, first_msg = 0, 0, ""
    for i, case in enumerate(tests["cases"]):
        with open(".stdin", "w", encoding="utf-8") as f:
            f.write(case["input"] if isinstance(case["input"], str) else "\n".join(map(str, case["input"])))
        pid = os.fork()
        if pid == 0:
            _run_stdio_case(code)
        _, status = os.waitpid(pid, 0)
        out = _read_head(".stdout", 1 << 24)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            want = case["output"] if isinstance(case["output"], str) else "\n".join(map(str, case["output"]))
            if same_output(out, want):
                passed += 1
            else:
                first_msg = first_msg or f"test {i}: wrong output {out[:100]!r}, expected {want[:100]!r}"
        else:
            errors += 1
            why = _read_tail(".stderr", STDERR_EXCERPT) if os.WIFEXITED(status) else \
                f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
            first_msg = first_msg or f"test {i} raised: {why}"
    status = "passed" if passed == len(tests["cases"]) else ("runtime_error" if errors else "failed")
    return {"status": status, "passed": passed, "stderr": _excerpt(first_msg)}


def _run_stdio_case(code) -> None:
    rc = 1
    try:
        fd_in = os.open(".stdin", os.O_RDONLY)
        fd_out = os.open(".stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fd_err = os.open(".stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for src, dst in ((fd_in, 0), (fd_out, 1), (fd_err, 2)):
            os.dup2(src, dst)
            os.close(src)
        _fresh_stdio()
        try:
            exec(code, {"__name__": "__main__", "__builtins__": builtins})
            rc = 0
        except SystemExit as exc:
            rc = 0 if exc.code in (None, 0) else 1
            if rc:
                sys.stderr.write(f"SystemExit({exc.code!r})\n")
        except BaseException as exc:  # noqa: BLE001
            sys.stderr.write(_format_exc(exc))
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - closed stdout, full disk: the output is what it is
                pass
    finally:
        os._exit(rc)


def _read_head(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def _read_tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _run_call_based(code, tests: dict) -> dict:
    glb = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(code, glb)
        name = tests["fn_name"]
        fn = glb.get(name)
        if fn is None and "Solution" in glb:
            fn = getattr(glb["Solution"](), name, None)
        if fn is None:
            raise NameError(f"function {name!r} is not defined")
    except BaseException as exc:  # noqa: BLE001
        return {"status": "runtime_error", "passed": 0, "stderr": _format_exc(exc)}
    passed, errors, first_msg = 0, 0, ""
    for i, case in enumerate(tests["cases"]):
        args = _json_or_raw(case["input"])
        want = _json_or_raw(case["output"])
        try:
            got = fn(*args) if isinstance(args, list) else fn(args)
        except BaseException as exc:  # noqa: BLE001
            errors += 1
            first_msg = first_msg or f"test {i} raised: " + _format_exc(exc)
            continue
        if same_value(got, want):
            passed += 1
        else:
            first_msg = first_msg or f"test {i}: returned {str(got)[:100]}, expected {str(want)[:100]}"
    status = "passed" if passed == len(tests["cases"]) else ("runtime_error" if errors else "failed")
    return {"status": status, "passed": passed, "stderr": _excerpt(first_msg)}


# ------------------------------------------------------------------------------------------ supervisor
def read_line(fd: int, deadline: float, cap: int = 1 << 20) -> tuple[bytes | None, bool]:
    """Read from ``fd`` until the first newline, EOF or ``deadline`` (monotonic). Returns (line or None, timed_out).
    At most ``cap`` bytes are kept, so a flood on the pipe cannot eat the supervisor's memory."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None, True
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, False
        buf += chunk
        nl = buf.find(b"\n")
        if nl >= 0:
            return buf[:nl], False
        if len(buf) > cap:
            return None, False


def parse_result(line: bytes | None, timed_out: bool, nonce: str, timeout: float) -> dict:
    """The supervisor's verdict from G's (or C's) line."""
    if timed_out:
        return {"status": "timeout", "passed": 0, "stderr": f"timed out after {timeout:g} s"}
    try:
        res = json.loads(line) if line else None
    except ValueError:
        res = None
    if not isinstance(res, dict) or res.get("nonce") != nonce:
        return {"status": "runtime_error", "passed": 0, "stderr": "no valid result from the sandbox"}
    res.pop("nonce")
    return res


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def supervise(job: dict, base: str) -> dict:
    """Start G, wait for its one result line or the wall timeout, kill its process group (and with it, as pid 1,
    its whole pid namespace), reap it. The fallback work dir under ``base`` is used only without namespaces."""
    lim = job["limits"]
    job["workdir"] = os.path.join(base, "job-" + job["nonce"])  # created by G only if it needs it
    r, w = os.pipe()
    t0 = time.monotonic()
    try:
        pid = start_program(job, w)
    finally:
        os.close(w)
    try:
        line, timed_out = read_line(r, t0 + lim["timeout"])
    finally:
        _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        os.close(r)
        if os.path.lexists(job["workdir"]):
            _rmtree(job["workdir"])
    if line is None and not timed_out:
        line = json.dumps({"nonce": job["nonce"], "status": "runtime_error", "passed": 0,
                           "stderr": death_message(status)}).encode()
    res = parse_result(line, timed_out, job["nonce"], lim["timeout"])
    res["duration"] = time.monotonic() - t0
    return res


# Modules most test code imports; loaded once in the server so each fork finds them in sys.modules. Kept short:
# every module loaded here makes each fork (page tables, mappings) a little slower.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string")


def _add_site(paths: list[str]) -> None:
    """We start with ``-I -S`` (no ``.pth`` processing: faster start, smaller forks); programs may still import
    the installed packages, so the site-packages folders go on ``sys.path``."""
    sys.path.extend(p for p in paths if p not in sys.path)


def serve(site_paths: list[str] = ()) -> None:
    """Fork-server main loop: one JSON job per line on stdin -> one JSON result per line on stdout."""
    import importlib
    import tempfile

    _add_site(list(site_paths))
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    _fresh_stdio()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client shuts us down by closing stdin
    setup_supervisor()
    base = tempfile.mkdtemp(prefix="study-sandbox-")  # fallback work dirs (our private /tmp when we have one)
    os.chmod(base, 0o711)
    reader = os.fdopen(proto_in, "rb")
    try:
        for raw in reader:
            job = json.loads(raw)
            try:
                res = supervise(job, base)
            except BaseException as exc:  # noqa: BLE001
                res = {"status": "runtime_error", "passed": 0, "stderr": "sandbox error: " + _format_exc(exc)}
            _write_all(proto_out, (json.dumps(res) + "\n").encode())
    finally:
        _rmtree(base)


def subprocess_main(site_paths: list[str] = ()) -> None:
    """Subprocess fallback: this fresh interpreter supervises one program exactly as the fork server does, then
    prints the result line. The caller created our session and kills it at its own deadline."""
    _add_site(list(site_paths))
    job = json.loads(sys.stdin.buffer.read())
    out = os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _fresh_stdio()
    import tempfile

    setup_supervisor()
    base = tempfile.mkdtemp(prefix="study-sandbox-")
    os.chmod(base, 0o711)
    try:
        res = supervise(job, base)
    except BaseException as exc:  # noqa: BLE001
        res = {"status": "runtime_error", "passed": 0, "stderr": "sandbox error: " + _format_exc(exc)}
    finally:
        _rmtree(base)
    res["nonce"] = job["nonce"]
    _write_all(out, (json.dumps(res) + "\n").encode())
    os._exit(0)
