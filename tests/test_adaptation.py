"""Adaptive splits: the moving-mesh indicator and moves, successive halving, and both through tools/run.py."""

import json

import numpy as np
import pytest
import torch

from cbsflow.adaptation import moving_mesh, paired_losses, successive_halving
from cbsflow.cli import main
from cbsflow.data.toy import gaussian
from cbsflow.errors import UserError
from cbsflow.estimators import closed_form
from cbsflow.paths import linear

SMOKE = "gin/smoke/toy.gin"
UNIFORM2 = ["--bind", "split.solver = @uniform()", "--bind", "uniform.n_segments = 2"]


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def test_a_resolved_difference_moves_the_boundary_towards_the_worse_expert():
    mm = moving_mesh()
    b = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(mm.move(b, [{"mean": 0.3, "se": 0.01}], 0.1), [0, 0.4, 1])  # left worse: shrink it
    np.testing.assert_allclose(mm.move(b, [{"mean": -0.3, "se": 0.01}], 0.1), [0, 0.6, 1])
    np.testing.assert_allclose(mm.move(b, [{"mean": 0.01, "se": 0.01}], 0.1), b)  # not resolved: stays
    three = mm.move(np.array([0.0, 0.1, 0.15, 1.0]), [{"mean": 1, "se": 0.1}, {"mean": 1, "se": 0.1}], 0.15)
    assert np.all(np.diff(three) >= mm.min_width - 1e-12)  # order and the narrowest width are kept


class Job:
    """What the indicator reads of a TrainingRun."""

    def __init__(self, dataset, path):
        self.dataset, self.path, self.seed = dataset, path, 0


def test_the_indicator_compares_the_two_experts_on_shared_draws():
    data, path = gaussian(mean=[1.0, -1.0], std=[0.5, 0.5]), linear()
    exact = closed_form()(data, path)
    bad = lambda x, t, y=None: torch.zeros_like(x)  # noqa: E731  (an expert that learned nothing)
    mm = moving_mesh(n_eval=2048)
    (d,) = mm.indicator([bad, exact], np.array([0.0, 0.5, 1.0]), Job(data, path), 0)
    assert d["mean"] > 10 * d["se"] > 0  # the left expert is the worse one
    (same,) = mm.indicator([exact, exact], np.array([0.0, 0.5, 1.0]), Job(data, path), 0)
    assert same["mean"] == 0 and same["se"] == 0  # the same draws for both: identical experts differ by nothing


def test_paired_losses_are_per_sample_flow_matching_losses():
    data, path = gaussian(mean=[0.0, 0.0], std=[1.0, 1.0]), linear()
    exact = closed_form()(data, path)
    x1, _ = data.sample(4096, seed=1)
    eps, t = torch.randn(4096, 2), torch.rand(4096)
    loss = paired_losses([exact], path, x1, None, eps, t)
    # For N(0, I) data the exact field leaves the conditional variance of x1 - eps: E over t of 2 ... bounded by 2.
    assert loss.shape == (1, 4096) and 0 < loss.mean() < 2


def test_moving_mesh_runs_through_the_stages_and_publishes_the_final_split(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--gin", SMOKE, *UNIFORM2, "--bind", "train.adaptation = @moving_mesh()",
            "--bind", "expert/training.steps = 120", "--run-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[profile] skipped" in out and out.count("[train] moving_mesh after") == 3
    split = json.loads((run / "split.json").read_text())
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    train = json.loads((run / "checkpoints" / "train.json").read_text())
    assert split["initial_boundaries"] == [0.0, 0.5, 1.0] and split["adapted_by"] == "moving_mesh"
    assert split["boundaries"] == record["final_boundaries"] == train["boundaries"]
    assert [h["step"] for h in record["history"]] == [30, 54, 78]
    # The indicator's forward passes against forward + backward of 2 experts x 120 steps x 128 samples.
    assert train["extra_compute"] == pytest.approx(3 * 2 * 32768 / (3 * 2 * 120 * 128)) and (run / "adaptation.png").exists()
    for k in range(2):  # every expert was trained for the interval it owns in the final split
        ckpt = torch.load(run / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert ckpt["interval"] == split["boundaries"][k:k + 2] and ckpt["steps"] == 120
    assert main(args) == 0  # the rewritten split.json leaves every stage up to date
    assert capsys.readouterr().out.count("up to date") == 4


def test_adaptation_cannot_train_one_expert_per_job(tmp_path, capsys):
    assert main(["--gin", SMOKE, *UNIFORM2, "--bind", "train.adaptation = @moving_mesh()", "--stages", "split,train",
                 "--segment", "0", "--run-dir", str(tmp_path)]) == 2
    assert "cannot train one expert per job (--segment)" in capsys.readouterr().err


def test_successive_halving_keeps_the_best_candidate_and_counts_its_cost(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--gin", SMOKE, *UNIFORM2, "--bind", "train.adaptation = @successive_halving()",
                 "--bind", "successive_halving.candidates = [[0.3], [0.5], [0.7]]",
                 "--bind", "successive_halving.rungs = [0.1, 0.2]", "--bind", "expert/training.steps = 100",
                 "--stages", "split,train", "--run-dir", str(run)]) == 0
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    first, second = record["history"]
    assert len(first["kept"]) == 2 and len(second["kept"]) == 1
    winner = record["candidates"][second["kept"][0]]
    assert record["final_boundaries"] == winner == json.loads((run / "split.json").read_text())["boundaries"]
    # 3 candidates to 10 steps, 2 on to 20, the winner on to 100: (30 + 20 + 80) / 100 - 1 of one training; and the
    # ranking's forward passes, 5 candidate scores x 16,384 draws, against 3 passes x 2 experts x 100 steps x 128.
    assert record["extra_compute"] == pytest.approx(0.3 + 5 * 16384 / (3 * 2 * 100 * 128))


def test_successive_halving_deletes_the_losers_states_and_resumes_from_its_record(tmp_path, capsys):
    """A ranked loser's training states are deleted (at image scale they fill the disk); a train stage stopped after
    the ranking resumes from checkpoints/adaptation.json without training the losers again."""
    run = tmp_path / "run"
    args = ["--gin", SMOKE, *UNIFORM2, "--bind", "train.adaptation = @successive_halving()",
            "--bind", "successive_halving.candidates = [[0.3], [0.5], [0.7]]",
            "--bind", "successive_halving.rungs = [0.1, 0.2]", "--bind", "expert/training.steps = 100",
            "--stages", "split,train", "--run-dir", str(run)]
    assert main(args) == 0
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    winner = record["history"][-1]["kept"][0]
    halving = run / "checkpoints" / "halving"
    assert sorted(p.name for p in halving.iterdir()) == [f"c{winner}"]
    # Stopped after the ranking, before the winner finished: its final weights and the stage's record are gone.
    for path in [run / "checkpoints" / "train.json", *(run / "checkpoints").glob("segment_*.pt")]:
        path.unlink()
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in halving.iterdir()) == [f"c{winner}"]  # no loser trained again
    assert "successive_halving after 20 steps" in out and "resuming from" in out
    again = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    assert again["history"] == record["history"] and again["extra_compute"] == pytest.approx(record["extra_compute"])
    assert again["final_boundaries"] == record["final_boundaries"]


def test_successive_halving_by_a_sample_metric_prefers_the_candidate_whose_samples_are_right():
    """metric bound: candidates are ranked by that metric of their samples (lower is better, signs flipped for a
    metric where higher is better). Exact experts on one candidate, a zero field on the other."""
    from types import SimpleNamespace

    from cbsflow.estimators import MixtureVelocity
    from cbsflow.metrics.sample_distances import sliced_wasserstein
    from cbsflow.segmented import Expert

    data, path = gaussian(), linear()
    exact = Expert(MixtureVelocity(*data.mixture(), path), path)

    class Zero(torch.nn.Module):
        def forward(self, x, t, y=None):
            return torch.zeros_like(x)

    wrong = Expert(Zero(), path)
    job = SimpleNamespace(dataset=data, path=path, seed=0)
    b = np.array([0.0, 0.5, 1.0])
    sh = successive_halving(metric=sliced_wasserstein(), n_eval=2000, sample_steps=8)
    good, bad = sh.score([exact, exact], b, job), sh.score([wrong, exact], b, job)
    assert 0 < good < 0.15 and bad > 0.3  # the floor of SW at 2,000 samples is about 0.09 here
    assert sh.score([exact, exact], b, job) == good  # shared seeds: the same candidate scores the same

    class Agreement:  # a metric where higher is better (its name says so to cbsflow.landscape.higher_is_better)
        def __call__(self, *, samples, dataset, velocity=None, seed=0):
            return {"precision": {"value": -float(sliced_wasserstein()(samples=samples, dataset=dataset, seed=seed)
                                                  ["sliced_wasserstein"]["value"]), "settings": {}}}

    flipped = successive_halving(metric=Agreement(), n_eval=2000, sample_steps=8)
    assert flipped.score([exact, exact], b, job) < flipped.score([wrong, exact], b, job)


def test_bad_adaptation_settings_are_one_clear_error():
    with pytest.raises(UserError, match="'at' must be increasing shares"):
        moving_mesh(at=(0.5, 0.2), steps=(0.1, 0.1))
    with pytest.raises(UserError, match="rungs must be increasing shares"):
        successive_halving(rungs=(0.2, 0.1))
    with pytest.raises(UserError, match="bind a metric component"):
        successive_halving(metric="sliced_wasserstein")


@pytest.mark.parametrize("backbone,method", [("jit", "moving_mesh"), ("sit", "moving_mesh"), ("unet", "moving_mesh"),
                                             ("sit", "successive_halving"), ("jit", "warm_split"),
                                             ("sit", "warm_split"), ("unet", "warm_split"), ("unet", "warm_race")])
def test_adaptive_splits_run_end_to_end_on_the_image_smoke_configurations(tmp_path, backbone, method):
    """gin/smoke/<backbone>.gin with gin/splits/<method>.gin: the adaptive split through every stage on images."""
    budget = ["--bind", "warm_split.n_samples = 16"] if method == "warm_split" else [
        "--bind", f"{method}.n_eval = 256"]
    if method == "warm_race":
        budget += ["--bind", "warm_race.n_samples = 16"]
    assert main(["--gin", f"gin/smoke/{backbone}.gin", "--gin", f"gin/splits/{method}.gin", *budget,
                 "--run-dir", str(tmp_path)]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["adapted_by"] == method and (tmp_path / "metrics.json").exists()
    assert len(split["boundaries"]) == 3 and (tmp_path / "adaptation.png").exists()


def test_warm_split_trains_a_shared_start_splits_by_its_field_and_keeps_the_total_steps(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--gin", SMOKE, "--gin", "gin/splits/warm_split.gin", "--bind", "N_SEGMENTS = 2",
            "--bind", "expert/training.steps = 80", "--run-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[profile] skipped" in out and out.count("[train] warm_split after 40 steps of the shared network") == 1
    split = json.loads((run / "split.json").read_text())
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    assert split["initial_boundaries"] == [0.0, 0.5, 1.0] and split["adapted_by"] == "warm_split"
    assert split["boundaries"] == record["final_boundaries"] == record["history"][0]["boundaries"]
    profile = record["history"][0]["profile"]
    assert len(profile["t"]) == 32 and min(profile["value"]) > 0 and record["history"][0]["step"] == 20
    # The shared network's 2 x 20 steps and each expert's 60 make 2 x 80, the budget of a fixed split.
    base = torch.load(run / "checkpoints" / "warm_base.pt", weights_only=True)
    assert base["steps"] == 40
    for k in range(2):
        log = [json.loads(line) for line in (run / "checkpoints" / f"segment_{k}" / "log.jsonl").open()]
        ckpt = torch.load(run / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert log[-1]["step"] == ckpt["steps"] == 60 and ckpt["inherited_steps"] == 40 and ckpt["interval"] == split["boundaries"][k:k + 2]
    # Extra compute: the monitor's 32 times x 512 samples x 4 probes (~3 passes each) against 3 x 2 x 80 x 128.
    assert record["extra_compute"] == pytest.approx(3 * 32 * 512 * 4 / (3 * 2 * 80 * 128))
    assert (run / "adaptation.png").exists()
    # profile.png is drawn again after training, from the shared network's profile and its density's settings.
    assert profile["monitor"] == "dirichlet" and profile["centred"] and profile["exponent"] == 0.5
    record_time = (run / "checkpoints" / "adaptation.json").stat().st_mtime_ns
    assert (run / "profile.png").stat().st_mtime_ns >= record_time
    assert main(args) == 0  # the rewritten split.json leaves every stage up to date
    assert capsys.readouterr().out.count("up to date") == 4


def test_warm_split_experts_start_from_the_shared_network(tmp_path):
    """Every expert's network starts from the shared network's (EMA) weights, which are read back on a rerun."""
    from cbsflow.adaptation import warm_split
    from cbsflow.backbones.mlp import mlp
    from cbsflow.data.toy import checkerboard
    from cbsflow.training import TrainingRun, TrainSettings

    job = TrainingRun(str(tmp_path), mlp, checkerboard(), linear(), TrainSettings(steps=20, batch_size=64), False, 0,
                      None)
    ws = warm_split(share=0.5, n_points=4, n_samples=32)
    state, field = ws.base(job, 10, None)
    expert = job.new_expert(1, (0.5, 1.0), state)
    for name, value in expert.net.state_dict().items():
        torch.testing.assert_close(value, state[name])
    t, value, se = ws.profile(field, job)
    assert t.shape == value.shape == se.shape == (4,) and np.all(value > 0)
    assert ws.base(job, 10, None)[0].keys() == state.keys()  # read back from checkpoints/warm_base.pt


def test_bad_warm_split_settings_are_one_clear_error(tmp_path, capsys):
    from cbsflow.adaptation import warm_split

    with pytest.raises(UserError, match="must be in \\(0, 1\\)"):
        warm_split(share=1.0)
    assert main(["--gin", SMOKE, "--gin", "gin/splits/warm_split.gin", "--bind", "N_SEGMENTS = 2",
                 "--bind", "deboor.n_segments = 3", "--stages", "split,train", "--run-dir", str(tmp_path)]) == 2
    assert "warm_split.solver makes 3 segments but the split has 2" in capsys.readouterr().err


def test_cross_affinity_averages_the_pairs_across_intervals():
    from cbsflow.adaptation import cross_affinity

    t = np.array([0.1, 0.3, 0.6, 0.9])
    s = np.arange(16, dtype=float).reshape(4, 4)
    across = [s[i, j] for i in range(4) for j in range(4) if (t[i] < 0.5) != (t[j] < 0.5)]
    assert cross_affinity(s, t, np.array([0.0, 0.5, 1.0])) == pytest.approx(np.mean(across))


@pytest.mark.parametrize("min_affinity,warm", [(-1.0, True), (0.999, False)])
def test_the_pilot_decides_the_warm_start(tmp_path, min_affinity, warm):
    """warm_split.pilot: the decision is recorded; a warm start equals the warm split without a pilot bit for bit
    (the pilot's run goes on unchanged); no warm start trains every expert all its steps from scratch on the
    initial split."""
    args = ["--gin", SMOKE, "--gin", "gin/splits/warm_split.gin", "--bind", "N_SEGMENTS = 2",
            "--bind", "expert/training.steps = 12", "--bind", "warm_split.n_points = 8"]
    assert main([*args, "--bind", "warm_split.pilot = 0.5", "--bind", f"warm_split.min_affinity = {min_affinity}",
                 "--run-dir", str(tmp_path / "pilot")]) == 0
    record = json.loads((tmp_path / "pilot" / "checkpoints" / "adaptation.json").read_text())
    assert record["decision"]["warm"] is warm and record["decision"]["pilot_steps"] == 3  # half of 2 x 3 shared
    ckpt = torch.load(tmp_path / "pilot" / "checkpoints" / "segment_1.pt", weights_only=True)
    if warm:
        assert main([*args, "--run-dir", str(tmp_path / "plain")]) == 0
        plain = torch.load(tmp_path / "plain" / "checkpoints" / "segment_1.pt", weights_only=True)
        for key, value in plain["state_dict"].items():
            torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)
    else:
        assert ckpt["steps"] == 12 and ckpt["inherited_steps"] == 0 and ckpt["interval"] == [0.5, 1.0]
        assert record["extra_compute"] > 0.1  # the pilot's 3 steps of 24


def test_rechecks_fall_on_whole_steps_per_expert_short_of_the_share():
    from cbsflow.adaptation import warm_adaptive, warm_split

    assert warm_adaptive(pilot=0.2).checks(20, 2) == [4, 8, 12, 16]
    assert warm_split(pilot=0.2).checks(20, 2) == [4]  # without rechecks: the pilot alone
    assert warm_adaptive(pilot=0.5).checks(6, 2) == [3]  # the next check would be the end
    with pytest.raises(UserError, match="warm_adaptive.pilot"):
        warm_adaptive(pilot=0.0)


@pytest.mark.parametrize("affinities, used", [([0.5, -0.5], 8), ([0.5] * 4, 20), ([-0.5], 0)])
def test_rechecks_end_the_sharing_at_the_first_conflict_within_the_budget(tmp_path, monkeypatch, affinities, used):
    """warm_adaptive: the affinity after every further pilot of the shared steps decides how many the experts
    start from (checks at 4, 8, 12, 16 of 20 here); the experts train the rest, so the total stays N x steps, and
    the record keeps every check. Affinities are fixed here (the measurement is tested above)."""
    from cbsflow.adaptation import warm_adaptive

    values = iter(affinities)
    monkeypatch.setattr(warm_adaptive, "_affinity", lambda self, job, initial, shared, init, steps: (
        next(values), torch.zeros(8, 8), torch.linspace(0, 0.995, 8)))
    steps, n = 40, 2
    args = ["--gin", SMOKE, "--gin", "gin/splits/warm_adaptive.gin", "--bind", "N_SEGMENTS = 2",
            "--bind", f"expert/training.steps = {steps}", "--bind", "warm_adaptive.n_points = 8",
            "--bind", "warm_adaptive.solver = @uniform()", "--stages", "split,train", "--run-dir", str(tmp_path)]
    assert main(args) == 0
    record = json.loads((tmp_path / "checkpoints" / "adaptation.json").read_text())
    decision = record["decision"]
    assert [c["affinity"] for c in decision["checks"]] == affinities
    assert [c["steps"] for c in decision["checks"]] == [4, 8, 12, 16][:len(affinities)]
    assert decision["shared_steps"] == used and decision["warm"] is (used > 0)
    for k in range(n):
        ckpt = torch.load(tmp_path / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert ckpt["inherited_steps"] == used
        assert used + n * ckpt["steps"] == n * steps if used else ckpt["steps"] == steps
    if 0 < used < 20:
        base = torch.load(tmp_path / "checkpoints" / "warm_base.pt", weights_only=True)
        assert base["steps"] == used and record["described"]["share"] == pytest.approx(0.25 * used / 20)


@pytest.mark.parametrize("warm", [True, False])
def test_the_race_decides_the_warm_start_and_the_loser_costs_only_its_pilot(tmp_path, monkeypatch, warm):
    """warm_transfer: the shared network's pilot (s steps) races experts trained from scratch for s / N steps each on
    paired draws. The loss differences are fixed here (paired_losses is tested above). A warm start then trains as the
    warm split does; experts from scratch go on from their race to all their steps, bit for bit the fixed uniform
    split's experts; either way the loser's steps are the extra compute."""
    import cbsflow.adaptation as adaptation

    def fixed(nets, path, x1, y, eps, t, batch_size=4096):
        sign = -1.0 if warm else 1.0
        return torch.stack([torch.full((len(t),), 1.0 + sign), torch.ones(len(t))])

    monkeypatch.setattr(adaptation, "paired_losses", fixed)
    steps, n = 40, 2
    common = ["--gin", SMOKE, "--bind", "N_SEGMENTS = 2", "--bind", f"expert/training.steps = {steps}",
              "--stages", "split,train"]
    assert main([*common, "--gin", "gin/splits/warm_transfer.gin", "--bind", "warm_transfer.n_points = 8",
                 "--bind", "warm_transfer.n_eval = 16", "--run-dir", str(tmp_path / "race")]) == 0
    record = json.loads((tmp_path / "race" / "checkpoints" / "adaptation.json").read_text())
    decision = record["decision"]
    assert decision["warm"] is warm and decision["pilot_steps"] == 4 and decision["scratch_steps"] == 2
    assert decision["difference"] == pytest.approx(-1.0 if warm else 1.0)
    passes = 3.0 * n * steps * 128  # one fixed split's training: batch 128, ~3 passes per sample
    race = 2 * n * 16 / passes  # two networks on 16 draws per interval
    monitor = 3.0 * 8 * 512 * 4 / passes if warm else 0.0  # the warm split's profile: 8 times, 512 samples, 4 probes
    assert record["extra_compute"] == pytest.approx(4 / (n * steps) + race + monitor)  # the loser's 4 steps of 80
    ckpts = [torch.load(tmp_path / "race" / "checkpoints" / f"segment_{k}.pt", weights_only=True) for k in range(n)]
    if warm:
        assert all(c["inherited_steps"] == 20 and c["steps"] == 30 for c in ckpts)
        assert not list((tmp_path / "race" / "checkpoints").glob("*stale*"))  # the race's experts are cleared
        return
    assert main([*common, *UNIFORM2, "--bind", "train.adaptation = None", "--run-dir", str(tmp_path / "plain")]) == 0
    for k, ckpt in enumerate(ckpts):
        plain = torch.load(tmp_path / "plain" / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert ckpt["steps"] == steps and ckpt["inherited_steps"] == 0
        for key, value in plain["state_dict"].items():
            torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)


@pytest.mark.parametrize("warm, race_at", [(True, 0.5), (False, 0.5), (True, 1.0), (False, 1.0)])
def test_the_late_race_keeps_one_candidate_bit_for_bit_and_the_other_costs_its_steps(tmp_path, monkeypatch, warm,
                                                                                      race_at):
    """warm_race: the warm split's experts (from the shared network, on its own split) and the uniform split's from
    scratch train side by side at equal cost to race_at of the warm experts' steps; the loss difference is fixed here.
    The winner goes on to all its steps, bit for bit the run it would have been alone (warm_split, or the fixed
    uniform split), and the loser's steps are the extra compute."""
    import cbsflow.adaptation as adaptation

    def fixed(nets, path, x1, y, eps, t, batch_size=4096):
        return torch.stack([torch.full((len(t),), 0.0 if warm else 2.0), torch.ones(len(t))])

    monkeypatch.setattr(adaptation, "paired_losses", fixed)
    steps, n = 40, 2
    common = ["--gin", SMOKE, "--bind", "N_SEGMENTS = 2", "--bind", f"expert/training.steps = {steps}",
              "--stages", "split,train"]
    assert main([*common, "--gin", "gin/splits/warm_race.gin", "--bind", f"warm_race.race_at = {race_at}",
                 "--bind", "warm_race.n_points = 8", "--bind", "warm_race.n_eval = 16",
                 "--run-dir", str(tmp_path / "race")]) == 0
    record = json.loads((tmp_path / "race" / "checkpoints" / "adaptation.json").read_text())
    decision = record["decision"]
    own = round(race_at * 30)  # share 1/4: 10 shared steps per expert, 30 of its own
    assert decision["warm"] is warm and decision["warm_steps"] == own and decision["scratch_steps"] == 10 + own
    passes = 3.0 * n * steps * 128  # one fixed split's training: batch 128, ~3 passes per sample
    race, monitor = 2 * 2 * 16 / passes, 3.0 * 8 * 512 * 4 / passes  # the profile is measured either way
    lost = n * (10 + own) if warm else 20 + n * own  # equal: the same cost on either side of the race
    assert record["extra_compute"] == pytest.approx(lost / (n * steps) + race + monitor)
    if warm:
        alone = [*common, "--gin", "gin/splits/warm_split.gin", "--bind", "warm_split.n_points = 8"]
    else:
        alone = [*common, *UNIFORM2, "--bind", "train.adaptation = None"]
    assert main([*alone, "--run-dir", str(tmp_path / "alone")]) == 0
    for k in range(n):
        ckpt, ref = (torch.load(tmp_path / d / "checkpoints" / f"segment_{k}.pt", weights_only=True)
                     for d in ("race", "alone"))
        assert ckpt["interval"] == ref["interval"] and ckpt["steps"] == ref["steps"]
        assert ckpt["inherited_steps"] == ref["inherited_steps"] == (20 if warm else 0)
        for key, value in ref["state_dict"].items():
            torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)
    loser = "segment_0" if warm else "warm_segment_0"
    assert not (tmp_path / "race" / "checkpoints" / loser).exists()  # the loser's training states are cleared


@pytest.mark.parametrize("warm", [True, False])
def test_a_late_race_stopped_after_its_decision_goes_on_to_the_same_experts(tmp_path, monkeypatch, warm):
    """warm_race stopped after the race (the decision saved, the winner not yet trained on) and run again: the
    decision is read back, not raced again, and the winner goes on from its state at the race to the same weights
    as a run that was never stopped."""
    import cbsflow.adaptation as adaptation

    def fixed(nets, path, x1, y, eps, t, batch_size=4096):
        return torch.stack([torch.full((len(t),), 0.0 if warm else 2.0), torch.ones(len(t))])

    monkeypatch.setattr(adaptation, "paired_losses", fixed)
    args = ["--gin", SMOKE, "--bind", "N_SEGMENTS = 2", "--bind", "expert/training.steps = 40", "--stages",
            "split,train", "--gin", "gin/splits/warm_race.gin", "--bind", "warm_race.n_points = 8",
            "--bind", "warm_race.n_eval = 16"]
    assert main([*args, "--run-dir", str(tmp_path / "once")]) == 0

    class Stopped(Exception):
        pass

    def stopped(*a, **k):
        raise Stopped

    from cbsflow import training

    # Where the winner goes on after the race: the warm split's own expert path, or the fixed split's.
    monkeypatch.setattr(*((adaptation.warm_race, "_expert") if warm else (training.TrainingRun, "expert")), stopped)
    with pytest.raises(Stopped):
        main([*args, "--run-dir", str(tmp_path / "twice")])
    monkeypatch.undo()
    monkeypatch.setattr(adaptation, "paired_losses", lambda *a, **k: pytest.fail("raced again"))
    assert main([*args, "--run-dir", str(tmp_path / "twice")]) == 0
    for k in range(2):
        once, twice = (torch.load(tmp_path / d / "checkpoints" / f"segment_{k}.pt", weights_only=True)
                       for d in ("once", "twice"))
        for key, value in once["state_dict"].items():
            torch.testing.assert_close(twice["state_dict"][key], value, rtol=0, atol=0)


@pytest.mark.parametrize("shift, warm", [(-0.6, True), (-0.05, False), (0.05, False)])
def test_the_margin_race_warm_starts_only_where_the_race_resolves_it(tmp_path, monkeypatch, shift, warm):
    """warm_race_margin: the race's per-draw differences are ±1 around ``shift`` (s.e. 1/sqrt(15) ≈ 0.26 on 16
    draws), so -0.6 is below two standard errors and the warm split goes on, while -0.05 (lower, but unresolved,
    which plain warm_race would take) and +0.05 keep the experts from scratch: bit for bit the uniform split's."""
    import cbsflow.adaptation as adaptation

    def fixed(nets, path, x1, y, eps, t, batch_size=4096):
        sign = torch.tensor([1.0, -1.0]).repeat(len(t) // 2)
        return torch.stack([1.0 + shift + sign, torch.ones(len(t))])

    monkeypatch.setattr(adaptation, "paired_losses", fixed)
    common = ["--gin", SMOKE, "--bind", "N_SEGMENTS = 2", "--bind", "expert/training.steps = 40",
              "--stages", "split,train"]
    assert main([*common, "--gin", "gin/splits/warm_race_margin.gin", "--bind", "warm_race_margin.n_points = 8",
                 "--bind", "warm_race_margin.n_eval = 16", "--run-dir", str(tmp_path / "race")]) == 0
    decision = json.loads((tmp_path / "race" / "checkpoints" / "adaptation.json").read_text())["decision"]
    assert decision["difference"] == pytest.approx(shift) and decision["se"] == pytest.approx(15 ** -0.5)
    assert decision["warm"] is warm
    assert adaptation.warm_race().chooses_warm(shift, decision["se"]) is (shift < 0)  # the plain race: the lower
    if warm:
        alone = [*common, "--gin", "gin/splits/warm_split.gin", "--bind", "warm_split.n_points = 8"]
    else:
        alone = [*common, *UNIFORM2, "--bind", "train.adaptation = None"]
    assert main([*alone, "--run-dir", str(tmp_path / "alone")]) == 0
    for k in range(2):
        ckpt, ref = (torch.load(tmp_path / d / "checkpoints" / f"segment_{k}.pt", weights_only=True)
                     for d in ("race", "alone"))
        assert ckpt["interval"] == ref["interval"]
        for key, value in ref["state_dict"].items():
            torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)


def test_the_margin_must_be_a_number_of_standard_errors_at_least_zero():
    from cbsflow.adaptation import warm_race_margin
    from cbsflow.errors import UserError

    with pytest.raises(UserError, match="warm_race_margin.margin must be >= 0"):
        warm_race_margin(margin=-1.0)
