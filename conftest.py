"""Settings for the whole test run, loaded by pytest before anything is collected.

FOUNDRY_FAST=1 shrinks every chapter to the tiny `ci` preset; nbval's kernels inherit it.
"""

import os

os.environ["FOUNDRY_FAST"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets ipykernel's debugger warning
