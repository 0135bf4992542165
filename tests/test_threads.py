"""CPU threads: the free cores of the usable ones, never over what the user chose."""

import pytest
import torch

from cbsflow import threads


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 1.7, 1), (2, 4.0, 1), (64, 0.0, 8),
                                                   (64, 60.2, 4), (2.5, 0.0, 2), (1, 0.0, 1)])
def test_the_free_cores_of_the_usable_ones_at_least_one_at_most_the_cap(cores, busy, expected):
    assert threads.choose_threads(cores, busy) == expected


@pytest.mark.parametrize("files, quota", [({"cpu.max": "200000 100000\n"}, 2.0), ({"cpu.max": "max 100000\n"}, None),
                                          ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"},
                                           1.5),
                                          ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
                                          ({}, None)])
def test_a_cgroup_quota_is_read_in_cores(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_quota(str(tmp_path)) == quota


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_cpu_run_beside_other_work_takes_the_free_cores_only(monkeypatch, torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    torch.set_num_threads(6)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 16.0)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 13.0)
    note = threads.configure()
    assert torch.get_num_threads() == 3 and note.startswith("threads: 3 (") and "OMP_NUM_THREADS" in note
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 3)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 0.0)
    threads.configure()
    assert torch.get_num_threads() == 3  # never more threads than torch would take by itself


@pytest.mark.parametrize("chosen_by", ["OMP_NUM_THREADS", "torch.set_num_threads", "cuda"])
def test_what_the_user_chose_and_gpu_runs_are_left_alone(chosen_by, monkeypatch, torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 7)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: cores)
    torch.set_num_threads(7)
    if chosen_by == "OMP_NUM_THREADS":
        monkeypatch.setenv("OMP_NUM_THREADS", "7")
    elif chosen_by == "torch.set_num_threads":
        torch.set_num_threads(5)
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    expected = torch.get_num_threads()
    assert threads.configure() is None and torch.get_num_threads() == expected


def test_busy_cores_reads_this_machine():
    busy = threads.busy_cores(threads.usable_cores(), samples=2, interval=0.0)
    assert busy >= 0.0
