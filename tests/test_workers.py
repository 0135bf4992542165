"""cbsflow/workers.py: runs forked from a warm server report the exit code the run itself returned."""

import multiprocessing.popen_forkserver as popen_forkserver

import pytest

from cbsflow import workers

pytestmark = pytest.mark.skipif(workers._context() is None, reason="no forkserver on this platform")


@pytest.fixture
def lost_status(monkeypatch):
    """What CPython gh-140867 does under load: the forkserver loses the child's status and poll() reports 255."""
    original = popen_forkserver.Popen.poll

    def poll(self, flag=0):
        code = original(self, flag)
        if code is not None:
            self.returncode = code = 255
        return code

    monkeypatch.setattr(popen_forkserver.Popen, "poll", poll)


@pytest.mark.parametrize("argv, expected", [(["--list", "dirichlet"], 0), (["--gin", "nonexistent.gin"], 2)])
def test_the_runs_own_exit_code_wins_over_a_lost_status(argv, expected, lost_status, tmp_path):
    log = tmp_path / "run.log"
    assert workers.run(argv, str(log)) == expected
    assert log.read_text()  # the run's output went to its log


def test_without_the_fault_the_code_is_the_same(tmp_path):
    assert workers.run(["--gin", "nonexistent.gin"], str(tmp_path / "run.log")) == 2
    assert "no such file" in (tmp_path / "run.log").read_text()
