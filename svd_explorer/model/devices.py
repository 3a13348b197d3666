"""Devices and dtypes: what `--device` and `--dtype` resolve to, checked before anything runs.

Statistics are accumulated in float64 and decompositions run in float64 on the device where the
backend has it (CPU, CUDA); MPS has no float64, so there they run on the CPU, and the result
records which. Clocks are read after synchronising the device, so timings measure the work and not
the queueing of kernels.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from ..errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks an accelerator when one is present; a device that is not here is a clear error."""
    name = (name or "auto").strip().lower()
    present = available_devices()
    if name == "auto":
        return torch.device(next((d for d in present if d != "cpu"), "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name} is not a device name ({DEVICE_CHOICES})") from err
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    if str(device) not in present:
        raise ConfigError(f"--device {name} is not available on this machine; available: {', '.join(present)}")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: float32 on the CPU, bfloat16 on an accelerator that supports it, else float16."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if supports(torch.bfloat16, device) else torch.float16
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be auto, {', '.join(DTYPES)}; got {name!r}")
    if not supports(DTYPES[name], device):
        raise ConfigError(f"--dtype {name} is not supported by {device} on this machine; use float32")
    return DTYPES[name]


def supports(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a small matrix product in `dtype` runs on `device`."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_bf16_supported()
    try:
        a = torch.ones(4, 4, dtype=dtype, device=device)
        return bool(torch.isfinite((a @ a).float()).all())
    except (RuntimeError, TypeError):
        return False


def float64_device(device: torch.device) -> torch.device:
    """Where float64 statistics and decompositions run: the device itself, or the CPU for MPS."""
    return torch.device("cpu") if device.type == "mps" else device


def describe_linalg(device: torch.device) -> dict:
    home = float64_device(device)
    note = None if home == device else f"{device.type} has no float64: decompositions run on the CPU"
    return {"device": str(home), "dtype": "float64", "note": note}


def synchronize(device: torch.device | str | None = None) -> None:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


class Clock:
    """Wall time of a piece of work on `device`, synchronised at both ends."""

    def __init__(self, device=None):
        self.device = device
        synchronize(device)
        self.start = time.perf_counter()

    def seconds(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.start


@contextmanager
def timed(device=None):
    clock = Clock(device)
    holder = {}
    yield holder
    holder["seconds"] = clock.seconds()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model computes on: its first non-meta parameter's, or an offload hook's execution device."""
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
