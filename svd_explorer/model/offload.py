"""Models larger than memory: where the weights live, decided before loading, and blocks onloaded one at a time.

Sequential mode, as SVD-LLM's low-resource mode and llm-compressor's sequential onloading do it:
the decoder blocks of the original model stay on the CPU (`cpu`, when an accelerator computes) or
in their safetensors files on disk (`disk`), through accelerate's offload hooks; only the block being
compressed is materialised on the device. Each finished compressed block is offloaded the same way
(to CPU memory, or written to a safetensors file in the offload folder), so neither model is ever
whole in memory. Evaluation and generation run through the same hooks.

The choice (in memory, offloaded, refused) is made from the config alone, before a weight is read,
and is recorded with its estimate in the log, the result and the app.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import shutil
import tempfile
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module
from accelerate.utils import OffloadedWeightsLoader, has_offloaded_params
from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigError, ModelLoadError
from ..files import cache_dir

MODES = ("auto", "none", "cpu", "disk")
MEMORY_MARGIN = 0.9   # use at most this share of the memory reported free


@dataclass
class Placement:
    """Where a run keeps its weights, and why."""

    mode: str                 # "memory", "cpu" (blocks in CPU memory) or "disk" (blocks in safetensors files)
    device: str               # where the blocks compute
    needed_bytes: int         # estimate for an in-memory run: original + compressed + working set
    available_bytes: int      # free memory of the device when the choice was made
    reason: str
    folder: str | None = None  # offload folder (disk mode)

    @property
    def offloaded(self) -> bool:
        return self.mode != "memory"

    def describe(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        where = {"memory": "in memory", "cpu": "blocks offloaded to CPU memory",
                 "disk": f"blocks offloaded to disk ({self.folder})"}[self.mode]
        return (f"weights {where} on {self.device}: an in-memory run needs about {gib(self.needed_bytes)}, "
                f"{gib(self.available_bytes)} free; {self.reason}")


def gib(n: int | float) -> str:
    return f"{n / 2**30:.1f} GiB"


def free_memory(device: torch.device) -> int:
    """Bytes free on `device` (host memory for the CPU and for MPS, which shares it)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def run_bytes(params: int, block_params: int, dtype_bytes: int, work_bytes: int) -> int:
    """An in-memory run holds the original and the compressed model (at most as large) and a working set."""
    return 2 * params * dtype_bytes + block_params * dtype_bytes + work_bytes


def choose_placement(requested: str, device: torch.device, params: int, block_params: int, dtype_bytes: int,
                     work_bytes: int, folder: str | None = None, source: str = "the model") -> Placement:
    """Decide where the weights live before anything is loaded; refuse with the figures when nothing fits."""
    if requested not in MODES:
        raise ConfigError(f"--offload must be one of {', '.join(MODES)}, got {requested!r}")
    needed = run_bytes(params, block_params, dtype_bytes, work_bytes)
    free = free_memory(device)
    fits = needed <= MEMORY_MARGIN * free
    if requested == "none" or (requested == "auto" and fits) or (requested == "cpu" and device.type == "cpu"):
        if not fits and requested != "none":
            return _offload_or_refuse("disk", device, needed, free, params, dtype_bytes, folder, source)
        reason = ("asked for" if requested == "none" else "it fits") if fits else "asked for, although it may not fit"
        if requested == "cpu":
            reason = "the device is the CPU, so --offload cpu keeps everything in memory (use --offload disk)"
        return Placement("memory", str(device), needed, free, reason)
    mode = requested if requested in ("cpu", "disk") else ("cpu" if device.type != "cpu" else "disk")
    return _offload_or_refuse(mode, device, needed, free, params, dtype_bytes, folder, source)


def _offload_or_refuse(mode, device, needed, free, params, dtype_bytes, folder, source) -> Placement:
    weights = params * dtype_bytes
    if mode == "cpu":
        host = free_memory(torch.device("cpu"))
        if 2 * weights <= MEMORY_MARGIN * host:
            return Placement("cpu", str(device), needed, free, "the decoder blocks of both models stay in CPU memory")
        mode = "disk"
    folder = prepare_offload_folder(folder)
    disk_free = shutil.disk_usage(folder).free
    if 2 * weights > disk_free:
        raise ModelLoadError(
            f"{source} does not fit: an in-memory run needs about {gib(needed)} ({gib(free)} free on {device}) and "
            f"offloading it to {folder} needs about {gib(2 * weights)} of disk ({gib(disk_free)} free)")
    return Placement("disk", str(device), needed, free, "the decoder blocks are read from their safetensors files "
                     "one at a time; compressed blocks are written beside them", folder)


def prepare_offload_folder(folder: str | None) -> str:
    """The disk-offload folder, created and checked writable (a clear error before any work starts)."""
    path = Path(folder) if folder else cache_dir("offload")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"--offload-folder {path} is not writable ({err.strerror or err})") from err
    return str(path)


def device_map(model: nn.Module, blocks_path: str, placement: Placement) -> dict | None:
    """accelerate device map: every decoder block on the CPU or on disk, every other module on the device.
    `model` may be a meta-device model (only its module tree is read)."""
    if not placement.offloaded:
        return None
    home = "cpu" if placement.mode == "cpu" else "disk"
    out = {}

    def walk(prefix: str, module: nn.Module):
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == blocks_path:
                out.update({f"{path}.{i}": home for i in range(len(child))})
            elif blocks_path.startswith(path + "."):
                walk(path + ".", child)
            else:
                out[path] = placement.device

    walk("", model)
    return out


# ---------------------------------------------------------------------------------------------
# Blocks one at a time
# ---------------------------------------------------------------------------------------------

def is_offloaded(module: nn.Module) -> bool:
    return any(has_offloaded_params(m) for m in module.modules())


@contextlib.contextmanager
def onloaded(module: nn.Module):
    """Every offloaded tensor of `module` materialised on its execution device for the duration, however
    many forwards run inside (the hooks stop loading and unloading until the context ends)."""
    hooked = [m for m in module.modules() if has_offloaded_params(m)]
    try:
        for m in hooked:
            m._hf_hook.pre_forward(m)
            m._hf_hook.offload = False
        yield module
    finally:
        for m in hooked:
            m._hf_hook.offload = True
            m._hf_hook.post_forward(m, None)


def without_hooks(module: nn.Module) -> nn.Module:
    """Remove accelerate hooks (from a copy of an onloaded block, which must own its tensors)."""
    return remove_hook_from_module(module, recurse=True)


def store_block(block: nn.Module, placement: Placement | None, name: str) -> nn.Module:
    """Offload a finished compressed block like the original ones: its tensors to CPU memory or to a
    safetensors file in the offload folder, materialised again only while it computes."""
    if placement is None or not placement.offloaded:
        return block
    weights = None
    if placement.mode == "disk":
        path = os.path.join(placement.folder, f"compressed-{uuid.uuid4().hex}-{name}.safetensors")
        tensors = {k: v.detach().contiguous().cpu() for k, v in block.state_dict().items()}
        save_file(tensors, path)
        weakref.finalize(block, _remove, path)   # the file lives as long as the block that reads it
        weights = OffloadedWeightsLoader(index={k: {"safetensors_file": path, "weight_name": k} for k in tensors})
    hook = AlignDevicesHook(execution_device=placement.device, offload=True, weights_map=weights,
                            place_submodules=True)
    return add_hook_to_module(block, hook)


def cpu_tensors(model: nn.Module, dtype: torch.dtype | None = None):
    """(name, tensor on the CPU) for every state-dict entry, onloading one offloaded module at a time."""
    for key, value in model.state_dict().items():
        if value.device.type != "meta":
            yield key, _cast(value.detach().cpu(), dtype)
    for prefix, module in model.named_modules():
        if prefix and has_offloaded_params(module):
            with onloaded(module):
                for key, value in module.state_dict().items():
                    yield f"{prefix}.{key}", _cast(value.detach().cpu(), dtype)


def release_memory(full: bool = True) -> None:
    """Give freed memory back: collect reference cycles (module copies and offload hooks form some, and
    can keep a block's tensors alive until the next collection), return the C heap's free pages to the
    system (glibc) and empty the accelerator's cache. Called between blocks. A full collection walks
    every object of the process (0.26 s a block on an H100 machine, 8 of svd-llm's 17 s on SmolLM2's
    shape), so only an offloaded run, whose peak memory is the point, asks for one; others collect
    the young generations, where this block's cycles are."""
    gc.collect(2 if full else 1)
    _glibc("malloc_trim", 0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MMAP_THRESHOLD = 4 << 20   # bytes: allocations from this size up get their own mapping


def fixed_mmap_threshold() -> None:
    """Make glibc serve every allocation of MMAP_THRESHOLD or more from its own mapping, returned to the
    system when freed. By default glibc raises that threshold each time such a block is freed, so an
    offloaded model's block weights and the evaluation's 400 MB logits end up in one heap that only
    grows: measured on SmolLM2 with --offload disk, peak RSS 3.3-4.9 GB by default, 2.0 GB with this
    (the in-memory run: 2.7 GB). Only offloaded runs ask for it; elsewhere (not glibc) it does nothing."""
    _glibc("mallopt", -3, MMAP_THRESHOLD)   # -3: M_MMAP_THRESHOLD


def _glibc(function: str, *args) -> None:
    """Call a glibc allocator function; on another C library, nothing."""
    try:
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)
    except (OSError, AttributeError):
        pass


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _cast(t: torch.Tensor, dtype):
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t
