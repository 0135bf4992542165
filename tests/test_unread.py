"""A binding that nothing reads is reported (issue 33, point 3)."""

import pytest

from cbsflow.cli import main
from cbsflow.unread import bindings_of


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def test_bindings_of_gin_text_skips_includes_macros_and_comments():
    text = "include 'gin/base.gin'\nN_SEGMENTS = 4\n# mlp.width = 3\nexpert/training.steps = 5  # note\nmlp.width = 8\n"
    assert bindings_of(text) == ["expert/training.steps", "mlp.width"]


def test_a_binding_no_chosen_stage_reads_is_one_warning_naming_what_reads_it_instead(tmp_path, capsys):
    args = ["--gin", "gin/quickstart.gin", "--gin", "gin/splits/warm_split.gin", "--bind",
            "profile.monitor = @acceleration()", "--dry-run", "--run-dir", str(tmp_path)]
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: profile.monitor is bound but nothing in the chosen stages (split, train, sample, "
                        "evaluate) reads it; read instead: warm_split.monitor"]
    # The shipped quickstart's split (successive halving) reads no monitor at all: nothing to name instead.
    assert main(["--gin", "gin/quickstart.gin", *args[4:]]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: profile.monitor is bound but nothing in the chosen stages (split, train, sample, "
                        "evaluate) reads it"]
    assert main(args + ["--strict"]) == 2
    assert "drop --strict to run anyway" in capsys.readouterr().err


def test_bindings_the_stages_read_raise_no_warning(tmp_path, capsys):
    args = ["--gin", "gin/quickstart.gin", "--bind", "successive_halving.n_eval = 4096", "--bind",
            "expert/training.steps = 100", "--bind", "training.lr = 1e-3", "--dry-run", "--strict",
            "--run-dir", str(tmp_path)]
    assert main(args) == 0
    assert "warning:" not in capsys.readouterr().err
