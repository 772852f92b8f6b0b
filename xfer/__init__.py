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
