"""What machine are we on, which precision suits it, and how much memory will training
need?

Detection is cheap and side-effect free, so notebooks can call `detect()` freely. The
memory estimate is analytic (counted from shapes), so it can size a preset for a GPU we
do not have.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass

import torch

GIB = 1024**3
DEVICES = ("cuda", "mps", "cpu")

# Memory a process needs beyond its tensors (CUDA context and kernels, the MPS
# allocator's pools). Rough, measured-on-typical-setups values, kept apart so the
# estimate shows them as their own bar.
RUNTIME_OVERHEAD_BYTES = {"cuda": int(0.75 * GIB), "mps": int(0.5 * GIB), "cpu": 0}


@dataclass(frozen=True)
class HardwareInfo:
    """A description of one accelerator (or the CPU), real or hypothetical."""

    device: str  # "cuda", "mps" or "cpu"
    name: str
    memory_bytes: int | None  # device memory; for "mps" and "cpu" the system's RAM
    bf16: bool  # can this device run bfloat16 autocast at useful speed?
    cpu_cores: int = 1
    device_count: int = 1
    compute_capability: tuple[int, int] | None = None  # CUDA only

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / GIB

    def __str__(self) -> str:
        memory = (
            "unknown memory"
            if self.memory_gib is None
            else f"{self.memory_gib:.1f} GiB"
        )
        count = f"{self.device_count} x " if self.device_count > 1 else ""
        return (
            f"{self.device}: {count}{self.name} "
            f"({memory}, bf16 {'yes' if self.bf16 else 'no'})"
        )


def _system_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # e.g. Windows has no sysconf
        return None


def _cpu_name() -> str:
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flags() -> str:
    """The CPU's feature flags as Linux lists them ("" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_has_fast_bf16() -> bool:
    """bf16 on a CPU is only worth it with native bf16 instructions (AVX512-BF16 or
    AMX).

    Without them PyTorch emulates bf16 matmuls, which can be 100x slower than fp32.
    """
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """Whether the CPU has Intel's AMX matrix units (Sapphire Rapids and later)."""
    return "amx_tile" in _cpu_flags()


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        found.insert(0, "mps")
    return found


def detect(device: str | None = None) -> HardwareInfo:
    """Describe the best available device: CUDA, else Apple MPS, else the CPU.

    `device` (or the environment variable FOUNDRY_DEVICE) forces a choice, e.g. "cpu" on
    a Mac whose MPS backend misbehaves.
    """
    available = _available_devices()
    wanted = device or os.environ.get("FOUNDRY_DEVICE") or available[0]
    if wanted not in DEVICES:
        raise ValueError(f"unknown device '{wanted}': use one of {', '.join(DEVICES)}")
    if wanted not in available:
        raise ValueError(
            f"device '{wanted}' is not available here; "
            f"available: {', '.join(available)}"
        )
    cores = _cpu_cores()
    if wanted == "cuda":
        props = torch.cuda.get_device_properties(0)
        return HardwareInfo(
            device="cuda",
            name=props.name,
            memory_bytes=props.total_memory,
            bf16=torch.cuda.is_bf16_supported(),
            cpu_cores=cores,
            device_count=torch.cuda.device_count(),
            compute_capability=(props.major, props.minor),
        )
    if wanted == "mps":
        # Unified memory: the GPU shares the system RAM. bf16 training on MPS is not yet
        # proven reliable across PyTorch releases, so the course treats it as fp32-only.
        return HardwareInfo(
            "mps", _cpu_name(), _system_memory_bytes(), bf16=False, cpu_cores=cores
        )
    return HardwareInfo(
        "cpu",
        _cpu_name(),
        _system_memory_bytes(),
        bf16=_cpu_has_fast_bf16(),
        cpu_cores=cores,
    )


@dataclass(frozen=True)
class Precision:
    """The numeric recipe for training: parameters stay fp32, matmuls may run in a
    16-bit type."""

    dtype: str  # "float32", "bfloat16" or "float16"
    autocast: bool
    # fp16 needs loss scaling to keep small gradients from flushing to zero
    grad_scaler: bool
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def apply_thread_setting(env: dict[str, str] | None = None) -> int | None:
    """Honour FOUNDRY_THREADS=<n> with torch.set_num_threads(n); returns n, or None
    when unset.

    Float sums are added in a different order on a different number of threads, so a
    run at 1 and at 2 threads shows how much a result owes to rounding
    (scripts/check_robustness.py runs both).
    """
    raw = (os.environ if env is None else env).get("FOUNDRY_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"FOUNDRY_THREADS must be a positive integer, got {raw!r}")
    torch.set_num_threads(int(raw))
    return int(raw)


def choose_precision(info: HardwareInfo, requested: str = "auto") -> Precision:
    """bf16 autocast where the device does it natively, fp16 + loss scaling on older
    CUDA, else fp32.

    On MPS "auto" is always fp32, even for a HardwareInfo that claims bf16: fp32 is the
    precision known to train correctly there across PyTorch releases; bf16 must be
    asked for explicitly.
    """
    if requested == "float32":
        return Precision("float32", False, False, "float32 requested")
    if requested == "bfloat16":
        if not info.bf16:
            raise ValueError(
                "bfloat16 is not supported at useful speed on "
                f"{info.device} ({info.name}): "
                f"use dtype='auto' or 'float32'"
                + (" or 'float16'" if info.device == "cuda" else "")
            )
        return Precision("bfloat16", True, False, "bfloat16 requested")
    if requested == "float16":
        if info.device != "cuda":
            raise ValueError(
                f"float16 training needs CUDA (this is {info.device}): use dtype='auto'"
            )
        return Precision("float16", True, True, "float16 requested: loss scaling on")
    if requested != "auto":
        raise ValueError(
            f"unknown dtype '{requested}': use auto, float32, bfloat16 or float16"
        )
    if info.device == "mps":
        return Precision(
            "float32",
            False,
            False,
            "MPS: float32, the precision known to train reliably there",
        )
    if info.bf16:
        return Precision(
            "bfloat16",
            True,
            False,
            f"{info.device} supports bfloat16: autocast matmuls to bf16",
        )
    if info.device == "cuda":
        return Precision(
            "float16",
            True,
            True,
            "CUDA without bf16 (pre-Ampere): fp16 autocast with loss scaling",
        )
    return Precision(
        "float32",
        False,
        False,
        "CPU without native bf16 instructions: float32 is fastest",
    )


MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"
_noted: set[str] = set()  # notes already printed in this process


def mps_fallback_enabled() -> bool:
    """Did torch load with PYTORCH_ENABLE_MPS_FALLBACK=1? PyTorch reads it once, when it
    is imported; foundry_core/__init__.py sets it (when unset, on macOS) before its own
    first `import torch`."""
    from . import _MPS_FALLBACK_AT_TORCH_IMPORT

    return _MPS_FALLBACK_AT_TORCH_IMPORT


def mps_notes(fallback: bool, matmul_precision: str) -> list[str]:
    """What a reader training on MPS should know about this process (the words
    of prepare_device)."""
    if fallback:
        notes = [
            "MPS: an operation Metal lacks runs on the CPU instead "
            "(PYTORCH_ENABLE_MPS_FALLBACK=1); "
            "PyTorch names each such operation once, when it first falls back"
        ]
    else:
        notes = [
            "MPS: torch was imported before foundry_core without "
            "PYTORCH_ENABLE_MPS_FALLBACK=1, so an operation Metal lacks will raise "
            "NotImplementedError: set the variable (or import foundry_core first) "
            "in a fresh process to let such operations run on the CPU"
        ]
    if matmul_precision != "highest":
        notes.append(
            f"MPS: float32 matmul precision was '{matmul_precision}'; "
            "set back to 'highest' so that "
            "fp32 training really computes in fp32 (no TF32-style shortcuts)"
        )
    return notes


def prepare_device(info: HardwareInfo) -> None:
    """Settings a device needs before training; on MPS: full fp32 matmuls, and a
    one-time note on the CPU fallback for operations Metal lacks. Nothing to do on CUDA
    and the CPU."""
    if info.device != "mps":
        return
    precision = torch.get_float32_matmul_precision()
    if precision != "highest":
        torch.set_float32_matmul_precision("highest")
    for note in mps_notes(mps_fallback_enabled(), precision):
        if note not in _noted:
            _noted.add(note)
            print(note)


def measure_matmul_tflops(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 1024,
    seconds: float = 0.5,
) -> float:
    """Measured dense matmul throughput in TFLOP/s: the ceiling any training run on this
    device sees."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()

    a @ b  # warm-up: first calls pay for kernel selection and allocation
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        a @ b
        runs += 1
    sync()
    elapsed = time.perf_counter() - start
    return 2 * size**3 * runs / elapsed / 1e12
