"""The two-stream pipeline on tiny random models of several architectures."""
import contextlib
import threading

import pytest
import torch
from conftest import ARCHITECTURES, tiny_ids, tiny_model

import svd_explorer.compress.pipeline as pipeline
from svd_explorer.compress.allocation import AllocationContext, get_allocation
from svd_explorer.compress.methods import get_method
from svd_explorer.compress.methods.svd_llm import SVDLLM
from svd_explorer.compress.pipeline import Cancelled, compress_model
from svd_explorer.compress.refine import RefineData, RefineSettings, refine_block
from svd_explorer.compress.stats import Accumulator
from svd_explorer.model.architectures import ARCHITECTURES as TABLE
from svd_explorer.model.blocks import find_layout
from svd_explorer.model.discovery import discover
from svd_explorer.model.lowrank import LowRankLinear


def run(model, method, ratio=0.3, ids=None, **kw):
    return compress_model(model, method, ratio, tiny_ids() if ids is None else ids, batch_size=4,
                          precision="float32", **kw)


def last_blocks(model, ratio, blocks):
    """Ranks of the depth allocation that compresses only the last `blocks` blocks (ResSVD's rule)."""
    layout = find_layout(model)
    return get_allocation("depth", blocks=str(blocks)).allocate(AllocationContext(layout, ratio, None)).ranks


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_layout_table_agrees_with_discovery_on_a_tiny_copy(arch):
    model = tiny_model(arch)
    layout = find_layout(model)
    assert layout.source == "table"
    found = discover(model)
    assert found.path == layout.blocks_path and found.groups == (TABLE[arch][1],) * len(layout.blocks)
    assert len(layout.projections) == 3 * sum(len(g) for g in layout.groups)
    # the LM head and embeddings are never compressible
    assert not any("lm_head" in p.name or "embed" in p.name for p in layout.projections)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("method", ["svd-llm", "saes-svd"])
def test_compression_removes_the_budgeted_parameters_on_every_architecture(arch, method):
    model = tiny_model(arch)
    before = model(tiny_ids(2)).logits
    compressed, result = run(model, get_method(method))
    layout = find_layout(model)
    expected = sum(r.rank * (r.shape[0] + r.shape[1]) for r in result.layers)
    assert result.linear_params_after == expected <= 0.7 * result.linear_params_before
    assert expected + max(p.rank_cost for p in layout.projections) > 0.7 * result.linear_params_before
    assert result.params_before - result.params_after == result.linear_params_before - expected
    assert sum(isinstance(m, LowRankLinear) for m in compressed.modules()) == len(layout.projections)
    assert len(result.blocks) == 3 and len(result.layers) == len(layout.projections)
    out = compressed(tiny_ids(2)).logits
    assert out.shape == before.shape and torch.isfinite(out).all()
    assert torch.equal(model(tiny_ids(2)).logits, before)  # the original model is untouched


class Recorder(SVDLLM):
    """svd-llm on the compressed stream, recording the statistics each projection was fitted on."""

    def validate(self):
        self.stats = frozenset({"f", "c", "x"})
        self.seen = {}

    def fit(self, weight, stats, budget, name):
        self.seen[name] = stats
        return super().fit(weight, stats, budget, name)


def gram_by_hooks(model, ids, names):
    """G = XᵀX / T of every named module's input, recorded by forward hooks on a plain forward."""
    grams, inputs = {}, {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, []).append(a[0]))
               for n in names]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    for n, xs in inputs.items():
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs]).double()
        grams[n] = x
    return grams


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
@pytest.mark.parametrize("cache", [True, False])
def test_two_streams_give_each_projection_its_real_inputs(arch, cache, monkeypatch):
    """X_c must be what the projection receives in the final compressed model and X_f what it receives
    in the original one; checked against plain forward hooks on both models."""
    if not cache:
        monkeypatch.setattr(pipeline, "CACHE_LIMIT_BYTES", 0)
    model, ids = tiny_model(arch), tiny_ids(6, 16)
    method = Recorder(stream="compressed")
    compressed, _ = run(model, method, ids=ids)
    names = list(method.seen)
    x_c = gram_by_hooks(compressed, ids, names)
    x_f = gram_by_hooks(model, ids, names)
    for name, stats in method.seen.items():
        t = x_c[name].shape[0]
        assert torch.allclose(stats.gram_c, x_c[name].T @ x_c[name] / t, rtol=1e-4, atol=1e-6), name
        assert torch.allclose(stats.gram_f, x_f[name].T @ x_f[name] / t, rtol=1e-4, atol=1e-6), name
        assert torch.allclose(stats.cross, x_f[name].T @ x_c[name] / t, rtol=1e-4, atol=1e-6), name
    # after the first block the two streams really differ
    last = names[-1]
    assert not torch.allclose(method.seen[last].gram_c, method.seen[last].gram_f)


def test_depth_error_starts_at_zero_for_intact_blocks_and_grows_once_compressed():
    model = tiny_model("llama")
    _, result = run(model, get_method("ressvd"), ratio=0.2, ranks=last_blocks(model, 0.2, 1))
    assert [b.compressed for b in result.blocks] == [False, False, True]
    assert result.blocks[0].rel_error == 0 and result.blocks[1].rel_error == 0 < result.blocks[2].rel_error


def test_ressvd_removes_the_same_share_of_parameters_from_fewer_blocks():
    model = tiny_model("llama")
    _, uniform = run(model, get_method("svd-llm"), ratio=0.3)
    _, last = run(model, get_method("ressvd"), ratio=0.3, ranks=last_blocks(model, 0.3, 2))
    removed = lambda r: 1 - r.linear_params_after / r.linear_params_before  # noqa: E731
    # the allocation spends what rounding leaves: within one rank of the smallest projection of the ratio
    assert 0.3 <= removed(uniform) < 0.3 + 48 / 27648 and 0.3 <= removed(last) < 0.3 + 48 / 27648
    ranks = {r.name: (r.rank, r.residual_rank) for r in last.layers}
    assert all(".0." not in n for n in ranks) and all(k2 >= 0 for _, k2 in ranks.values())


def test_cancelling_stops_between_projections_and_leaves_the_original_intact():
    model = tiny_model("llama")
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    cancel = threading.Event()
    seen = []

    def callback(kind, data):
        if kind == "projection":
            seen.append(data["name"])
            cancel.set()

    with pytest.raises(Cancelled):
        run(model, get_method("svd-llm"), callback=callback, cancel=cancel)
    assert len(seen) == 1
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())


def test_refinement_never_increases_the_block_loss_and_usually_lowers_it():
    model = tiny_model("llama")
    refine = RefineSettings(steps=30, lr=3e-3, batch=2)
    _, result = run(model, get_method("aa-svd"), ratio=0.5, ids=tiny_ids(8, 16), refine=refine)
    refines = [b.refine for b in result.blocks]
    assert all(r["loss_after"] <= r["loss_before"] for r in refines)
    assert any(r["loss_after"] < r["loss_before"] and not r["restored"] for r in refines)
    assert all(len(r["losses"]) == 30 for r in refines)


def test_refinement_that_makes_things_worse_is_rolled_back():
    model = tiny_model("llama")
    absurd = RefineSettings(steps=5, lr=10.0)
    compressed, result = run(model, get_method("aa-svd"), ratio=0.5, refine=absurd)
    plain, _ = run(model, get_method("aa-svd"), ratio=0.5)
    for record in result.blocks:
        assert record.refine["restored"] and record.refine["loss_after"] == record.refine["loss_before"]
    ids = tiny_ids(2)
    assert torch.allclose(compressed(ids).logits, plain(ids).logits, atol=1e-5)


def test_refinement_hands_back_the_tuned_blocks_outputs_so_the_stream_is_not_run_again():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 8))
    inputs, targets = [torch.randn(2, 5, 8) for _ in range(3)], [torch.randn(2, 5, 8) for _ in range(3)]
    data = RefineData(inputs, targets, [lambda b, x: b(x)] * 3, lambda: None, contextlib.nullcontext())
    record, outputs = refine_block(block, data, RefineSettings(steps=10, lr=1e-2, batch=2))
    assert not record["restored"]
    with torch.no_grad():
        assert all(torch.equal(out, block(x)) for out, x in zip(outputs, inputs))
    assert record["checked_windows"] == 6                # fewer than CHECK_WINDOWS: all of them
    record, outputs = refine_block(block, data, RefineSettings(steps=5, lr=100.0, batch=2))
    assert record["restored"] and outputs is None        # restored: the caller runs the block again


def test_the_restore_check_reads_the_leading_batches_holding_eight_windows():
    torch.manual_seed(0)
    block = torch.nn.Linear(8, 8)
    inputs, targets = [torch.randn(4, 5, 8) for _ in range(3)], [torch.randn(4, 5, 8) for _ in range(3)]
    data = RefineData(inputs, targets, [lambda b, x: b(x)] * 3, lambda: None, contextlib.nullcontext())
    with torch.no_grad():
        expected = sum(float(((block(x) - y) ** 2).sum()) for x, y in zip(inputs[:2], targets[:2])) / (2 * 4 * 5 * 8)
    record, _ = refine_block(block, data, RefineSettings(steps=3, lr=1e-3, batch=4))
    assert record["checked_windows"] == 8 and record["loss_before"] == pytest.approx(expected, rel=1e-6)


class WholeCall:
    """A block call that needs no per-row arguments (pipeline.BlockCall cuts masks and positions in rows())."""

    def __call__(self, block, x):
        return block(x)

    def rows(self, start, stop, total):
        return self


def test_a_refinement_step_spans_batches_when_it_asks_for_more_windows_than_one_holds():
    """The paper preset asks 32 windows a step from calibration batches of 8: each step was cut to 8. One step
    over four batches must equal one step over the same 32 windows held in one batch."""
    torch.manual_seed(0)
    inputs, targets = [torch.randn(8, 5, 8) for _ in range(4)], [torch.randn(8, 5, 8) for _ in range(4)]
    calls = [WholeCall()] * 4
    split = RefineData(inputs, targets, calls, lambda: None, contextlib.nullcontext())
    joined = RefineData([torch.cat(inputs)], [torch.cat(targets)], calls[:1], lambda: None, contextlib.nullcontext())
    assert [sum(c[0].shape[0] for c in step) for step in split.steps(32)] == [32]
    assert [len(step) for step in split.steps(8)] == [1] * 4                  # a step within one batch: one chunk
    rows = [[c[0].shape[0] for c in step] for step in split.steps(12)]
    assert rows == [[8, 4], [4, 8], [8]]                                     # cut at step boundaries, never more
    blocks = [torch.nn.Linear(8, 8) for _ in range(2)]
    blocks[1].load_state_dict(blocks[0].state_dict())
    records = [refine_block(b, d, RefineSettings(steps=1, lr=1e-2, batch=32))[0]
               for b, d in zip(blocks, (split, joined))]
    assert records[0]["losses"][0] == pytest.approx(records[1]["losses"][0], rel=1e-6)
    assert not records[0]["restored"] and not records[1]["restored"]
    assert torch.allclose(blocks[0].weight, blocks[1].weight, atol=1e-6)


def test_statistics_stay_float32_products_when_the_block_runs_in_bfloat16_autocast():
    """The original-stream Gram matrices were bfloat16 products under the passes' autocast (rel. error ~1e-3, an
    indefinite Gram on ill-conditioned activations); the compressed stream's were not."""
    torch.manual_seed(0)
    x = torch.randn(4, 64, 48) * torch.logspace(0, -3, 48)
    exact = (x.reshape(-1, 48).double().mT @ x.reshape(-1, 48).double()) / 256
    acc = Accumulator(frozenset({"f"}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        acc.add(x, None)
    gram = acc.finish().gram_f
    assert ((gram - exact).norm() / exact.norm()).item() < 1e-6


def test_an_already_compressed_model_is_refused_clearly():
    compressed, _ = run(tiny_model("llama"), get_method("svd"))
    assert not find_layout(compressed).projections and len(find_layout(compressed).factorised) == 21
    with pytest.raises(ValueError, match="compressed already"):
        run(compressed, get_method("svd"))


def test_unknown_architectures_are_traced_or_refused_by_name():
    model = tiny_model("llama")
    model.config.model_type = "my-llama"
    layout = find_layout(model)
    assert layout.source == "traced" and layout.groups == TABLE["llama"][1]

    class NoBlocks(torch.nn.Module):
        config = type("C", (), {"model_type": "strange", "num_hidden_layers": 4})()

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(Exception, match="could not find the decoder blocks"):
        find_layout(NoBlocks())


def test_every_projection_record_has_what_the_app_draws():
    _, result = run(tiny_model("qwen2"), get_method("saes-svd"))
    record = result.to_dict()
    layer = record["layers"][0]
    for key in ("name", "shape", "rank", "rel_error", "spectrum_raw", "spectrum_truncated", "truncated", "whitening"):
        assert layer[key] is not None, key
    assert len(layer["spectrum_raw"]) == min(layer["shape"]) and layer["extra"]["aces"]["points"]
    assert [d["block"] for d in record["depth_error"]] == [0, 1, 2]
