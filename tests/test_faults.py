"""Faults a cluster run meets: a second job in the same run directory, a dead job's lock, a truncated newest
checkpoint, preemption by SIGTERM / SIGUSR1, a full disk, and progress written to a log file."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from cbsflow import locks
from cbsflow.cli import main
from cbsflow.data.toy import gaussian
from cbsflow.errors import EXIT_PREEMPTED, Preempted
from cbsflow.paths import linear
from cbsflow.training import TrainSettings, fit

SMOKE = "gin/smoke/toy.gin"
ONE_EXPERT = ["--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 1]"]


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x, t, y=None):
        return self.lin(torch.cat([x, t[:, None]], dim=1))


def _fit(state_dir, steps, **kw):
    net = Small()
    settings = TrainSettings(steps=steps, batch_size=16, lr=1e-2, ema_decay=0.9, **kw)
    out = fit(net, gaussian(), linear(), (0.0, 1.0), settings, seed=3, state_dir=str(state_dir))
    return net, out


@pytest.fixture
def holder():
    """A live process on this host to stand for another job."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _lock_file(path, host, pid, pid_start=None, since=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"host": host, "pid": pid, "pid_start": pid_start, "since": since or time.time(),
                   "command": "tools/run.py", "token": "other"}, f)


def _one_message(err: str) -> bool:
    """One line of error (progress lines aside), no traceback."""
    return "Traceback" not in err and len([x for x in err.splitlines() if x.startswith(("error:", "stopped:"))]) == 1


# ------------------------------------------------------------------------------------------------ locks

def test_a_second_job_in_the_same_run_directory_stops_naming_the_holder(tmp_path, capsys, holder):
    run = tmp_path / "run"
    _lock_file(locks.lock_path(str(run), "split"), socket.gethostname(), holder.pid, locks._process_start(holder.pid))
    code = main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and _one_message(err), err
    assert f"stage split of {run} is being run by host {socket.gethostname()}, PID {holder.pid}, since " in err
    assert not (run / "split.json").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, holder):
    run = tmp_path / "run"
    holder.kill()
    holder.wait()
    _lock_file(locks.lock_path(str(run), "split"), socket.gethostname(), holder.pid, "1")
    with pytest.warns(UserWarning, match="took over a lock left by host"):
        assert main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split", "--run-dir", str(run)]) == 0
    assert (run / "split.json").exists() and not os.path.exists(locks.lock_path(str(run), "split"))


def test_another_hosts_lock_is_held_while_fresh_and_taken_over_once_stale(tmp_path):
    path = str(tmp_path / "locks" / "x.lock")
    _lock_file(path, "node-elsewhere", 12345)
    with pytest.raises(locks.LockHeld, match="host node-elsewhere, PID 12345"):
        locks.Lock(path, "x").acquire()
    old = time.time() - locks.STALE_AFTER - 5
    os.utime(path, (old, old))
    with pytest.warns(UserWarning, match="took over"):
        with locks.Lock(path, "x") as lock:
            assert json.load(open(path))["token"] == lock.token
    assert not os.path.exists(path)


def test_expert_locks_let_segment_jobs_run_side_by_side(tmp_path, capsys, holder):
    run = tmp_path / "run"
    base = ["--gin", SMOKE, "--run-dir", str(run), "--bind", "split.solver = @uniform()",
            "--bind", "uniform.n_segments = 2", "--stages", "split,train"]
    _lock_file(locks.lock_path(str(run), "train.segment_0"), socket.gethostname(), holder.pid,
               locks._process_start(holder.pid))
    assert main(base + ["--segment", "1"]) == 0  # expert 0's job does not block expert 1's
    assert (run / "checkpoints" / "segment_1.pt").exists()
    assert main(base + ["--segment", "0"]) == 2
    assert f"training of segment_0 in {run} is being run by host" in capsys.readouterr().err
    assert not (run / "checkpoints" / "segment_0.pt").exists()


# ------------------------------------------------------------------------------------------ checkpoints

def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    _fit(tmp_path / "s", 8, checkpoint_every=2)
    states = sorted(p.name for p in (tmp_path / "s").iterdir() if p.name.startswith("step_"))
    assert states == ["step_00000004", "step_00000006"]
    weights = tmp_path / "s" / "step_00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a node crash mid-write
    with pytest.warns(RuntimeWarning, match="step_00000006 is unreadable"):
        resumed, _ = _fit(tmp_path / "s", 8, checkpoint_every=2)
    assert (tmp_path / "s" / "unreadable_step_00000006").is_dir()
    straight, _ = _fit(tmp_path / "straight", 8, checkpoint_every=2)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)


def test_sigterm_writes_a_checkpoint_exits_75_and_the_rerun_loses_no_step(tmp_path, capsys, monkeypatch):
    from cbsflow import training

    args = ["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--bind", "expert/training.ema_decay = 0.9",
            "--bind", "expert/training.log_every = 1"]
    assert main(args + ["--run-dir", str(tmp_path / "straight")]) == 0
    micro, calls = training._micro_step, [0]

    def warned(*a, **kw):  # the cluster's warning arrives during step 13
        calls[0] += 1
        if calls[0] == 13:
            os.kill(os.getpid(), signal.SIGTERM)
        return micro(*a, **kw)

    monkeypatch.setattr(training, "_micro_step", warned)
    capsys.readouterr()
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == EXIT_PREEMPTED
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 13" in err and _one_message(err)
    assert (tmp_path / "run" / "checkpoints" / "segment_0" / "step_00000013").is_dir()
    monkeypatch.setattr(training, "_micro_step", micro)
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == 0
    assert "at step 13" in capsys.readouterr().out
    done, straight = (torch.load(tmp_path / r / "checkpoints" / "segment_0.pt", weights_only=True) for r in ("run", "straight"))
    for key in ("state_dict", "ema"):
        for a, b in zip(done[key].values(), straight[key].values()):
            assert torch.equal(a, b), key
    logs = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in open(tmp_path / r / "checkpoints" / "segment_0" / "log.jsonl")] for r in ("run", "straight")]
    assert logs[0] == logs[1] and len(logs[0]) == 20


def test_sigusr1_without_a_state_dir_stops_with_a_clear_message(monkeypatch):
    from cbsflow import training

    micro = training._micro_step

    def warned(*a, **kw):
        os.kill(os.getpid(), signal.SIGUSR1)
        return micro(*a, **kw)

    monkeypatch.setattr(training, "_micro_step", warned)
    with pytest.raises(Preempted, match="stopped by SIGUSR1 after step 1; this network keeps no checkpoint"):
        fit(Small(), gaussian(), linear(), (0.0, 1.0), TrainSettings(steps=5, batch_size=8))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def _no_space(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_during_a_checkpoint_is_one_error_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    from cbsflow import training

    micro, calls = training._micro_step, [0]

    def filling(*a, **kw):  # the disk fills up after the checkpoint at step 5
        calls[0] += 1
        if calls[0] == 7:
            _no_space(monkeypatch)
        return micro(*a, **kw)

    monkeypatch.setattr(training, "_micro_step", filling)
    run = tmp_path / "run"
    code = main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--run-dir", str(run),
                 "--bind", "expert/training.checkpoint_every = 5"])
    err = capsys.readouterr().err
    state = run / "checkpoints" / "segment_0"
    assert code == 2 and _one_message(err), err
    assert f"cannot write the checkpoint {state / 'step_00000010'} (No space left on device)" in err
    assert f"the previous checkpoint ({state / 'step_00000005'}) is intact" in err
    assert sorted(p.name for p in state.iterdir() if p.name.startswith("step_")) == ["step_00000005"]
    monkeypatch.undo()
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    capsys.readouterr()
    assert main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--run-dir", str(run),
                 "--bind", "expert/training.checkpoint_every = 5"]) == 0  # space freed: the rerun resumes
    assert f"resuming from {state / 'step_00000005'} at step 5" in capsys.readouterr().out


def test_a_full_disk_during_an_artifact_write_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split", "--run-dir", str(run)]) == 0
    before = (run / "split.json").read_bytes()
    _no_space(monkeypatch)
    capsys.readouterr()
    code = main(["--gin", SMOKE, "--bind", "split.solver = @uniform()", "--bind", "uniform.n_segments = 3",
                 "--stages", "split", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and _one_message(err), err
    assert f"cannot write {run / 'split.json'} (No space left on device); the previous file is intact" in err
    assert (run / "split.json").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------- logs

def test_progress_written_to_a_file_is_a_few_lines(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    fit(Small(), gaussian(), linear(), (0.0, 1.0), TrainSettings(steps=300, batch_size=8), desc="expert 1/1")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("expert 1/1")]
    assert "\r" not in err and 5 <= len(lines) <= 12, err
    assert lines[-1].startswith("expert 1/1: 300/300 (100 %)") and len(err) < 1000
