"""course.threads: the CPU quota, the affinity mask and the load decide torch's thread count."""

import pytest
import torch

from course import threads
from course.device import pick_device


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_in_a_container(tmp_path):
    _write(tmp_path / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, "0::/\n") == 1.5


def test_cgroup_v2_unlimited(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, "0::/\n") is None
    assert threads.cgroup_cpu_quota(tmp_path / "missing", "0::/\n") is None


def test_cgroup_v2_the_tightest_limit_on_the_path_binds(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000\n")
    _write(tmp_path / "user.slice" / "cpu.max", "100000 100000\n")  # the parent: 1 CPU
    _write(tmp_path / "user.slice" / "jupyter" / "cpu.max", "400000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, "0::/user.slice/jupyter\n") == 1.0


def test_cgroup_path_of_the_host_hierarchy_falls_back_to_the_mounted_root(tmp_path):
    # Without a cgroup namespace the container sees the host's path, but only its own group
    # is mounted at the root.
    _write(tmp_path / "cpu.max", "200000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, "0::/kubepods/pod1/abc\n") == 2.0


def test_cgroup_v1_quota(tmp_path):
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, "3:cpu,cpuacct:/\n2:memory:/x\n") == 0.5
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpu_quota(tmp_path, "3:cpu,cpuacct:/\n") is None


@pytest.mark.parametrize("quota, affinity, busy, expected", [
    (None, 2, 0.0, 2),    # an idle laptop: every core
    (None, 2, 1.0, 1),    # a browser keeps one core busy
    (None, 2, 0.4, 2),    # light load: a core counts as taken when it is busy over half the time
    (None, 2, 2.0, 1),    # never fewer than one
    (1.0, 64, 0.0, 1),    # Binder/Colab: a 1-CPU share of a 64-core host
    (2.5, 64, 30.0, 2),   # a share of a host with idle cores left: the quota decides
    (2.5, 64, 63.4, 1),   # a host with one idle core left
    (2.5, 64, 0.0, 2),    # a fractional quota rounds down
    (0.5, 8, 0.0, 1),
])
def test_choose_threads(quota, affinity, busy, expected):
    assert threads.choose_threads(quota, affinity, busy) == expected


def test_busy_cpus_reads_the_load_of_our_cpus_only(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal, per CPU
    _write(stat, "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\n"
                 "cpu2 0 0 0 200 0 0 0 0\n")

    def one_window_later(seconds):  # cpu0 busy all the time, cpu1 idle, cpu2 (not ours) busy
        _write(stat, "cpu  0 0 0 0 0 0 0 0\ncpu0 200 0 0 100 0 0 0 0\ncpu1 0 0 0 300 0 0 0 0\n"
                     "cpu2 100 0 0 200 0 0 0 0\n")

    monkeypatch.setattr(threads.time, "sleep", one_window_later)
    assert threads.busy_cpus({0, 1}, stat=stat) == pytest.approx(1.0)
    assert threads.busy_cpus({0}, stat=tmp_path / "missing") == 0.0


def test_the_environment_overrides_the_choice(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV_VAR, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the grader starts its kernels
    choice = threads.thread_choice()
    assert choice.threads == torch.get_num_threads() and "OMP_NUM_THREADS=1" in choice.reason
    monkeypatch.setenv(threads.THREADS_ENV_VAR, "3")
    assert threads.thread_choice().threads == 3
    monkeypatch.setenv(threads.THREADS_ENV_VAR, "torch")
    assert threads.thread_choice().threads == torch.get_num_threads()
    monkeypatch.setenv(threads.THREADS_ENV_VAR, "many")
    with pytest.raises(ValueError, match="positive whole number"):
        threads.thread_choice()


def test_pick_device_applies_the_choice_on_the_cpu(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setenv(threads.THREADS_ENV_VAR, "1")
    try:
        assert pick_device("cpu").type == "cpu"
        assert torch.get_num_threads() == 1
        assert "COURSE_THREADS=1" in threads.use_available_cpus().reason
    finally:
        torch.set_num_threads(before)


def test_an_automatic_choice_stays_within_the_cpus_we_have(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    choice = threads.thread_choice(sample_seconds=0.05)
    assert 1 <= choice.threads <= choice.affinity
    assert "affinity mask" in choice.reason
