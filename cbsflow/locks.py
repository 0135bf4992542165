"""Locks on the stages of a run directory, so that two jobs never run the same stage (or train the same expert) at once.

A resubmitted cluster job can start beside the one it replaces, in the same run directory. Each stage a job runs is
guarded by ``RUN_DIR/locks/<stage>.lock``, and each expert the train stage trains by ``locks/train.segment_<k>.lock``
(so the documented one-job-per-expert runs, ``--segment k``, still run side by side). A lock is a small JSON file
created atomically (``O_CREAT | O_EXCL``) that names its holder: host, PID, when it started and the command. A second
job that finds it stops with one line naming that holder. A lock whose holder is gone is taken over: on the same host
when the PID no longer runs (or runs a different process, by its start time), on another host when the holder has
not refreshed the file for ``STALE_AFTER`` seconds (every holder touches its locks every ``HEARTBEAT`` seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
import warnings

from cbsflow.errors import UserError

POLL = 2.0  # seconds between attempts while waiting for a lock
HEARTBEAT = 30.0  # seconds between refreshes of a held lock's modification time
STALE_AFTER = float(os.environ.get("CBSFLOW_LOCK_STALE_SECONDS", 600))  # another host's lock older than this is dead


class LockHeld(UserError):
    """Another live job holds the lock."""


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused PID from the holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return start is None or _process_start(pid) in (None, start)


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, since {since}"


class _Heartbeat:
    """One daemon thread per process that refreshes the modification time of every lock the process holds."""

    def __init__(self):
        self.paths: set[str] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, path: str) -> None:
        with self.lock:
            self.paths.add(path)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="cbsflow-lock-heartbeat", daemon=True)
                self.thread.start()

    def remove(self, path: str) -> None:
        with self.lock:
            self.paths.discard(path)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT)
            with self.lock:
                paths = list(self.paths)
            for path in paths:
                with contextlib.suppress(OSError):
                    os.utime(path)


_HEARTBEAT = _Heartbeat()


class Lock:
    """An exclusive lock file; ``what`` says in words what it guards (for the message a second job prints)."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        self.token = uuid.uuid4().hex
        self.held = False

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now, or damaged: judged by its age alone

    def _stale(self, holder: dict) -> bool:
        try:
            age = time.time() - os.path.getmtime(self.path)
        except OSError:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"], holder.get("pid_start"))
        return age > STALE_AFTER

    def _create(self) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                "since": time.time(), "command": " ".join(sys.argv), "token": self.token}
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return True

    def _take_over(self, holder: dict) -> None:
        """Move a dead holder's lock aside; only the job whose rename moved that very file goes on to create one."""
        aside = f"{self.path}.stale-{self.token}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside) as f:
            moved = f.read()
        if holder and json.loads(moved or "{}").get("token") != holder.get("token"):
            with contextlib.suppress(OSError):  # a live job's fresh lock, moved by mistake: put it back
                os.rename(aside, self.path)
            return
        os.remove(aside)
        warnings.warn(f"{self.path}: took over a lock left by {describe(holder)}, which is no longer running",
                      stacklevel=3)

    def acquire(self, wait: float = 0.0) -> "Lock":
        """Take the lock; a live holder raises ``LockHeld`` at once, or after ``wait`` seconds of polling."""
        deadline, announced = time.time() + wait, False
        while True:
            for _ in range(3):
                if self._create():
                    self.held = True
                    _HEARTBEAT.add(self.path)
                    return self
                holder = self._read()
                if holder is None:
                    continue  # released between our attempts
                if not self._stale(holder):
                    break
                self._take_over(holder)
            else:
                raise LockHeld(f"{self.what}: could not take the lock {self.path}; another job keeps taking it")
            if time.time() >= deadline:
                raise LockHeld(f"{self.what} is being run by {describe(holder)} (lock {self.path}); wait for that "
                               "job, or delete the lock file if it is gone")
            if not announced:
                print(f"{self.what} is being run by {describe(holder)}; waiting for it", flush=True)
                announced = True
            time.sleep(min(POLL, max(0.0, deadline - time.time())))

    def release(self) -> None:
        if not self.held:
            return
        _HEARTBEAT.remove(self.path)
        holder = self._read()
        if holder and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self.held = False

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def held(lock: Lock, state, wait: float = 0.0):
    """Hold ``lock`` for the whole job: its main process takes it and every process learns whether that worked
    (``state`` is Accelerate's PartialState), so that all stop together with the same message."""
    error = None
    if state.is_main_process:
        try:
            lock.acquire(wait)
        except LockHeld as err:
            error = str(err)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [error]
        broadcast_object_list(box)
        error = box[0]
    if error:
        raise LockHeld(error)
    try:
        yield lock
    finally:
        if state.is_main_process:
            lock.release()


def lock_path(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, "locks", f"{name}.lock")


def stage_lock(run_dir: str, stage: str) -> Lock:
    return Lock(lock_path(run_dir, stage), f"stage {stage} of {run_dir}")


def expert_lock(run_dir: str, k: int | str) -> Lock:
    name = f"segment_{k}" if isinstance(k, int) else k
    return Lock(lock_path(run_dir, f"train.{name}"), f"training of {name} in {run_dir}")
