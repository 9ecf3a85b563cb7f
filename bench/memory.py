"""The memory probes every benchmark shares: the resident set and its peak, read in the measured process.

VmHWM (/proc/self/status) is the peak of this process's own address space; getrusage's ru_maxrss, the fallback
where /proc is missing (macOS), survives exec and so can report the parent's peak.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path


def status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MiB; None where /proc is missing (macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the process's peak resident set (Linux: writing 5 to clear_refs), so VmHWM covers what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident MiB of this process (since the last `reset_peak`, where it worked)."""
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024
