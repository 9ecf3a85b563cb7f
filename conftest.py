"""Root pytest configuration: notebooks run in smoke mode (small data, few steps) unless told otherwise.

The notebook kernels inherit this process's environment, so setting the variable here reaches them.
"""
import os

os.environ.setdefault("HW2_SMOKE", "1")
