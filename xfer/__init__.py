import os
import sys

__version__ = "0.1.0"

# MXNet 1.9 keeps one core for its engine and runs operators (and oneDNN) with OpenMP on the
# rest: one thread on a 2-core machine, half the speed. Unless the user (or a launcher, e.g.
# joblib's loky workers, which divide the cores among jobs) has set it, use every core this
# process may run on. OpenMP reads it once, so it must be set before mxnet is imported.
if "OMP_NUM_THREADS" not in os.environ and "mxnet" not in sys.modules:
    os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                        else os.cpu_count() or 1)

# oneDNN kernels are cached per input shape by MXNet, without limit unless this is set: with
# length-bucketed batches of text the cache (and the scratch memory each kernel holds) grows
# with every new batch shape. 64 kernels hold the shapes in use; a kernel evicted and needed
# again is compiled again (experiments/README.md, Memory). Read when mxnet is imported.
if "mxnet" not in sys.modules:
    os.environ.setdefault("MXNET_MKLDNN_CACHE_NUM", "64")


def glibc():
    """The C library's functions of this process on Linux (``mallopt``, ``malloc_trim``), else None.
    The process's own symbols: no library search (``ctypes.util.find_library`` runs a subprocess)."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _fewer_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that contends for the heap its own arena (up to 8 per core), and
    memory freed in one arena is not reused by the others: MXNet's engine and OpenMP threads
    allocate and free arrays of every size, so the arenas' high-water marks add up. Two arenas
    (M_ARENA_MAX) keep the arenas' sum down (see the Memory section of experiments/README.md)."""
    libc = glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, n)  # M_ARENA_MAX


_fewer_malloc_arenas()
