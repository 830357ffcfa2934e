"""How long a chapter's cell may run in the book build, and what happens if one sticks.

Jupyter Book applies one per-cell timeout to every chapter. The right value depends on
the preset: seconds at the tiny `ci` preset, the length of a whole pretraining run at
the `cpu` preset, hours on the biggest GPU preset. Unless `_config.yml` sets a positive
`execute.timeout` (or the environment FOUNDRY_CELL_TIMEOUT), this extension sets it to
`foundry_core.presets.cell_timeout` of the preset the build picks. It also sets
FOUNDRY_IDLE_LIMIT for the build's kernels (foundry_core/watchdog.py): a kernel left
waiting for a cell that never comes exits, so a lost message fails the build within
minutes instead of waiting for the timeout.
"""

from __future__ import annotations

import os

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

IDLE_LIMIT_SECONDS = 120  # no build waits this long between two cells of one notebook


def set_cell_timeout(app: Sphinx, config: Config) -> None:
    from foundry_core.presets import cell_timeout, pick_preset

    os.environ.setdefault("FOUNDRY_IDLE_LIMIT", str(IDLE_LIMIT_SECONDS))
    chosen = config.nb_execution_timeout
    override = os.environ.get("FOUNDRY_CELL_TIMEOUT", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(
                "FOUNDRY_CELL_TIMEOUT must be a positive number of seconds, "
                f"got {override!r}"
            )
        chosen = int(override)
    elif not chosen or chosen <= 0:
        preset = pick_preset()
        chosen = cell_timeout(preset)
        logger.info(
            f"[cell_timeout] preset {preset.name}: each cell may run {chosen} s"
        )
    config.nb_execution_timeout = chosen


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", set_cell_timeout, priority=800)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
