"""CPU seconds and resident memory of a process, read from /proc (Linux), for the benchmarks' reports."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mb: float


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return Usage(cpu, rss_kb / 1024)


@dataclass(frozen=True)
class Machine:
    """What every core of the machine spent, cumulative (/proc/stat): busy and stolen by the hypervisor."""

    busy_s: float
    steal_s: float
    cores: int

    def since(self, before: Machine, duration_s: float) -> str:
        """The cores busy (every process, the benchmark's own included) and stolen over the window."""
        busy, steal = (self.busy_s - before.busy_s) / duration_s, (self.steal_s - before.steal_s) / duration_s
        return f"machine busy {busy:.2f} of {self.cores} cores, steal {steal:.2f}"


def machine() -> Machine:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guests are counted in user and nice)
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    busy = sum(fields[:8]) - idle - steal
    return Machine(busy / CLOCK_TICKS, steal / CLOCK_TICKS, os.cpu_count() or 1)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Benchmarks open thousands of sockets: raise the soft limit (never the product's job)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
