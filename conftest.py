"""Settings for the whole test run, loaded by pytest before anything is collected.

FOUNDRY_FAST=1 shrinks every chapter to the tiny `ci` preset; nbval's kernels inherit it.
FOUNDRY_OFFLINE=1 forbids fetching corpora during tests: .ci/run fetches them while installing.
"""

import os

os.environ["FOUNDRY_FAST"] = "1"
os.environ["FOUNDRY_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets ipykernel's debugger warning
