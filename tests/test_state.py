"""Training state belongs to its configuration: a state folder written under other settings is never resumed, a
preempted run resumes with the same command whatever network it was training, and every network trained in a run
directory is locked (issue 33, point 1 and point 6's preemption)."""

import json
import os
import signal
import socket

import pytest
import torch

from cbsflow import locks
from cbsflow.cli import main
from cbsflow.errors import EXIT_PREEMPTED
from test_faults import _lock_file, _one_message, holder  # noqa: F401 -- holder is a fixture

SMOKE = "gin/smoke/toy.gin"
WARM = ["--gin", "gin/splits/warm_split.gin"]
TWO = ["--bind", "N_SEGMENTS = 2", "--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 0.5, 1]",
       "--bind", "expert/training.checkpoint_every = 5",
       "--bind", "expert/training.log_every = 1", "--stages", "split,train"]


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def _weights(run, k):
    return torch.load(run / "checkpoints" / f"segment_{k}.pt", weights_only=True)


def _same_experts(a, b, n=2):
    for k in range(n):
        x, y = _weights(a, k), _weights(b, k)
        assert x["interval"] == y["interval"]
        for key in ("state_dict", "ema"):
            for name, value in x[key].items():
                assert torch.equal(value, y[key][name]), (k, key, name)


def _stop_at_call(monkeypatch, call):
    """SIGTERM arrives while the ``call``-th micro-batch of the process is drawn (a cluster's warning)."""
    from cbsflow import training

    micro, calls = training._micro_step, [0]

    def warned(*a, **kw):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return micro(*a, **kw)

    monkeypatch.setattr(training, "_micro_step", warned)
    return lambda: monkeypatch.setattr(training, "_micro_step", micro)


def test_sigterm_then_a_changed_binding_and_rerun_trains_from_its_own_start(tmp_path, capsys, monkeypatch):
    args = ["--gin", SMOKE, *TWO]
    new_lr = ["--bind", "expert/training.lr = 1e-4"]
    assert main(args + new_lr + ["--run-dir", str(tmp_path / "fresh")]) == 0
    restore = _stop_at_call(monkeypatch, 13)
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == EXIT_PREEMPTED
    restore()
    capsys.readouterr()
    assert main(args + new_lr + ["--rerun", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "was written under other settings (settings.lr: 0.002 -> 0.0001" in out and "resuming" not in out
    _same_experts(tmp_path / "run", tmp_path / "fresh")
    log = [json.loads(line) for line in (tmp_path / "run" / "checkpoints" / "segment_0" / "log.jsonl").open()]
    assert [r["step"] for r in log] == list(range(1, 21)) and {r["lr"] for r in log} == {1e-4}
    aside = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if ".stale-" in p.name]
    assert len(aside) == 1 and aside[0].startswith("segment_0.stale-")  # the old state is kept, not deleted


def test_a_fixed_split_then_the_warm_split_in_one_run_directory_equals_a_fresh_warm_split(tmp_path, capsys):
    args = ["--gin", SMOKE, *TWO, "--bind", "expert/training.steps = 40"]
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == 0
    assert main(args + WARM + ["--rerun", "--run-dir", str(tmp_path / "run")]) == 0
    assert main(args + WARM + ["--run-dir", str(tmp_path / "fresh")]) == 0
    _same_experts(tmp_path / "run", tmp_path / "fresh")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["boundaries"] == json.loads((tmp_path / "fresh" / "split.json").read_text())["boundaries"]
    for k in range(2):  # what each expert trained itself, and what its weights inherited
        assert _weights(tmp_path / "run", k)["steps"] == 30 and _weights(tmp_path / "run", k)["inherited_steps"] == 20


@pytest.mark.parametrize("split", ["fixed", "warm"])
def test_preempted_after_the_first_expert_the_same_command_resumes_and_skips_it(tmp_path, capsys, monkeypatch,
                                                                               split):
    # Fixed split: 20 steps per expert; warm split: the shared network's 2 x 5, then 15 per expert.
    args = ["--gin", SMOKE, *TWO, *(WARM if split == "warm" else [])]
    assert main(args + ["--run-dir", str(tmp_path / "straight")]) == 0
    restore = _stop_at_call(monkeypatch, (20 if split == "fixed" else 10 + 15) + 4)
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == EXIT_PREEMPTED
    restore()
    capsys.readouterr()
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "expert 1/2 is complete, skipped" in out and "at step 4" in out
    _same_experts(tmp_path / "run", tmp_path / "straight")


def test_a_second_job_stops_naming_the_holder_of_the_warm_splits_shared_network(tmp_path, capsys, holder):
    run = tmp_path / "run"
    for name in ("train.warm_base", "train.segment_0"):  # whichever the second job reaches first
        _lock_file(locks.lock_path(str(run), name), socket.gethostname(), holder.pid,
                   locks._process_start(holder.pid))
    code = main(["--gin", SMOKE, *TWO, *WARM, "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and _one_message(err), err
    assert f"training of warm_base in {run} is being run by host {socket.gethostname()}, PID {holder.pid}" in err
    assert not (run / "checkpoints" / "warm_base.pt").exists()


def test_fit_locks_its_state_folder(tmp_path, holder):
    """Any network trained with a state folder (search candidates, auxiliary nets) is locked while it trains."""
    from cbsflow.data.toy import gaussian
    from cbsflow.paths import linear
    from cbsflow.training import TrainSettings, fit
    from test_faults import Small

    state = tmp_path / "checkpoints" / "halving" / "c0" / "segment_0"
    _lock_file(str(state) + ".lock", socket.gethostname(), holder.pid, locks._process_start(holder.pid))
    with pytest.raises(locks.LockHeld, match=f"training of .*halving/c0/segment_0 is being run by .*PID {holder.pid}"):
        fit(Small(), gaussian(), linear(), (0.0, 1.0), TrainSettings(steps=3, batch_size=8), state_dir=str(state))
    assert not state.exists()


def test_checkpointing_more_often_after_a_preemption_still_resumes(tmp_path, capsys, monkeypatch):
    """How often a run logs or saves is not what it trains: changing it resumes the same state."""
    args = ["--gin", SMOKE, *TWO]
    restore = _stop_at_call(monkeypatch, 13)
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == EXIT_PREEMPTED
    restore()
    capsys.readouterr()
    assert main(args + ["--bind", "expert/training.checkpoint_every = 2", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "at step 13" in out and "other settings" not in out
