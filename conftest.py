"""Root pytest configuration: notebooks run in smoke mode (small data, few steps) unless told otherwise.

The notebook kernels inherit this process's environment, so setting the variable here reaches them.
"""
import os
import tempfile

os.environ.setdefault("HW2_SMOKE", "1")
# two cores shared by pytest and a kernel: one torch thread each avoids threads waiting on each other (5 s -> 25 ms
# for a tiny training step when the machine is busy)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# smoke-mode figures go to a temporary folder: running the tests must not overwrite report/figures/, whose
# committed figures come from full runs on real data
os.environ.setdefault("HW2_FIGURES", tempfile.mkdtemp(prefix="hw2-figures-"))
