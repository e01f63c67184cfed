"""Suite-wide settings: one intra-op thread per process.

The suite's models are tiny, and several tests start extra processes (torchrun ranks, study
workers) on a 2-core machine; with OpenMP's default of one thread per core those processes
oversubscribe the cores and spin-wait, which made 0.3-second epochs take over 10 seconds.
Subprocesses inherit OMP_NUM_THREADS=1 through the environment.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the environment is set, so subprocesses inherit it)

torch.set_num_threads(1)
