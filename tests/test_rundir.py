"""The run directory: atomic writers, readers that raise user errors, provenance and staleness."""

import os
import stat

import numpy as np
import pytest
import torch

from cbsflow import rundir
from cbsflow.errors import UserError


def test_stage_table_is_the_pipeline_in_order():
    assert rundir.STAGE_ORDER == ("profile", "split", "train", "sample", "evaluate")
    assert [rundir.input_stage(s) for s in rundir.STAGE_ORDER] == [None, "profile", "split", "train", "sample"]


def test_writers_leave_no_temporary_files(tmp_path):
    rundir.write_json(str(tmp_path / "a" / "x.json"), {"k": 1})
    rundir.save_checkpoint(str(tmp_path / "c.pt"), {"state_dict": {"w": torch.ones(2)}})
    rundir.save_npz(str(tmp_path / "s.npz"), x=np.zeros(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["c.pt", "s.npz", "x.json"]
    assert rundir.read_json(str(tmp_path / "a" / "x.json"), "test") == {"k": 1}


@pytest.mark.parametrize("content,fragment", [(None, "not found"), ("{oops", "not valid JSON"), ("[1]", "JSON object")])
def test_readers_raise_one_line_user_errors(tmp_path, content, fragment):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=fragment):
        rundir.read_json(str(path), "test")


def test_checkpoints_that_are_not_ours_are_user_errors(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        rundir.load_checkpoint(str(tmp_path / "bad.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="no 'state_dict'"):
        rundir.load_checkpoint(str(tmp_path / "other.pt"))


@pytest.mark.parametrize("bad", [[0, 0.6, 0.4, 1], [0.1, 1], [0, 1.5], [0], "x"])
def test_boundaries_must_increase_from_zero_to_one(bad):
    with pytest.raises(UserError, match="increase strictly from 0 to 1"):
        rundir.check_boundaries(bad, "test")


def test_staleness_follows_settings_and_inputs(tmp_path):
    run = str(tmp_path)
    config = {"split.solver": "@deboor()", "deboor.exponent": 0.5}
    assert "does not exist" in rundir.why_stale(run, "split", config)
    rundir.write_json(rundir.artifact(run, "profile"), {"t": [0, 1], "value": [1, 1]})
    prov = rundir.provenance(run, "split", config)
    rundir.write_json(rundir.artifact(run, "split"), {"boundaries": [0, 1], **prov.record()})
    assert rundir.why_stale(run, "split", config) is None
    assert rundir.why_stale(run, "split", {**config, "deboor.exponent": 1.0}) == \
        "its settings changed: deboor.exponent 0.5 -> 1.0"
    rundir.write_json(rundir.artifact(run, "profile"), {"t": [0, 1], "value": [1, 2]})
    assert rundir.why_stale(run, "split", config) == "its input profile.json changed since it ran"
    # An artifact without recorded provenance (written by hand) is taken as given.
    rundir.write_json(rundir.artifact(run, "split"), {"boundaries": [0, 1]})
    assert rundir.why_stale(run, "split", config) is None


def test_int_and_float_settings_are_told_apart():
    assert rundir.describe_changes({"a": [0, 1]}, {"a": [0.0, 1.0]}) == "a [0, 1] -> [0.0, 1.0]"
    assert rundir.config_digest({"a": 1}) != rundir.config_digest({"a": 1.0})


def test_a_parameter_added_later_at_its_default_leaves_an_artifact_up_to_date(tmp_path):
    """Upgrading cbsflow (a new parameter such as train.init_from = None) must not make every trained run stale."""
    from cbsflow import rundir
    from cbsflow.config import StageConfig

    old = {"split.solver": "@uniform()", "uniform.n_segments": 2}
    rundir.write_json(rundir.artifact(str(tmp_path), "split"), {"boundaries": [0, 0.5, 1],
                                                                **rundir.Provenance(old, None).record()})
    new = StageConfig({**old, "split.figures_dpi": None})
    new.defaults = frozenset({"split.figures_dpi"})
    assert rundir.why_stale(str(tmp_path), "split", new) is None
    bound = StageConfig({**old, "split.figures_dpi": 300})  # the same new parameter, bound by the user: stale
    assert "split.figures_dpi unset -> 300" in rundir.why_stale(str(tmp_path), "split", bound)
    changed = StageConfig({**old, "uniform.n_segments": 3, "split.figures_dpi": None})
    changed.defaults = frozenset({"split.figures_dpi"})
    assert rundir.why_stale(str(tmp_path), "split", changed).startswith("its settings changed: uniform.n_segments 2 -> 3")


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_get_the_permissions_of_the_process_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        rundir.write_json(str(tmp_path / "a.json"), {"x": 1})
        rundir.write_text(str(tmp_path / "a.gin"), "x = 1\n")
        rundir.save_npz(str(tmp_path / "a.npz"), x=np.zeros(2))
        rundir.save_checkpoint(str(tmp_path / "a.pt"), {"x": torch.zeros(1)})
    finally:
        os.umask(old)
    for name in ("a.json", "a.gin", "a.npz", "a.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
