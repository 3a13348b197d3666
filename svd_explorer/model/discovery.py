"""Where a model keeps its decoder blocks and which projections each block holds, found by running a tiny copy.

The model at hand may live on the meta device (only its config is known yet), be offloaded, or be too large
to run for a probe, and mask code of several families reads tensor values, which meta tensors refuse. So a
copy of the same class is built on the CPU from the config shrunk by tiny.py (same module names, a few
thousand parameters) and run on a short text. Hooks on every nn.Linear / Conv1D record, per block, the order
the projections run in and which of them read the very same input tensor: those form one group, whose
statistics the pipeline collects once. When the tiny copy cannot be built, a model with real weights is run
itself; a model on the meta device then falls back to a static layout (each projection its own group, in
the order the block registers them), which is never wrong, only slower.

A projection is left dense, with the reason kept, when it does not run on text (cross-attention, a vision
tower), runs on only the tokens routed to it (an expert of a mixture), routes tokens (its outputs are the
experts), is used by several blocks, or is narrow (a gate per head: nothing worth a rank cut).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .lowrank import LowRankLinear, is_projection, set_submodule
from .tiny import EXPERT_COUNTS, tiny_config

PROBE_SHAPE = (2, 16)   # sequences x tokens of the probe text: enough tokens that no expert gets them all
NARROW = 8              # a projection with fewer inputs or outputs (in the tiny copy) is left dense: a gate
                        # per head, AltUp's coefficients; tiny.py shrinks no width that matters below this


@dataclass(frozen=True)
class Discovery:
    path: str                                          # the decoder blocks, e.g. model.layers
    groups: tuple[tuple[tuple[str, ...], ...], ...]    # per block: its projection groups in execution order
    left_dense: dict[int, dict[str, str]] = field(default_factory=dict)   # per block: projection -> why
    source: str = "traced"                             # "traced" (a forward) or "static" (the registration order)


@dataclass
class _Calls:
    """What the hooks saw during one forward of the probe."""

    order: dict[int, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)   # block -> (name, input)
    lists_run: dict[int, set] = field(default_factory=dict)                           # module list id -> indices


def discover(model: nn.Module) -> Discovery:
    """The blocks and groups of `model` from a tiny copy; a real-weights model is run itself if that fails."""
    name = _model_type(model)
    if not _module_lists(model):
        raise UnsupportedModelError(f"{name}: could not find the decoder blocks (the model holds no nn.ModuleList)")
    try:
        probe = probe_model(model)
        pristine = copy.deepcopy(probe)   # a model may change itself on its first call (RWKV rescales weights)
    except Exception as err:  # noqa: BLE001 - a config the shrinking does not fit fails in many ways
        return _without_probe(model, f"a tiny copy could not be built ({type(err).__name__}: {_first_line(err)})")
    try:
        found = trace(probe, _depth(model))
    except UnsupportedModelError:
        raise
    except Exception as err:  # noqa: BLE001 - the tiny copy's forward may fail where the real one does not
        return _without_probe(model, f"a tiny copy did not run ({type(err).__name__}: {_first_line(err)})")
    return _checked(model, factorisable(pristine, found))


def probe_model(model: nn.Module) -> nn.Module:
    """A CPU copy of the model's class built from its config shrunk, seeded so that every probe is the same."""
    config = tiny_config(model.config)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(0)
        probe = type(model)._from_config(config, dtype=torch.float32)
    return probe.eval().requires_grad_(False)


def _without_probe(model: nn.Module, reason: str) -> Discovery:
    """The model itself traced when it has weights (refused when it does not run on text), else a static layout."""
    if not _has_weights(model):
        return static_discovery(model, reason)
    try:
        return trace(model, _depth(model))
    except UnsupportedModelError:
        raise
    except Exception as err:  # noqa: BLE001 - a model that cannot run on token ids alone cannot be calibrated
        raise UnsupportedModelError(f"{_model_type(model)}: the model does not run on token ids alone "
                                    f"({type(err).__name__}: {_first_line(err)})") from err


def _has_weights(model: nn.Module) -> bool:
    return any(p.device.type != "meta" for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------------

def trace(model: nn.Module, depth: int | None) -> Discovery:
    """Run `model` on a probe text and read its blocks, groups and dense projections off the hooks."""
    lists = _module_lists(model)
    calls = _hooked_forward(model, lists)
    path, blocks = _ran_blocks(lists, calls, depth, _model_type(model))
    experts = _expert_count(getattr(model, "config", None))
    per_block = [_block_groups(block, calls.order.get(id(block), []), experts, _shared(blocks, b))
                 for b, block in enumerate(blocks)]
    return Discovery(path, tuple(g for g, _ in per_block), {b: dense for b, (_, dense) in enumerate(per_block)})


def _hooked_forward(model: nn.Module, lists: dict[str, nn.ModuleList]) -> _Calls:
    calls = _Calls()
    handles = _hook_lists(lists, calls) + _hook_projections(_projections_by_list(lists), calls)
    try:
        with torch.no_grad():
            _forward(model)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _forward(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    vocab = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "vocab_size", 0)
    ids = torch.arange(PROBE_SHAPE[0] * PROBE_SHAPE[1]).reshape(PROBE_SHAPE) % max(int(vocab or 0), 2)
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    try:
        model(input_ids=ids.to(device), use_cache=False)
    except TypeError:   # a model whose forward takes no use_cache
        model(input_ids=ids.to(device))


def _module_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0}


def _projections_by_list(lists: dict[str, nn.ModuleList]) -> dict[nn.Module, dict[nn.Module, str]]:
    """Every child of every module list -> its projections and their names inside it."""
    out = {}
    for module_list in lists.values():
        for child in module_list:
            out[child] = {m: n for n, m in child.named_modules() if is_projection(m) or _is_factorised(m)}
    return out


def _is_factorised(module: nn.Module) -> bool:
    return isinstance(module, LowRankLinear)


def _hook_lists(lists: dict[str, nn.ModuleList], calls: _Calls) -> list:
    """Which children of each module list run, to tell the decoder blocks from a vision tower's."""
    handles = []
    for module_list in lists.values():
        for i, child in enumerate(module_list):
            handles.append(child.register_forward_pre_hook(
                lambda _m, _a, key=id(module_list), i=i: calls.lists_run.setdefault(key, set()).add(i)))
    return handles


def _hook_projections(projections: dict, calls: _Calls) -> list:
    handles = []
    for child, names in projections.items():
        for module, name in names.items():
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, key=id(child), name=name: calls.order.setdefault(key, []).append(
                    (name, args[0] if args else None))))
    return handles


def _ran_blocks(lists, calls: _Calls, depth: int | None, name: str) -> tuple[str, nn.ModuleList]:
    """The module list whose every child ran on the probe text (the decoder blocks), the largest when several;
    one of the model's depth is preferred."""
    ran = [(path, m) for path, m in lists.items() if len(calls.lists_run.get(id(m), ())) == len(m)]
    deep = [(path, m) for path, m in ran if len(m) == depth]
    candidates = deep or ran
    if not candidates:
        raise UnsupportedModelError(f"{name}: could not find the decoder blocks (no nn.ModuleList of length "
                                    f"num_hidden_layers={depth} runs on a text input)")
    return max(candidates, key=lambda c: sum(p.numel() for p in c[1].parameters()))


def _shared(blocks: nn.ModuleList, index: int) -> set[int]:
    """Modules of block `index` that other blocks hold too, or whose weights they hold (Zamba ties one
    transformer's weights across its hybrid layers)."""
    modules = {id(m) for b, block in enumerate(blocks) if b != index for m in block.modules()}
    tensors = {id(p) for b, block in enumerate(blocks) if b != index for p in block.parameters()}
    return {id(m) for m in blocks[index].modules()
            if id(m) in modules or any(id(p) in tensors for p in m.parameters(recurse=False))}


def _block_groups(block: nn.Module, order, experts: int | None, shared: set[int]):
    """(groups of the projections that run on every token, {projection: why it stays dense})."""
    names = {n: m for n, m in block.named_modules() if is_projection(m) or _is_factorised(m)}
    firsts = _first_calls(order)
    dense = {n: "does not run on a text input" for n in names if n not in firsts}
    kept = []
    for name, x in firsts.items():
        reason = _dense_reason(name, names[name], x, experts, id(names[name]) in shared)
        if reason:
            dense[name] = reason
        else:
            kept.append((name, x))
    return shared_input_groups(kept), dense


def _first_calls(order: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each projection's first input, in the order they first ran (some families run a block twice)."""
    firsts = {}
    for name, x in order:
        firsts.setdefault(name, x)
    return firsts


def _dense_reason(name: str, module: nn.Module, x, experts: int | None, shared: bool) -> str | None:
    """Why a projection that ran stays dense, or None: a router is known by its outputs (one per expert) or
    by its name (Zaya routes through a small MLP)."""
    out_features, in_features = _shape(module)
    if shared:
        return "is shared by several blocks"
    if not isinstance(x, torch.Tensor):
        return "is called without a positional input"
    if x.numel() // max(in_features, 1) < PROBE_SHAPE[0] * PROBE_SHAPE[1]:
        return "runs on the tokens routed to it (an expert of a mixture)"
    if (experts and out_features == experts) or any("router" in part for part in name.split(".")):
        return "routes tokens to the experts"
    if min(out_features, in_features) < NARROW:
        return f"has fewer than {NARROW} inputs or outputs"
    return None


def _shape(module: nn.Module) -> tuple[int, int]:
    if _is_factorised(module):
        return module.out_features, module.in_features
    weight = module.weight
    return (weight.shape[0], weight.shape[1]) if isinstance(module, nn.Linear) else (weight.shape[1], weight.shape[0])


def shared_input_groups(calls: list[tuple[str, torch.Tensor]]) -> tuple[tuple[str, ...], ...]:
    """Consecutive projections that read the very same tensor form one group."""
    groups: list[list[str]] = []
    last_input = None
    for name, x in calls:
        if groups and x is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = x
    return tuple(tuple(g) for g in groups)


# ---------------------------------------------------------------------------------------------
# Projections the model's own code needs dense
# ---------------------------------------------------------------------------------------------

def factorisable(probe: nn.Module, found: Discovery) -> Discovery:
    """`found` less the projections the model cannot run factorised: some families read a projection's
    .weight outside its forward (for a dtype, to split it, to rescale it on the first call). A copy of a
    fresh tiny model is run with every kept projection factorised; when that fails, one name at a time
    finds the culprits."""
    names = sorted({n for groups in found.groups for group in groups for n in group})
    if not names or _runs_factorised(probe, found.path, names):
        return found
    refused = {n for n in names if not _runs_factorised(probe, found.path, [n])}
    reason = "is read as a plain nn.Linear by the model's code"
    groups = tuple(tuple(g for g in (tuple(n for n in group if n not in refused) for group in block) if g)
                   for block in found.groups)
    blocks = probe.get_submodule(found.path)
    dense = {b: {**found.left_dense.get(b, {}), **{n: reason for n in refused if _holds(block, n)}}
             for b, block in enumerate(blocks)}
    return Discovery(found.path, groups, dense, found.source)


def _runs_factorised(probe: nn.Module, path: str, names: list[str]) -> bool:
    """Whether a copy of `probe` runs with the projections `names` of every block factorised (at rank 1)."""
    work = copy.deepcopy(probe)
    generator = torch.Generator().manual_seed(0)
    for block in work.get_submodule(path):
        for n in names:
            if _holds(block, n):
                set_submodule(block, n, _rank_one(block.get_submodule(n), generator))
    try:
        with torch.no_grad():
            _forward(work)
        return True
    except Exception:  # noqa: BLE001 - any failure means the factorised layer does not fit there
        return False


def _rank_one(module: nn.Module, generator: torch.Generator) -> LowRankLinear:
    out_features, in_features = _shape(module)
    bias = getattr(module, "bias", None)
    return LowRankLinear.from_factors(0.1 * torch.randn(out_features, 1, generator=generator),
                                      0.1 * torch.randn(1, in_features, generator=generator), bias,
                                      dtype=torch.float32)


def _holds(block: nn.Module, name: str) -> bool:
    try:
        return is_projection(block.get_submodule(name))
    except AttributeError:
        return False


# ---------------------------------------------------------------------------------------------
# Checks and the static fallback
# ---------------------------------------------------------------------------------------------

def _checked(model: nn.Module, found: Discovery) -> Discovery:
    """The tiny copy's blocks must be the model's: same path, same number."""
    try:
        blocks = model.get_submodule(found.path)
    except AttributeError:
        blocks = None
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != len(found.groups):
        raise UnsupportedModelError(f"{_model_type(model)}: a tiny copy keeps its blocks at {found.path!r}, which "
                                    f"the model does not hold as a list of {len(found.groups)}")
    return found


def static_discovery(model: nn.Module, reason: str) -> Discovery:
    """Each projection its own group in the order the block registers it: right for any block, only slower
    (one statistics pass per projection instead of per shared input)."""
    lists = _module_lists(model)
    depth = _depth(model)
    candidates = [(p, m) for p, m in lists.items() if depth is None or len(m) == depth] or list(lists.items())
    path, blocks = max(candidates, key=lambda c: sum(p.numel() for p in c[1].parameters()))
    experts = _expert_count(getattr(model, "config", None))
    groups = tuple(_static_groups(block, experts) for block in blocks)
    if not any(groups):
        raise UnsupportedModelError(f"{_model_type(model)}: could not find the layout ({reason})")
    return Discovery(path, groups, {}, source="static")


def _static_groups(block: nn.Module, experts: int | None) -> tuple[tuple[str], ...]:
    """The projections a trace would most likely keep: not narrow, not a router, not an expert's."""
    return tuple((n,) for n, m in block.named_modules()
                 if (is_projection(m) or _is_factorised(m)) and min(_shape(m)) >= NARROW
                 and not (experts and _shape(m)[0] == experts) and "router" not in n and ".experts." not in f".{n}.")


def _depth(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _expert_count(config) -> int | None:
    """How many experts the model's mixtures hold (tiny.EXPERTS in a tiny copy): a router has that many outputs."""
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    counts = [getattr(text, key, None) for key in EXPERT_COUNTS]
    return next((c for c in counts if isinstance(c, int) and not isinstance(c, bool) and c > 0), None)


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
