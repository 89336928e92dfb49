"""Peak host memory of this process (Linux /proc; ``resource`` elsewhere)."""
from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0), so that the next
    reading covers only what ran since; False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes(field_name: str = "VmHWM") -> int | None:
    """``VmHWM`` (peak resident set) or ``VmRSS`` (current) of this process, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if field_name == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return None
