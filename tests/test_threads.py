import os
import subprocess
import sys


def _omp_after_import(env_value):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env_value is not None:
        env["OMP_NUM_THREADS"] = env_value
    code = "import xfer, mxnet, os; print(os.environ['OMP_NUM_THREADS'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_mxnet_gets_every_core_unless_the_user_chose():
    """MXNet 1.9 alone runs operators on cores - 1 threads (1 on a 2-core machine)."""
    assert _omp_after_import(None) == str(len(os.sched_getaffinity(0)))
    assert _omp_after_import("1") == "1"  # a user's (or joblib worker's) choice is kept
