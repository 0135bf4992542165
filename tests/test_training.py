"""Training: interval-restricted times, resume after SIGKILL at the exact step, NaN stops, one expert per job."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cbsflow.cli import main
from cbsflow.data.toy import gaussian
from cbsflow.errors import UserError
from cbsflow.paths import linear
from cbsflow.training import TrainSettings, drop_labels, fit

SMOKE = "gin/smoke/toy.gin"
ONE_EXPERT = ["--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 1]"]


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


class TimeSpy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(t.detach().clone())
        return self.lin(x)


def test_fit_draws_times_only_inside_the_interval():
    spy = TimeSpy()
    fit(spy, gaussian(), linear(), (0.2, 0.45), TrainSettings(steps=20, batch_size=64, lr=1e-3))
    t = torch.cat(spy.seen)
    assert t.min() >= 0.2 and t.max() < 0.45 and t.numel() == 20 * 64


def test_gradient_accumulation_sees_every_micro_batch():
    spy = TimeSpy()
    fit(spy, gaussian(), linear(), (0.0, 1.0), TrainSettings(steps=5, batch_size=8, lr=1e-3, grad_accum=3))
    assert len(spy.seen) == 15


@pytest.mark.parametrize("kind, share", [("constant", lambda f: 1.0), ("linear", lambda f: 1 - f),
                                         ("cosine", lambda f: (1 + math.cos(math.pi * f)) / 2)])
def test_lr_decay_follows_its_formula_after_the_warm_up(tmp_path, kind, share):
    """The logged learning rate is lr * warm-up share * decay share, counted in optimizer steps (logged after step s)."""
    settings = TrainSettings(steps=40, batch_size=8, lr=1e-2, warmup_steps=5, lr_decay=kind, log_every=1)
    fit(TimeSpy(), gaussian(), linear(), (0.0, 1.0), settings, state_dir=str(tmp_path))
    logged = [json.loads(line)["lr"] for line in open(tmp_path / "log.jsonl")]
    expected = [1e-2 * min(1.0, (s + 1) / 5) * share(s / 40) for s in range(40)]
    assert logged == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert (logged[-1] < 1e-3) == (kind != "constant")


def test_unknown_lr_decay_is_refused():
    with pytest.raises(UserError, match="lr_decay must be one of"):
        TrainSettings(lr_decay="step")


def test_class_dropout_uses_the_null_class():
    y = torch.zeros(10000, dtype=torch.long)
    dropped = drop_labels(y, num_classes=10, p=0.1, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10} and abs((dropped == 10).float().mean() - 0.1) < 0.02


def test_resume_after_sigkill_is_bit_identical_to_an_uninterrupted_run(tmp_path, repo_root):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "tools/run.py", "--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train",
           "--bind", "expert/training.steps = 3000", "--bind", "expert/training.checkpoint_every = 100",
           "--bind", "expert/training.log_every = 100", "--bind", "expert/training.ema_decay = 0.99",
           "--run-dir", str(run_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # tiny ops: one thread, immune to a busy machine
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    state = run_dir / "checkpoints" / "segment_0"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith("step_") and not p.name.endswith(".tmp")
                                             for p in (state.iterdir() if state.exists() else [])):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "checkpoints" / "segment_0.pt").exists(), "the run finished before it could be killed"
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stdout
    resumed_at = int(out.stdout.split("at step ")[1].split()[0])
    assert 100 <= resumed_at < 3000
    final = torch.load(run_dir / "checkpoints" / "segment_0.pt", weights_only=True)
    assert final["steps"] == 3000
    steps = [json.loads(line)["step"] for line in open(state / "log.jsonl")]
    assert steps[-1] == 3000 and resumed_at + 100 in steps  # the log continues after the resume point
    assert (run_dir / "checkpoints" / "train.json").exists()
    # Bit-identical to a run that was never interrupted: weights, EMA and the loss log.
    straight = tmp_path / "straight"
    out = subprocess.run(cmd[:-1] + [str(straight)], cwd=repo_root, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    other = torch.load(straight / "checkpoints" / "segment_0.pt", weights_only=True)
    for key in ("state_dict", "ema"):
        for name, value in final[key].items():
            assert torch.equal(value, other[key][name]), (key, name)
    logs = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(d / "log.jsonl")]
            for d in (state, straight / "checkpoints" / "segment_0")]
    assert logs[0] == logs[1]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from cbsflow.backbones.mlp import mlp

    calls, forward = [0], mlp.forward

    def diverging(self, x, t, y=None):  # the network's output turns NaN on its 26th call
        calls[0] += 1
        out = forward(self, x, t, y)
        return out * float("nan") if calls[0] > 25 else out

    monkeypatch.setattr(mlp, "forward", diverging)
    code = main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--bind", "expert/training.steps = 100",
                 "--bind", "expert/training.checkpoint_every = 10", "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "loss became nan at step 25" in err and "Traceback" not in err
    state = tmp_path / "checkpoints" / "segment_0"
    assert sorted(p.name for p in state.iterdir() if p.name.startswith("step_")) == ["step_00000010", "step_00000020"]
    assert "step_00000020" in err  # the message names the checkpoint it kept
    assert not (tmp_path / "checkpoints" / "segment_0.pt").exists()


def test_one_expert_per_job_then_train_json_when_all_are_done(tmp_path, capsys):
    base = ["--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "split.solver = @uniform()",
            "--bind", "uniform.n_segments = 2"]
    assert main(base + ["--stages", "split,train", "--segment", "1"]) == 0
    assert (tmp_path / "checkpoints" / "segment_1.pt").exists()
    assert not (tmp_path / "checkpoints" / "segment_0.pt").exists()
    assert not (tmp_path / "checkpoints" / "train.json").exists()
    assert main(base + ["--stages", "train", "--segment", "0"]) == 0
    assert (tmp_path / "checkpoints" / "train.json").exists()
    assert main(base + ["--stages", "train", "--segment", "5", "--force"]) == 2
    assert "outside 0..1" in capsys.readouterr().err


SCHEDULES = ["--bind", "expert/training.warmup_steps = 10", "--bind", "expert/training.ema_decay = 0.99",
             "--bind", "expert/training.log_every = 1", "--bind", "expert/training.lr = 1e-3"]


def test_same_command_runs_under_accelerate_launch_with_two_processes(tmp_path, repo_root):
    """Two gloo processes on a CPU: profile, train and sample run data-parallel, split on the main process; the
    samples are those of one process (seeded per batch), gathered into one samples.npz."""
    import numpy as np

    env = dict(os.environ, OMP_NUM_THREADS="1")
    # `python -m accelerate.commands.launch`: the launcher of this interpreter, found without an activated venv.
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "tools/run.py",
                          "--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "expert/training.checkpoint_every = 10",
                          "--bind", "sample.batch_size = 64", *SCHEDULES],
                         cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # The warm-up and the EMA decay count optimizer steps: two processes follow one process's sequences.
    assert main(["--gin", SMOKE, *ONE_EXPERT, "--run-dir", str(tmp_path / "one"), "--stages", "split,train", *SCHEDULES]) == 0
    two_log, one_log = ([json.loads(line) for line in open(d / "checkpoints" / "segment_0" / "log.jsonl")]
                        for d in (tmp_path, tmp_path / "one"))
    assert [(r["step"], r["lr"], r["ema_decay"]) for r in two_log] == [(r["step"], r["lr"], r["ema_decay"]) for r in one_log]
    assert two_log[9]["lr"] == pytest.approx(1e-3) and two_log[4]["lr"] == pytest.approx(0.5e-3)
    assert out.stdout.count("[train] done") == 1  # printed once, by the main process
    assert "warning: accelerate launch asked" not in out.stderr  # both processes ran
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "checkpoints" / "train.json").exists()
    assert (tmp_path / "checkpoints" / "segment_0" / "step_00000010").is_dir()
    assert json.loads((tmp_path / "sample.json").read_text())["processes"] == 2
    two = np.load(tmp_path / "samples.npz")["x"]
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "sample", "--force",
                 "--bind", "sample.batch_size = 64", *SCHEDULES]) == 0
    assert np.array_equal(two, np.load(tmp_path / "samples.npz")["x"])  # one process makes the same samples


def test_ema_warm_up_forgets_the_initial_weights():
    from cbsflow.training import ema_update

    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(ema.weight)
    for step in range(200):
        torch.nn.init.ones_(net.weight)
        ema_update(ema, net, decay=0.999, step=step)
    # Without warm-up 0.999^200 = 82 % of the zero init would remain; with it, almost none does.
    assert ema.weight.min() > 0.9


def test_logit_normal_times_have_the_configured_logit_moments():
    from cbsflow.timesampling import logit_normal

    t = logit_normal(mean=-0.8, std=0.8)(200_000, (0.0, 1.0), torch.Generator().manual_seed(0)).double()
    z = torch.logit(t)
    assert abs(z.mean() + 0.8) < 0.01 and abs(z.std() - 0.8) < 0.01


def test_margin_widens_the_training_interval_but_not_the_owned_one(tmp_path):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "split,train", "--bind", "split.solver = @manual()",
                 "--bind", "manual.boundaries = [0.0, 0.5, 1.0]", "--bind", "train.margin = 0.1"]) == 0
    first = torch.load(tmp_path / "checkpoints" / "segment_0.pt", weights_only=True)
    second = torch.load(tmp_path / "checkpoints" / "segment_1.pt", weights_only=True)
    assert first["interval"] == [0.0, 0.5] and first["train_interval"] == [0.0, 0.6]
    assert second["interval"] == [0.5, 1.0] and second["train_interval"] == [0.4, 1.0]
    log = json.loads(open(tmp_path / "checkpoints" / "train.json").read())
    assert log["config"]["train.margin"] == 0.1


def test_training_logs_to_accelerate_trackers_beside_the_json_lines(tmp_path):
    pytest.importorskip("tensorboard")
    assert main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--run-dir", str(tmp_path),
                 "--bind", "expert/training.log_with = 'tensorboard'", "--bind", "expert/training.log_every = 5"]) == 0
    tracking = tmp_path / "checkpoints" / "segment_0" / "tracking"
    events = list(tracking.rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "checkpoints" / "segment_0" / "log.jsonl").read_text().count("\n") == 4  # steps 5..20


def test_an_unknown_or_missing_tracker_is_a_configuration_error(tmp_path, capsys):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "expert/training.log_with = 'mlflowx'"]) == 2
    assert "training.log_with must be one of tensorboard, wandb" in capsys.readouterr().err
    assert not tmp_path.joinpath("profile.json").exists()


def test_image_features_are_extracted_data_parallel_under_accelerate_launch(tmp_path, repo_root):
    """gin/smoke/sit.gin with two processes: the samples, and the Fréchet distance from features extracted half by
    each process, equal what one process computes."""
    import numpy as np

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cache = ["--bind", f"fd_offline.cache_root = '{tmp_path / 'cache'}'"]
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "tools/run.py",
                          "--gin", "gin/smoke/sit.gin", "--run-dir", str(tmp_path / "run"), *cache],
                         cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["fd_randconv"]["value"]
    images = np.load(tmp_path / "run" / "samples.npz")["images"]
    assert main(["--gin", "gin/smoke/sit.gin", "--run-dir", str(tmp_path / "run"), "--stages", "sample,evaluate",
                 "--force", *cache]) == 0
    assert np.array_equal(images, np.load(tmp_path / "run" / "samples.npz")["images"])
    one = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["fd_randconv"]["value"]
    assert one == pytest.approx(two, rel=1e-5)


def test_min_snr_weights_the_velocity_loss_by_min_t2_gamma_1mt2_on_the_linear_path(tmp_path):
    """Min-SNR-γ carried to the velocity loss: w(t) ∝ min(t², γ (1 − t)²) on the linear path, averaging 1; a weighted
    run trains through the stages."""
    from cbsflow.cli import main
    from cbsflow.weighting import min_snr

    t = torch.tensor([0.1, 0.5, 0.8, 0.95], dtype=torch.float64)
    w = min_snr(gamma=5.0)(t, linear()).double()
    expected = torch.minimum(t**2, 5.0 * (1 - t) ** 2)
    grid = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
    torch.testing.assert_close(w, expected / torch.minimum(grid**2, 5.0 * (1 - grid) ** 2).mean(), rtol=1e-5, atol=0)
    assert main(["--gin", SMOKE, *ONE_EXPERT, "--stages", "split,train", "--run-dir", str(tmp_path),
                 "--bind", "expert/training.loss_weight = @min_snr()"]) == 0
