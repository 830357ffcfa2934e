"""The built book, shared by the tests of the site (tests/test_book.py, test_site.py).

One build per test run, because executing every chapter is the expensive part. The book
is built as the release is: every chapter executed afresh, so the pages carry
their figures, tables and widget state, and each page's "Download .ipynb" carries the
outputs. It uses the tiny `ci` preset that FOUNDRY_FAST=1 selects (set in the root
conftest.py), treats warnings as errors, and has no network, so what the tests see is
what a reader gets from a clean clone.

FOUNDRY_BOOK_HTML=path/to/_build/html checks an existing build instead (the release
workflow checks the site it is about to publish this way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from foundry_core.presets import course_seed

ROOT = Path(__file__).resolve().parents[1]
# what foundry_core.watchdog prints when a kernel waited too long for its next cell
LOST_MESSAGE = "lost a message"

# Runs a command in a new network namespace: no network, but a working loopback, which
# the Jupyter kernels need (they talk to the build over 127.0.0.1). `ip` brings the
# namespace's loopback up.
_NO_NETWORK = [
    "unshare",
    "-rn",
    "sh",
    "-c",
    'ip link set lo up && exec "$@"',
    "no-network",
]


def offline_prefix() -> list[str]:
    """The prefix that cuts a command off the network, or [] where the OS forbids it."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return []
    probe = subprocess.run([*_NO_NETWORK, "true"], capture_output=True, check=False)
    return _NO_NETWORK if probe.returncode == 0 else []


def build_config(out: Path) -> Path:
    """The project's _config.yml, written to `out` with relative paths made absolute.

    jupyter-book resolves `local_extensions` paths against the folder of the config
    file it is given.
    """
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    config["sphinx"]["local_extensions"] = {
        name: str(ROOT / path) for name, path in extensions.items()
    }
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def build_book(out: Path) -> Path:
    """Build the whole book into `out` and return its html folder.

    Any warning fails the test run.
    """
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [
        *offline_prefix(),
        str(jupyter_book),
        "build",
        str(ROOT),
        "--config",
        str(build_config(out)),
        "--path-output",
        str(out),
        "-W",
        "--keep-going",
    ]
    # nbval runs the chapters at FOUNDRY_SEED, the book at the next seed: so each claim
    # meets two trajectories
    env = {
        **os.environ,
        "FOUNDRY_FAST": "1",
        "FOUNDRY_OFFLINE": "1",
        "FOUNDRY_SEED": str(course_seed() + 1),
    }
    # The root conftest sets MPLBACKEND=Agg for the test process; the book's kernels
    # must keep Jupyter's inline backend, or the pages would carry no figures for the
    # browser test to check.
    env.pop("MPLBACKEND", None)
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    if result.returncode and LOST_MESSAGE in result.stdout + result.stderr:
        # the rare lost kernel message that foundry_core.watchdog turns from a hang
        # into a dead kernel (seen once in chapter 5's widget cell, on an idle
        # machine): a transport failure, not the book's, so the build is retried once
        warnings.warn("book build: a kernel lost a message; building once more")
        result = subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    """The html folder of the built book (built once per test run)."""
    existing = os.environ.get("FOUNDRY_BOOK_HTML")
    if existing:
        return Path(existing).resolve()
    return build_book(tmp_path_factory.mktemp("book"))


# a tokenizer and a tiny chat model for the export tests (tests/chat_fixtures.py)
from chat_fixtures import chat_model, chat_tokenizer  # noqa: E402, F401
