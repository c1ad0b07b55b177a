"""A calibration taken beside a busy neighbour is kept marked as such, and a later run on a quiet machine
measures again and ends with the quiet choices (minineo/fast/choices.py, measure.py).

The choices themselves are decided from made-up timings and made-up load readings, so which one wins is
known; one real run beside a process spinning on a core checks that the load is seen and recorded."""
import subprocess
import sys
import time

import numpy as np
import pytest

from minineo.commands import calibrate as command
from minineo.fast import choices, cpu, threads
from minineo.fast import measure as calibrate


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):   # the choices measured here go to tmp_path, never the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(choices.ENV, raising=False)
    choices.forget()
    yield
    choices.forget()
    threads.set_threads(None)


# How a neighbour spinning on one of 2 cores skews the timings (seconds per pass; every other candidate 2 s):
# BLAS's 2 threads wait for the slowed one, tiles hand work over, and a second thread never pays.
BUSY = {"blas": 4.0, "tiles dot x4": 1.0, "tiles": 0.5, "1 thread": 1.0, "threads": 3.0}
QUIET = {"blas": 1.0, "tiles dot x4": 1.5, "blas prefill": 0.5, "1 thread": 2.0, "threads": 1.0}
BUSY_CHOICES = dict(decode="tiles", prefill="tiles", fp32_threads_from=1 << 18,   # the largest size timed
                    int8_threads_from=1 << 18)
QUIET_CHOICES = dict(decode="blas", prefill="blas", fp32_threads_from=1 << 17, int8_threads_from=1 << 17)


class Machine:
    """A made-up machine, busy or quiet: the timings each candidate gets and what cpu.Neighbours reads."""

    def __init__(self, monkeypatch):
        self.busy, self.calibrations, self.probes = True, 0, 0
        monkeypatch.setattr(calibrate, "timed_passes", self.timed_passes)
        monkeypatch.setattr(calibrate, "THREADS_FROM", [1 << 17, 1 << 18])   # room for both in 2 MB
        monkeypatch.setattr(calibrate, "Neighbours", lambda: self)
        monkeypatch.setattr(choices, "others_busy", self.others_busy)
        monkeypatch.setattr(choices, "calibrate_in_child", self.calibrate)

    def timed_passes(self, candidates, one_pass, passes=calibrate.PASSES):
        times = BUSY if self.busy else QUIET
        prefill = len(candidates) == 2 and set(candidates) == {"blas", "tiles"}

        def seconds(label):
            key = label[1] if isinstance(label, tuple) else "blas prefill" if prefill and label == "blas" else label
            return times.get(key, 2.0)
        return {label: seconds(label) for label in candidates}

    def read(self):   # cpu.Neighbours().read()
        return {"others_cores": 1.0 if self.busy else 0.01, "wall_s": 10.0, "cpu_s": 15.0,
                "load_average": [1.0, 2.0] if self.busy else [0.1, 0.1]}

    def others_busy(self, seconds):
        self.probes += 1
        return self.read()["others_cores"]

    def calibrate(self, n, why="first time"):   # choices.calibrate_in_child, in this process
        self.calibrations += 1
        threads.set_threads(n)
        chosen, measured = calibrate.measure(n, nbytes=2 * 2**20)
        choices.write_cached(n, chosen, measured)
        return choices.read_cached(n)


def picked(c, **expected):
    return {name: getattr(c, name) for name in expected}


def test_a_busy_first_run_is_measured_again_by_a_quiet_run_which_keeps_the_quiet_choices(monkeypatch):
    machine = Machine(monkeypatch)
    first = choices.choose(2)                             # the first run ever, beside a busy neighbour
    assert machine.calibrations == 1 and picked(first, **BUSY_CHOICES) == BUSY_CHOICES, first
    load = choices.read_measured(2)["load"]
    assert load["under_load"] == "other programs kept 1.00 cores busy", load

    assert choices.choose(2) == first and machine.probes == 0   # within RETRY_AFTER_S: used, nothing probed
    monkeypatch.setattr(choices, "RETRY_AFTER_S", 0)
    assert choices.choose(2) == first and (machine.calibrations, machine.probes) == (1, 1)   # still busy: used
    assert choices.read_entry(2)["looked_at"] >= choices.read_entry(2)["measured_at"]

    machine.busy = False                                  # the neighbour is gone: the next run measures again
    quiet = choices.choose(2)
    assert machine.calibrations == 2 and picked(quiet, **QUIET_CHOICES) == QUIET_CHOICES, quiet
    assert choices.read_measured(2)["load"]["under_load"] is None and choices.read_cached(2) == quiet
    assert choices.choose(2) == quiet and (machine.calibrations, machine.probes) == (2, 2)   # quiet: kept as is


def test_a_machine_that_looks_quiet_but_measures_under_load_is_measured_again_only_max_tries_times(monkeypatch):
    # e.g. a laptop whose clock drops as it heats: the look before measuring finds it quiet, every
    # measurement moves. Each try waits ten times longer (RETRY_AFTER_S here 0: no wait); then it stops.
    machine = Machine(monkeypatch)
    monkeypatch.setattr(machine, "others_busy", lambda seconds: 0.0)
    monkeypatch.setattr(choices, "others_busy", lambda seconds: 0.0)
    monkeypatch.setattr(choices, "RETRY_AFTER_S", 0)
    for _ in range(choices.MAX_TRIES + 3):
        choices.choose(2)
    assert machine.calibrations == 1 + choices.MAX_TRIES and choices.read_entry(2)["tries"] == choices.MAX_TRIES
    assert "minineo no longer measures by itself" in choices.describe_kept(2)
    monkeypatch.setattr(choices, "RETRY_AFTER_S", 60)
    choices.update_entry(2, tries=1)
    assert choices.measure_again(2, now=choices.read_entry(2)["measured_at"] + 599) is None   # 10 x 60 s after
    assert choices.measure_again(2, now=choices.read_entry(2)["measured_at"] + 601) is not None


def test_a_ceiling_that_moves_while_measuring_counts_as_under_load():
    quiet = {"others_cores": 0.02, "wall_s": 10.0, "cpu_s": 19.0, "load_average": [0.5, 1.5]}
    assert calibrate.load(quiet, 30.0, 28.0)["under_load"] is None                  # 7%: noise
    assert calibrate.load(quiet, 30.0, 20.0)["under_load"] == (
        "the bandwidth ceiling moved 33% while measuring (30.0 GB/s at the start, 20.0 at the end)")
    assert calibrate.load({**quiet, "others_cores": None}, 30.0, 30.0)["under_load"] is None   # unknown: trusted
    assert calibrate.load({**quiet, "others_cores": 0.3}, 30.0, 30.0)["under_load"] == (
        "other programs kept 0.30 cores busy")


def test_each_candidate_keeps_its_best_pass_and_each_pass_starts_with_another_one(monkeypatch):
    seconds = {"a": iter([9, 5, 7, 6, 8, 6]), "b": iter([9, 3, 3, 4, 9, 9])}   # the first pass warms up
    clock, order = [0], []
    monkeypatch.setattr(calibrate.time, "perf_counter", lambda: clock[0])

    def one_pass(label):   # takes the label's next number of seconds on the made-up clock
        order.append(label)
        clock[0] += next(seconds[label])
    best = calibrate.timed_passes({"a": ("a",), "b": ("b",)}, one_pass, passes=5)
    assert order == ["a", "b", "b", "a"] * 3, order
    assert best == {"a": 5, "b": 3}, best


def test_a_file_from_another_blas_kernel_or_without_the_load_is_measured_again(monkeypatch):
    machine = Machine(monkeypatch)
    machine.busy = False
    choices.choose(2)
    entry = choices.read_entry(2)
    choices.update_entry(2, blas="openblas 0.3.0, Haswell kernels")            # OPENBLAS_CORETYPE=Haswell then
    assert choices.measure_again(2).startswith("the BLAS kernel changed (measured with openblas 0.3.0, Haswell")
    assert machine.probes == 0                                                  # whatever the load: measured again
    del entry["measured"]["load"]                                               # an older minineo's file
    choices.update_entry(2, replace=True, **entry)
    assert choices.measure_again(2) is None                                    # measured < RETRY_AFTER_S ago
    monkeypatch.setattr(choices, "RETRY_AFTER_S", 0)
    assert choices.measure_again(2) == "the kept measurement did not record the load"
    machine.busy = True
    assert choices.measure_again(2) is None                                    # busy now: kept until quiet


def test_calibrate_prints_when_and_under_what_load_the_kept_file_was_measured(monkeypatch, capsys):
    machine = Machine(monkeypatch)
    machine.calibrate(2)
    assert command.main(["--show", "--threads", "1,2"]) == 0
    out = capsys.readouterr().out
    print(out)
    when = time.strftime("%Y-%m-%d", time.localtime(choices.read_entry(2)["measured_at"]))
    assert "  1 thread: nothing kept yet" in out
    line = next(line for line in out.splitlines() if line.startswith("  2 threads: measured "))
    assert when in line and " ago) with " in line and choices.blas_kernel() in line, line
    assert ("other programs kept 1.00 cores busy, load average 1.00 -> 2.00; UNDER LOAD (other programs kept "
            "1.00 cores busy): a later run on a quiet machine measures again") in line, line
    assert "2 threads: fp32 matrix-vector over" in out and "chosen: decode=tiles" in out


def test_calibrate_show_lists_every_thread_count_kept_unless_told_which(monkeypatch, capsys):
    machine = Machine(monkeypatch)
    assert command.main(["--show"]) == 0                 # nothing kept: the count it would measure
    assert f"  {threads.physical_cores()} thread" in capsys.readouterr().out
    machine.calibrate(3)
    machine.calibrate(1)
    assert command.main(["--show"]) == 0
    out = capsys.readouterr().out
    kept = [line.split(":")[0] for line in out.splitlines() if " measured " in line]
    assert kept == ["  1 thread", "  3 threads"], out   # ascending, "1 thread" in the singular
    assert "  1 thread: fp32 matrix-vector over" in out and "  3 threads: fp32 matrix-vector over" in out, out
    assert command.main(["--show", "--threads", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 thread" not in out and "  3 threads: measured " in out, out


SPIN = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"   # ends by itself, whatever happens


def test_a_real_calibration_beside_a_spinning_core_is_marked_and_a_later_run_measures_again(monkeypatch):
    # The real thing, small (16 MB of weights: seconds): a process keeps one core busy while the child
    # calibrates; the kept file says so, and once the spinner is gone the next run measures again.
    if cpu.busy_seconds() is None:
        pytest.skip("no /proc/stat: other programs' load is unknown here")
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)
        assert choices.calibrate_in_child(2, megabytes=16) is not None
    finally:
        spinner.kill()
        spinner.wait()
    busy = choices.read_entry(2)
    print(choices.describe_kept(2))
    assert busy["measured"]["load"]["others_cores"] >= cpu.LOADED_CORES, busy["measured"]["load"]
    assert "cores busy" in busy["measured"]["load"]["under_load"]

    # The next run: the machine is taken to be quiet now (a shared CI machine may not be; the rule that
    # decides is tested above), RETRY_AFTER_S later. It measures again, in a child, and keeps what it found.
    monkeypatch.setattr(choices, "RETRY_AFTER_S", 0)
    monkeypatch.setattr(choices, "others_busy", lambda seconds: 0.0)
    real = choices.calibrate_in_child
    monkeypatch.setattr(choices, "calibrate_in_child", lambda n, why: real(n, why, megabytes=16))
    choices.choose(2)
    again = choices.read_entry(2)
    print(choices.describe_kept(2))
    assert again["measured_at"] > busy["measured_at"]
    assert again["measured"]["load"] != busy["measured"]["load"]


def test_neighbours_sees_a_process_spinning_on_a_core():
    if cpu.busy_seconds() is None:
        pytest.skip("no /proc/stat: other programs' load is unknown here")
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)
        others = cpu.others_busy(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    print(f"others_busy with one core spinning: {others:.2f}")
    assert others >= 0.7
    np.testing.assert_equal(cpu.Neighbours().read()["cpu_s"] >= 0, True)
