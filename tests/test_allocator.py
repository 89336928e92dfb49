"""glibc keeps a long job's freed memory for its next allocation (core/run/allocator.py)."""
import subprocess
import sys
import textwrap

import pytest

# A few training steps of a small network on a 1024 x 1024 image: its activations (64 MiB each)
# are above glibc's largest mmap threshold (32 MiB), as the network's are at batch 2.
PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from mstt_stvsr.core.run.allocator import keep_freed_memory
    took = keep_freed_memory() if sys.argv[1] == "keep" else None
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(1, 3, 1024, 1024)
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(took, sum(faults[2:]) / 4)  # the steady state: after the first steps have grown the heap
""")


def steady_faults(mode: str) -> tuple:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    took, faults = out.stdout.split()
    return took, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_steps_reuse_their_memory_instead_of_faulting_it_in_again():
    """By default every step gets its large activations as fresh pages and faults each one in
    (about 200,000 4-KiB pages a step here); after keep_freed_memory the steps reuse the pages
    of the last one (measured 0-33,000 a step, 8,000 on average). A process that never calls
    it keeps glibc's default."""
    took, kept = steady_faults("keep")
    assert took == "True"
    _, default = steady_faults("default")
    assert default > 100_000, default  # the default really does fault the activations in each step
    assert kept < 0.2 * default, (kept, default)
