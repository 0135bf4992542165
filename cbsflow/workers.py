"""Runs of the pipeline in child processes forked from a warm server, for tools that launch many short runs.

A fresh ``python tools/run.py`` spends about 2 s importing torch, gin and every component before it does anything;
tools/landscape.py starts dozens of such runs. Here the imports are paid once, by a multiprocessing *forkserver*
that preloads :mod:`cbsflow.components`, and every run is a fork of it: a new process (its own gin state, seeds and
threads, so runs stay independent and a crash stays in its run) that starts with everything imported. The server never
runs a torch operation, so forking it is safe. Where forkserver does not exist (Windows) runs start a fresh
interpreter instead.

Each run also tunes glibc's allocator (:func:`keep_freed_memory`): by default it hands large freed blocks back to the
kernel and maps them again on the next step, and on small CPU runs those page faults cost 10-20 % of the time
(measured 2026-12-02 on the compare demo, gin/quickstart_compare.gin: 1.5 M page faults a run, 0.2 M tuned).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import subprocess
import sys
import threading
import time

RUN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "run.py")


# glibc's mallopt parameters (malloc.h) and the values a run is given: blocks up to 256 MiB come from the heap, which
# is trimmed only when 256 MiB are free at its top and grows 64 MiB at a time.
_MALLOPT = {"M_MMAP_THRESHOLD": (-3, 256 << 20), "M_TRIM_THRESHOLD": (-1, 256 << 20), "M_TOP_PAD": (-2, 64 << 20)}


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse (a no-op where the C library is not glibc)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    for param, value in _MALLOPT.values():
        mallopt(param, value)


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("forkserver")
    # Besides cbsflow: what every run would import on its own otherwise (measured with python -X importtime):
    # torch._dynamo, pulled in by the first optimizer torch builds (~1.4 s), and scipy.spatial (k-NN metrics).
    ctx.set_forkserver_preload(["cbsflow.components", "cbsflow.cli", "torch._dynamo", "scipy.spatial"])
    return ctx


def _child(argv: list[str], log_path: str, threads: int, report=None) -> None:
    """In the forked child: stdout and stderr (Python's and C's) go to the log, then ``cbsflow.cli.main(argv)``; its
    exit code also goes down ``report`` (a pipe's sending end), see :func:`run`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)
    from cbsflow.cli import main

    code = 1  # what an exception out of main means, as multiprocessing reports it
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if report is not None:
            report.send(code)
            report.close()
    sys.exit(code)


_LIVE: set = set()  # the runs in flight (multiprocessing.Process or subprocess.Popen), for stop_all
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _register(process) -> None:
    """Put a started run among those in flight, or stop it at once if stop_all has begun meanwhile: starting a
    process can take seconds under load, and a run registered after stop_all took its list would train on,
    orphaned, while the landscape waits for it."""
    with _LIVE_LOCK:
        _LIVE.add(process)
        stopping = _STOPPING.is_set()
    if stopping:
        process.terminate()


def stopping() -> bool:
    """Whether stop_all has begun: a run that ends now was stopped, and no new one starts."""
    return _STOPPING.is_set()


def run(argv: list[str], log_path: str, threads: int = 0) -> int:
    """``tools/run.py argv`` with its output appended to ``log_path``, in a forked child (else a fresh interpreter);
    returns its exit code. ``threads`` > 0 sets torch's intra-op threads (and OMP_NUM_THREADS for a fresh one)."""
    if _STOPPING.is_set():
        return 130
    ctx = _context()
    if ctx is None:
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        env.update({f"MALLOC_{name[2:]}_": str(value) for name, (_, value) in _MALLOPT.items()})
        with open(log_path, "a") as log:
            process = subprocess.Popen([sys.executable, RUN_SCRIPT, *argv], stdout=log, stderr=subprocess.STDOUT,
                                       env=env)
            _register(process)
            try:
                return process.wait()
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(process)
    # The child's exit code comes back twice: from the forkserver, which reaps it, and from the child itself through a
    # pipe. Under load the forkserver can lose it and multiprocessing then reports 255 for a run that finished
    # (CPython gh-140867; seen here on replays of finished landscape runs), so the child's own report wins where it
    # exists. A child killed by a signal sends nothing, and the forkserver's code (-signal) stands.
    receive, report = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(list(argv), str(log_path), threads, report))
    process.start()
    report.close()
    _register(process)
    try:
        process.join()
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(process)
    try:
        own = receive.recv() if receive.poll() else None
    except (EOFError, OSError):
        own = None
    finally:
        receive.close()
    return process.exitcode if own is None else own


def stop_all(grace: float = 60.0) -> int:
    """Stop every run in flight and start no more: SIGTERM first (a training run then writes a checkpoint and
    exits, so a rerun resumes it), SIGKILL for any still alive after ``grace`` seconds. Returns how many it stopped."""
    with _LIVE_LOCK:  # a run registered after this sees _STOPPING and stops itself (_register)
        _STOPPING.set()
        live = list(_LIVE)
    for p in live:
        p.terminate()
    deadline = time.time() + grace
    for p in live:
        alive = (lambda: p.poll() is None) if isinstance(p, subprocess.Popen) else p.is_alive
        while alive() and time.time() < deadline:
            time.sleep(0.1)
        if alive():
            p.kill()
    return len(live)
