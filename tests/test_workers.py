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


def test_a_run_started_while_stop_all_runs_is_stopped_too(monkeypatch, tmp_path):
    """Starting a process takes seconds under load: a run whose start straddles stop_all must not train on orphaned
    (it once left a landscape waiting on a 100,000-step run after Ctrl-C)."""
    import multiprocessing.process

    original = multiprocessing.process.BaseProcess.start

    def start_then_stop(self):
        original(self)
        workers.stop_all(grace=5)  # Ctrl-C arrives after the check, before the run is registered

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_then_stop)
    monkeypatch.setattr(workers, "_LIVE", set())
    monkeypatch.setattr(workers, "_STOPPING", workers.threading.Event())
    log = tmp_path / "run.log"
    # a run that would otherwise go on for minutes: the smoke toy trained for 10^6 steps
    code = workers.run(["--gin", "gin/smoke/toy.gin", "--run-dir", str(tmp_path / "r"), "--bind",
                        "expert/training.steps = 1000000"], str(log))
    assert code != 0 and not workers._LIVE
