"""Hostile programs: each ends as a failure verdict, the harness returns, the batch goes on, and nothing outside
the sandbox changes (canary file + dir, the environment, the network, leftover processes). Every program runs
through the fork-server fast path and the subprocess fallback."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from study.problems import TestSuite
from study.sandbox import Limits, run_batch, run_program

TIMEOUT = 1.5
SECRET = "s3cr3t-study-canary-91f2"
MODES = ["fork", "subprocess"]


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """A file and a folder the programs try to damage, outside /tmp too (/var/tmp is world-writable)."""
    monkeypatch.setenv("STUDY_TEST_SECRET", SECRET)
    roots = [tmp_path, Path("/var/tmp") / f"study-canary-{os.getpid()}-{tmp_path.name}"]
    roots[1].mkdir(exist_ok=True)
    for r in roots:
        (r / "canary.txt").write_text("original")
        (r / "dir").mkdir(exist_ok=True)
        (r / "dir" / "keep.txt").write_text("keep")
    yield roots
    import shutil

    shutil.rmtree(roots[1], ignore_errors=True)


def snapshot(roots):
    return {str(p): (p.read_bytes() if p.is_file() else None) for r in roots for p in sorted(r.rglob("*"))} | \
        {"var_tmp": sorted(os.listdir("/var/tmp")), "dev_shm": sorted(os.listdir("/dev/shm"))}


def leftover_sleepers() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if b"4242.5" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def hostile_programs(roots) -> dict[str, tuple[str, TestSuite]]:
    asserts = TestSuite("asserts", ("assert solve() == 42",))
    f, d = str(roots[0] / "canary.txt"), str(roots[0] / "dir")
    f2, d2 = str(roots[1] / "canary.txt"), str(roots[1] / "dir")
    rel = "../" * 12 + f.lstrip("/")
    write_all = (f"import shutil\nfor p in [{f!r}, {f2!r}]:\n    try: open(p, 'w').write('pwned')\n"
                 f"    except OSError: pass\nfor p in [{d!r}, {d2!r}]:\n    shutil.rmtree(p, ignore_errors=True)\n"
                 f"open('/var/tmp/pwned-by-sandbox', 'w').write('x')\n")
    return {
        "infinite_loop": ("while True:\n    pass\n", asserts),
        "atexit_loop": ("import atexit\natexit.register(lambda: [0 for _ in iter(int, 1)])\n"
                        "def solve():\n    return 41\n", asserts),
        "del_loop": ("class A:\n    def __del__(self):\n        while True:\n            pass\n"
                     "def solve():\n    A()\n    return 42\n", asserts),
        "deep_recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1)\nr(0)\n", asserts),
        "recursion_error": ("def r(n):\n    return r(n + 1)\nr(0)\n", asserts),
        "memory_list": ("x = []\nwhile True:\n    x.append(' ' * 10**6)\n", asserts),
        "memory_string": ("s = 'a' * 10**11\n", asserts),
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", asserts),
        "thread_bomb": ("import threading, time\nwhile True:\n"
                        "    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n", asserts),
        "kill_parent": ("import os\nos.kill(os.getppid(), 9)\ndef solve():\n    return 41\n", asserts),
        "kill_everyone": ("import os\ntry:\n    os.kill(-1, 9)\nexcept OSError:\n    pass\n"
                          "def solve():\n    return 41\n", asserts),
        "ignore_signals": ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):\n"
                           "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", asserts),
        "write_absolute": (write_all + "def solve():\n    return 41\n", asserts),
        "write_dotdot": (f"try:\n    open({rel!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n"
                         f"import os\nos.remove({rel!r})\n", asserts),
        "fill_disk_one_file": ("with open('big', 'wb') as fh:\n    while True:\n        fh.write(b'0' * 2**20)\n",
                               asserts),
        "fill_disk_many_files": ("i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as fh:\n"
                                 "        fh.write(b'0' * (8 << 20))\n    i += 1\n", asserts),
        "read_secrets": ("import os, glob\nfound = SECRET_IN_ENV = os.environ.get('STUDY_TEST_SECRET')\n"
                         "for p in glob.glob('/proc/*/environ'):\n    try:\n        data = open(p, 'rb').read()\n"
                         f"    except OSError:\n        continue\n    if {SECRET!r}.encode() in data:\n"
                         "        found = True\ndef solve():\n    return 42 if found else 0\n", asserts),
        "socket_localhost": ("import socket\ns = socket.create_connection(('127.0.0.1', PORT), timeout=0.5)\n"
                             "def solve():\n    return 42\n", asserts),
        "spawn_subprocess": ("import subprocess, sys\n"
                             f"subprocess.run(['sh', '-c', 'echo pwned > {f}; rm -rf {d}; touch /var/tmp/pwned2'])\n"
                             "subprocess.Popen(['sleep', '4242.5'], start_new_session=True)\n"
                             "def solve():\n    return 41\n", asserts),
        "leave_daemon": ("import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '4242.5'])\n"
                         "def solve():\n    return 41\n", asserts),
        "print_gigabytes": ("import sys\nchunk = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(chunk)\n", asserts),
        "close_stdout": ("import os, sys\nos.close(1)\nsys.stdout.close()\nprint('hello')\n", asserts),
        "stdio_print_gigabytes": ("import sys\nchunk = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(chunk)\n",
                                  TestSuite("stdio", ({"input": "1\n", "output": "1\n"},))),
        "stdio_close_stdout": ("import os\nos.close(1)\nprint(input())\n",
                               TestSuite("stdio", ({"input": "1\n", "output": "1\n"},))),
        "stdio_never_reads": ("print(0)\n", TestSuite("stdio", ({"input": "7\n" * 200_000, "output": "7"},))),
        "stdio_blocks_on_stdin": ("import sys\nsys.stdin.read()\nsys.stdin.read()\nimport time\ntime.sleep(100)\n",
                                  TestSuite("stdio", ({"input": "5\n", "output": "5"},))),
    }


NAMES = list(hostile_programs([Path("/x"), Path("/y")]))


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_hostile_program_is_contained(name, mode, canary, listener):
    program, tests = hostile_programs(canary)[name]
    program = program.replace("PORT", str(listener.getsockname()[1]))
    before = snapshot(canary)
    t0 = time.monotonic()
    v = run_program(program, tests, Limits(timeout=TIMEOUT, memory_mb=256, mode=mode))
    elapsed = time.monotonic() - t0
    assert v.status in ("failed", "runtime_error", "timeout"), v
    assert elapsed < TIMEOUT + 10, "the harness must return within its time bound"
    assert snapshot(canary) == before, "the program changed something outside its sandbox"
    assert not Path("/var/tmp/pwned-by-sandbox").exists() and not Path("/var/tmp/pwned2").exists()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    time.sleep(0.05)
    assert leftover_sleepers() == [], "a process started by the program outlived it"


@pytest.mark.parametrize("mode", MODES)
def test_expected_statuses(mode, canary, listener):
    """The specific verdicts (not just 'not passed') for the mechanisms that have one, in one batch; a good program
    after all the hostile ones still passes (the batch continues, nothing leaked into the workers)."""
    progs = hostile_programs(canary)
    names = ["infinite_loop", "recursion_error", "memory_list", "memory_string", "thread_bomb", "ignore_signals",
             "fill_disk_one_file", "read_secrets", "socket_localhost", "stdio_print_gigabytes"]
    programs = [progs[n][0].replace("PORT", str(listener.getsockname()[1])) for n in names]
    suites = [progs[n][1] for n in names]
    programs.append("def solve():\n    return 42\n")
    suites.append(TestSuite("asserts", ("assert solve() == 42",)))
    vs = dict(zip(names + ["good"], run_batch(programs, suites, Limits(timeout=TIMEOUT, memory_mb=256, mode=mode),
                                              workers=2)))
    assert vs["good"].status == "passed"
    assert vs["infinite_loop"].status == "timeout"
    assert vs["ignore_signals"].status == "timeout"
    for n in ["recursion_error", "memory_list", "memory_string", "thread_bomb", "fill_disk_one_file"]:
        assert vs[n].status == "runtime_error", (n, vs[n])
    assert "MemoryError" in vs["memory_string"].stderr
    assert vs["read_secrets"].status == "failed"  # ran fine, but found no secret
    assert vs["socket_localhost"].status == "runtime_error" and "OSError" in vs["socket_localhost"].stderr \
        or "unreachable" in vs["socket_localhost"].stderr.lower()
    assert vs["stdio_print_gigabytes"].status == "runtime_error"
