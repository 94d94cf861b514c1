"""Bounds on sizes a user names (thread counts, input shapes), checked before anything is allocated.

Past these a command would not fail with a message but hang or die in an allocator: ``--threads 100000``
had onnxruntime start 100,000 spinning threads (a tiny profile did not finish in a minute), and an input
shape of 100000x3x10000x10000 asked torch for 120 TB.
"""

from __future__ import annotations

import math
import os

from dnnsplit.errors import UsageError

# Threads per core: onnxruntime and torch start one OS thread per intra-op thread, and past the cores
# they only contend (on 2 cores a tiny CNN profiled 5x slower with 256 threads, 44 s with 1024). Four per
# core leaves room to study oversubscription and still fails a typo fast. A floor of 64 keeps a config
# written for a bigger box (threads: 16) valid on a 2-core CI runner: 64 threads cost seconds, no hang.
THREADS_PER_CORE = 4
THREADS_FLOOR = 64


def cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    return max(THREADS_FLOOR, THREADS_PER_CORE * cores())


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """``threads`` is None (the default) or between 1 and ``max_threads()``; a usage error otherwise."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"{flag} must be at least 1 (got {threads})", "pass --threads 2, say")
    if threads > max_threads():
        raise UsageError(
            f"{flag} {threads} is more than {max_threads()} (the larger of {THREADS_FLOOR} and "
            f"{THREADS_PER_CORE} per core; {cores()} cores here)",
            f"pass at most {max_threads()}; one per core ({cores()}) is usually fastest",
        )


def memory_bytes() -> int | None:
    """This machine's physical memory; None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


# The input's float32 tensor may take at most this share of physical memory: running a model also holds
# every activation next to it (the first layers' outputs are often several times the input) and
# onnxruntime's arena. Bigger inputs are refused before an allocator fails or the OOM killer strikes;
# smaller ones that still do not fit fail where they are allocated, with a message too.
INPUT_MEMORY_SHARE = 0.25


def check_input_size(shape: tuple[int, ...], what: str = "--input-shape") -> None:
    """Refuse an input shape whose float32 tensor alone could never be held here."""
    elements = math.prod(shape)
    memory = memory_bytes()
    if memory is None or elements * 4 <= memory * INPUT_MEMORY_SHARE:
        return
    text = "x".join(str(d) for d in shape)
    size = elements * 4
    shown = f"{size / 1e12:.3g} TB" if size >= 1e12 else f"{size / 1e9:.3g} GB"
    raise UsageError(
        f"{what} {text} is {shown} as float32, more than a quarter of this machine's "
        f"{memory / 1e9:.3g} GB of memory",
        "pass a smaller shape, e.g. 1x3x224x224",
    )
