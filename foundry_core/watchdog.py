"""A build whose notebook kernel sits idle for minutes is stuck: end it, so the build
fails and says so.

When the book is built or the chapters run under nbval, a client sends each cell to a
Jupyter kernel and waits for the reply. Rarely, under heavy load, a message between the
two is lost (seen with ipykernel 6.31, jupyter_client 8.10, pyzmq 27.3): the kernel has
nothing to do and the client waits for a reply that never comes, up to its per-cell
timeout, which for a full build must be long enough for a training cell. During a build
a kernel never idles for long: the next cell follows within milliseconds. So a kernel
told `FOUNDRY_IDLE_LIMIT=<seconds>` (set by the book build's extension and the test
run, never in an interactive session) watches itself and, after that long without a
cell, prints what it last ran and exits. The client sees a dead kernel within seconds
and fails the build, naming the notebook.

Such a kernel also turns on Python's fault handler: a kernel that crashes inside native
code (a segmentation fault in a library) then prints every thread's Python stack to the
build's log before it dies, instead of leaving only "Kernel died".
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time


def start_idle_watchdog(limit_seconds: float, check_every: float = 1.0) -> bool:
    """In an IPython kernel, exit the process after `limit_seconds` without a cell;
    False elsewhere."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        # a terminal IPython or a script: there is no client to lose a message
        return False
    # busy at first: this module is imported inside a running cell
    state = {"busy": True, "since": time.monotonic(), "last_cell": ""}

    def pre_run_cell(info) -> None:
        state.update(
            busy=True, since=time.monotonic(), last_cell=(info.raw_cell or "").strip()
        )

    def post_run_cell(result) -> None:
        state.update(busy=False, since=time.monotonic())

    faulthandler.enable(sys.__stderr__, all_threads=True)
    shell.events.register("pre_run_cell", pre_run_cell)
    shell.events.register("post_run_cell", post_run_cell)

    def watch() -> None:
        while True:
            time.sleep(check_every)
            idle = time.monotonic() - state["since"]
            if not state["busy"] and idle > limit_seconds:
                first_line = (
                    state["last_cell"].splitlines()[0][:100]
                    if state["last_cell"]
                    else "(none)"
                )
                sys.__stderr__.write(
                    f"\nfoundry_core: this kernel has waited {idle:.0f} s for its "
                    f"next cell (FOUNDRY_IDLE_LIMIT={limit_seconds:g}): the client "
                    "lost a message. Exiting so the run fails instead of hanging. "
                    f"The last cell it ran began: {first_line}\n"
                )
                sys.__stderr__.flush()
                os._exit(3)

    threading.Thread(target=watch, name="foundry-idle-watchdog", daemon=True).start()
    return True


def watchdog_from_environment(env: dict[str, str] | None = None) -> bool:
    """Start the watchdog if FOUNDRY_IDLE_LIMIT is set (positive, in seconds)."""
    raw = (os.environ if env is None else env).get("FOUNDRY_IDLE_LIMIT", "").strip()
    if not raw:
        return False
    try:
        limit = float(raw)
    except ValueError:
        raise ValueError(
            f"FOUNDRY_IDLE_LIMIT must be a number of seconds, got {raw!r}"
        ) from None
    if limit <= 0:
        raise ValueError(f"FOUNDRY_IDLE_LIMIT must be positive, got {raw!r}")
    return start_idle_watchdog(limit)
