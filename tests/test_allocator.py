"""allocator.keep_freed_memory: freed tensors are reused, not faulted in again."""

import resource
import sys

import pytest
import torch

from foundry_core.allocator import keep_freed_memory


def test_bad_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="FOUNDRY_KEEP_FREED_MEMORY"):
        keep_freed_memory({"FOUNDRY_KEEP_FREED_MEMORY": "yes"})


def test_opt_out_changes_nothing():
    assert keep_freed_memory({"FOUNDRY_KEEP_FREED_MEMORY": "0"}) is False


def _step() -> None:
    """Three 16 MiB tensors alive at once, freed together, like a step's activations."""
    activations = [torch.empty(4 << 20).fill_(1.0) for _ in range(3)]
    del activations


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_tensors_are_reused_without_page_faults():
    if not keep_freed_memory({}):
        pytest.skip("not glibc")
    for _ in range(5):  # the heap grows to the step's size
        _step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        _step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # With glibc's defaults the 48 MiB freed at the top of the heap is returned to the
    # system each step and faulted back in, 4 KiB at a time, by the next: 122,560
    # faults for these 10 steps in a fresh process (FOUNDRY_KEEP_FREED_MEMORY=0).
    assert faults < 4096, faults
