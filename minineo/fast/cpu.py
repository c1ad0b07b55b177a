"""What CPU this is: its name, cores and caches, for the choices made per CPU and for the bench's table.

Linux tells through /proc/cpuinfo and /sys; elsewhere the name comes from `platform` and the caches
are unknown (None), which every caller accepts.
"""
import functools
import os
import platform
import re
from pathlib import Path

from .threads import physical_cores

SYS_CPU = Path("/sys/devices/system/cpu/cpu0/cache")


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
