"""What CPU this is: its name, cores and caches, for the choices made per CPU and for the bench's table;
and how busy other programs keep it while minineo measures.

Linux tells through /proc/cpuinfo, /proc/stat and /sys; elsewhere the name comes from `platform`, and
the caches and other programs' load are unknown (None), which every caller accepts.
"""
import functools
import os
import platform
import re
import time
from pathlib import Path

from .threads import physical_cores

SYS_CPU = Path("/sys/devices/system/cpu/cpu0/cache")
PROC_STAT = Path("/proc/stat")
LOADED_CORES = 0.25   # other programs' busy cores, on average, from which the machine counts as busy


@functools.cache
def cpu_name():  # e.g. "Intel(R) Xeon(R) Processor" or "AMD EPYC 9R45 64-Core Processor"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _size(text):  # "2048K" / "480M" / "32768" (bytes) -> bytes
    number, unit = re.fullmatch(r"(\d+)\s*([KMG]?)B?", text.strip(), re.IGNORECASE).groups()
    return int(number) * 1024 ** " KMG".index(unit.upper() or " ")


@functools.cache
def cache_bytes():  # -> {2: L2 bytes per core, 3: L3 bytes (shared)}; a level the system hides is None
    sizes = {2: None, 3: None}
    try:
        for index in SYS_CPU.glob("index*"):
            level = int((index / "level").read_text())
            if level in sizes and (index / "type").read_text().strip() in ("Unified", "Data"):
                sizes[level] = _size((index / "size").read_text())
    except (OSError, ValueError, AttributeError):
        pass
    for level, name in ((2, "SC_LEVEL2_CACHE_SIZE"), (3, "SC_LEVEL3_CACHE_SIZE")):
        if sizes[level] is None and hasattr(os, "sysconf") and name in os.sysconf_names:
            sizes[level] = os.sysconf(name) or None   # glibc's answer, 0 when unknown
    return sizes


def describe():  # one line: "Intel(R) Xeon(R) Processor, 2 cores, L2 2 MiB per core, L3 480 MiB"
    def mib(n):
        return "unknown" if n is None else f"{n / 2**20:g} MiB"
    sizes = cache_bytes()
    return f"{cpu_name()}, {physical_cores()} cores, L2 {mib(sizes[2])} per core, L3 {mib(sizes[3])}"


def busy_seconds():  # -> CPU-seconds the CPUs this process may use have been busy since boot, every program's; or None
    # /proc/stat: one line per CPU, "cpuN user nice system idle iowait irq softirq steal ..." in clock ticks.
    # Steal is time the hypervisor gave another machine: a neighbour too.
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        ticks = 0
        for line in PROC_STAT.read_text().splitlines():
            name, *fields = line.split()
            if name[3:].isdigit() and name.startswith("cpu") and (cpus is None or int(name[3:]) in cpus):
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
                ticks += user + nice + system + irq + softirq + steal
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None


def load_average():  # -> the 1-minute load average (runnable threads, this process's included), or None
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class Neighbours:
    """How many cores other programs kept busy, on average, since this was made: the CPUs' busy time
    less the CPU time of this process and of its children that ended (int8 workers), per second of wall clock. A program spinning on one core reads
    about 1.0; a quiet machine about 0.01."""

    def __init__(self):
        self.wall, self.own, self.busy = time.perf_counter(), own_seconds(), busy_seconds()
        self.load_before = load_average()

    def read(self):  # -> {"others_cores": float or None (unknown), "wall_s", "cpu_s" (this process), "load_average"}
        wall, own, busy = time.perf_counter() - self.wall, own_seconds() - self.own, busy_seconds()
        others = None if busy is None or self.busy is None else max(0.0, busy - self.busy - own) / wall
        return {"others_cores": others, "wall_s": wall, "cpu_s": own,
                "load_average": [self.load_before, load_average()]}


def own_seconds():  # CPU time of this process and of its children that have ended (int8 workers: processes.py)
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def others_busy(seconds=0.5):  # -> cores other programs kept busy over the next `seconds` (None: unknown)
    neighbours = Neighbours()
    time.sleep(seconds)
    return neighbours.read()["others_cores"]
