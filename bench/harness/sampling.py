"""What processes use, read from /proc: CPU time of a process tree, of the whole machine and of
everyone else, the load average, and resident memory sampled in a thread. Linux only; it reads
and never signals a process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f:
                children[int(f[1])].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, in ms."""
    total = 0
    for p in process_tree(pid):
        f = _stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])
    return total * 1000 / CLK_TCK


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (short command line, CPU ms) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if not f:
            continue
        try:
            cmd = (
                Path(f"/proc/{entry}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
                .strip()[:80]
            )
        except OSError:
            cmd = ""
        out[int(entry)] = (cmd, (int(f[11]) + int(f[12])) * 1000 / CLK_TCK)
    return out


def system_busy_ms() -> float:
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) * 1000 / CLK_TCK


def self_cpu_ms() -> float:
    t = os.times()
    return (t.user + t.system) * 1000


def children_cpu_ms() -> float:
    """CPU of our waited-for children that are not long-running servers (wrk)."""
    t = os.times()
    return (t.children_user + t.children_system) * 1000


def machine_busy(seconds: float = 2.0) -> float:
    """Percent of all cores busy (any process) over `seconds`."""
    b0, t0 = system_busy_ms(), time.perf_counter()
    time.sleep(seconds)
    wall = (time.perf_counter() - t0) * 1000 * (os.cpu_count() or 1)
    return 100 * (system_busy_ms() - b0) / wall


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The gateway's resident memory and the machine's busy CPU every `every` seconds."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        busy0, wall0, cpu0 = system_busy_ms(), t0, cpu_ms(self.pid)
        while not self.stop.wait(self.every):
            now = time.perf_counter()
            busy, cpu = system_busy_ms(), cpu_ms(self.pid)
            wall = (now - wall0) * 1000
            with contextlib.suppress(OSError):
                self.samples.append(
                    {
                        "t": round(now - t0, 1),
                        "rss_mb": round(rss_kb(self.pid) / 1024, 1),
                        "gateway_cpu_pct": round(100 * (cpu - cpu0) / wall, 1),
                        "machine_busy_pct": round(100 * (busy - busy0) / wall / 2, 1),
                        "loadavg": loadavg(),
                    }
                )
            busy0, wall0, cpu0 = busy, now, cpu
