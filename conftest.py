"""Settings for the whole test run, loaded by pytest before it collects anything.

FOUNDRY_FAST=1 shrinks each chapter to the tiny `ci` preset; nbval's kernels inherit it.

FOUNDRY_OFFLINE=1 forbids fetching corpora during tests: .ci/run fetches them while
installing.

FOUNDRY_IDLE_LIMIT makes a kernel that waits minutes for its next cell exit
(foundry_core/watchdog.py), and nbval's per-cell limit is the one the book build uses
for the `ci` preset: a stuck chapter fails within minutes, naming the notebook and the
cell.

FOUNDRY_ARTIFACTS is a fresh folder for each run, unless set: the pipeline reuses any
artifact whose settings match, whatever version of the code built it, so a clone's
artifacts/ from an earlier commit would let the chapters pass on models that the code
under test no longer trains. (It happened: `pytest` passed here on the old models
while CI, training afresh, failed.) Set it to reuse one folder on purpose.

FOUNDRY_SEED (default 0) is the seed of nbval's run; the book build in
tests/conftest.py runs the chapters at the next seed, so every `pytest` checks each
chapter's claims on two trajectories.
"""

import os
import shutil
import tempfile

os.environ["FOUNDRY_FAST"] = "1"
os.environ["FOUNDRY_OFFLINE"] = "1"
os.environ.setdefault("FOUNDRY_IDLE_LIMIT", "120")
_FRESH_ARTIFACTS = None
if not os.environ.get("FOUNDRY_ARTIFACTS"):
    _FRESH_ARTIFACTS = tempfile.mkdtemp(prefix="foundry-test-artifacts-")
    os.environ["FOUNDRY_ARTIFACTS"] = _FRESH_ARTIFACTS
os.environ.setdefault("MPLBACKEND", "Agg")
# quiets ipykernel's debugger warning
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def pytest_configure(config) -> None:
    # 2000 s is nbval's default: the user asked for no limit of their own
    if (
        hasattr(config.option, "nbval_cell_timeout")
        and config.option.nbval_cell_timeout == 2000
    ):
        from foundry_core.presets import cell_timeout, get_preset

        config.option.nbval_cell_timeout = cell_timeout(get_preset("ci"))


def pytest_unconfigure(config) -> None:
    if _FRESH_ARTIFACTS:
        shutil.rmtree(_FRESH_ARTIFACTS, ignore_errors=True)
