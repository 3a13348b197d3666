"""Allocations: every one meets the budget exactly, on several architectures and ratios; the searches and
the water-filling do what they claim on data where the answer is known."""
import math

import pytest
import torch
from conftest import tiny_model

from svd_explorer.compress.allocation import (
    ALLOCATIONS,
    AllocationContext,
    get_allocation,
    kept_params,
    max_rank,
    target_params,
)
from svd_explorer.compress.allocation.depth import default_block_count, last_k_ratios, ramp_ratios
from svd_explorer.compress.allocation.loss import greedy_ranks, whitened_loss
from svd_explorer.compress.allocation.sensitivity import (
    dropped_share,
    extrapolated_row,
    parse_measure,
    search_threshold,
)
from svd_explorer.compress.methods import get_method, list_methods
from svd_explorer.model.blocks import Layout, Projection, find_layout
from svd_explorer.model.lowrank import BudgetError


def fake_spectra(layout, seed=0):
    """Unequal spectra: some projections decay fast (cheap to compress), others are flat."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for p in layout.projections:
        decay = float(torch.rand(1, generator=g)) * 0.4
        out[p.name] = torch.exp(-decay * torch.arange(min(p.out_features, p.in_features), dtype=torch.float64)) * \
            (1 + 10 * float(torch.rand(1, generator=g)))
    return out


def context(layout, ratio, seed=0):
    spectra = fake_spectra(layout, seed)
    table = {p.name: {f: 10 + (1 - f) * (1 + p.block) * (2 if "mlp" in p.name else 1) for f in (0.4, 0.6, 0.8, 1.0)}
             for p in layout.projections}
    return AllocationContext(layout, ratio, get_method("svd-llm"), spectra=lambda: spectra,
                             trial=lambda ranks: kept_params(layout, ranks) / 1e4 + len([r for r in ranks.values()
                                                                                         if r is None]),
                             sensitivity=lambda fractions, score="perplexity": {
                                 n: {f: v for f, v in row.items() if f in fractions} for n, row in table.items()},
                             first_order=lambda: fake_scores(layout, seed))


def fake_scores(layout, seed=0):
    """Signed first-order scores, larger for the leading components, as gradients near a minimum give."""
    g = torch.Generator().manual_seed(seed + 100)
    return {p.name: torch.randn(min(p.out_features, p.in_features), generator=g, dtype=torch.float64) *
            torch.linspace(2.0, 0.1, min(p.out_features, p.in_features), dtype=torch.float64) + 0.05
            for p in layout.projections}


@pytest.mark.parametrize("name", list(ALLOCATIONS))
@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "opt"])
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_every_allocation_meets_the_budget_exactly(name, arch, ratio):
    """Kept parameters never exceed (1 − ratio) of the projections' and what is left could not buy one more
    unit of rank anywhere: the ratio is met as closely as ranks allow."""
    layout = find_layout(tiny_model(arch))
    options = {"fractions": "0.4,0.6,0.8"} if name == "sensitivity" else {}
    ranks = get_allocation(name, **options).allocate(context(layout, ratio)).ranks
    target = target_params(layout, ratio)
    kept = kept_params(layout, ranks)
    open_ = [p for p in layout.projections if ranks[p.name] is not None and ranks[p.name] < max_rank(p)]
    assert kept <= target
    assert not open_ or target - kept < min(p.rank_cost for p in open_)
    assert all(r is None or 1 <= r <= max_rank(p) for p in layout.projections for r in [ranks[p.name]])


def test_loss_allocation_beats_uniform_on_the_total_truncation_loss():
    """Water-filling on unequal spectra keeps strictly less summed whitened loss than the uniform split."""
    layout = find_layout(tiny_model("llama"))
    for seed in range(3):
        ctx = context(layout, 0.3, seed)
        spectra = ctx.spectra()
        uniform = get_allocation("uniform").allocate(ctx).ranks
        loss = get_allocation("loss", normalize="none", floor=0).allocate(ctx).ranks
        assert whitened_loss(layout, spectra, loss) < 0.9 * whitened_loss(layout, spectra, uniform)


def test_greedy_is_optimal_on_a_small_exhaustive_case():
    """Two projections of equal cost: the greedy choice equals the best of every split of the budget."""
    layout = Layout("blocks", [None], (("a", "b"),), [Projection("a", 0, "a", 0, 8, 8, False),
                                                      Projection("b", 0, "b", 0, 8, 8, False)])
    spectra = {"a": torch.tensor([5.0, 4, 1, 0.5, 0.2, 0.1, 0.05, 0.01], dtype=torch.float64),
               "b": torch.tensor([3.0, 2.9, 2.8, 0.1, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)}
    budget = 6 * 16
    ranks = greedy_ranks(layout, spectra, budget, "none")
    best = min(((ka, budget // 16 - ka) for ka in range(1, 4) if 1 <= budget // 16 - ka <= 3),
               key=lambda s: whitened_loss(layout, spectra, {"a": s[0], "b": s[1]}))
    assert (ranks["a"], ranks["b"]) == best


def test_depth_profiles():
    assert default_block_count(30, 0.2) == 8     # ResSVD's rule: 30 * 0.2 / 8 = 0.75 <= 0.8
    assert last_k_ratios(4, 0.25, 2) == [0.0, 0.0, 0.5, 0.5]
    ramp = ramp_ratios(5, 0.2, 1.0)
    assert ramp[0] == pytest.approx(0.0) and ramp[-1] == pytest.approx(0.4) and sum(ramp) / 5 == pytest.approx(0.2)
    with pytest.raises(BudgetError, match="use at least 2 blocks"):
        last_k_ratios(3, 0.5, 1)


def test_depth_search_picks_the_best_candidate_on_development_text():
    layout = find_layout(tiny_model("llama"))
    scores = []

    def trial(ranks):
        scores.append(sum(r is None for r in ranks.values()))
        return -scores[-1]          # pretend: more dense projections, better development perplexity

    ctx = AllocationContext(layout, 0.3, None, trial=trial)
    allocated = get_allocation("depth", blocks="search").allocate(ctx)
    assert len(scores) >= 2 and allocated.info["choice"] == min(allocated.info["search"],
                                                                key=allocated.info["search"].get)
    assert sum(r is None for r in allocated.ranks.values()) == max(scores)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_has_an_original_stream_form_a_scorer_can_fit(name):
    """Sensitivity candidates are fitted from original-stream statistics only; methods whose form is the
    same (aa-svd and the two-stream methods: SVD-LLM whitening) share one cached table."""
    form = get_method(name).original_stream_form()
    assert not form.sequential
    if name in ("aa-svd", "saes-svd"):
        assert (form.name, form.config) == ("svd-llm", get_method("svd-llm").config)
    elif not get_method(name).sequential:
        assert form.name == name


@pytest.mark.parametrize("name", list_methods())
def test_a_scorers_fit_spectrum_is_the_spectrum_the_method_truncates(name):
    """The sensitivity search's SVDs give the `measure=F` extrapolation its spectra (engine._spectra), so a
    method's original-stream fit must report the singular values its truncated_spectrum describes."""
    from svd_explorer.compress.stats import Statistics

    w, x = torch.randn(12, 10, dtype=torch.float64), torch.randn(10, 40, dtype=torch.float64)
    stats = Statistics.original_only(40, x @ x.T, x.abs().mean(dim=1))
    method = get_method(name)
    method.importance = {"p": torch.rand(10, dtype=torch.float64) + 0.1}       # fwsvd's gradients, made up
    form = method.original_stream_form()
    form.importance = method.importance
    fitted = form.fit(w, stats, form.split(4, 12, 10), "p").spectrum
    assert torch.allclose(fitted, method.truncated_spectrum(w, stats, "p"))


def test_aa_svd_shares_svd_llm_table_because_its_default_fit_is_the_same():
    from svd_explorer.compress.stats import Statistics

    w, x = torch.randn(12, 10, dtype=torch.float64), torch.randn(10, 40, dtype=torch.float64)
    stats = Statistics.original_only(40, x @ x.T, x.abs().mean(dim=1))
    own, shared = get_method("aa-svd"), get_method("aa-svd").original_stream_form()
    assert torch.allclose(own.fit(w, stats, own.split(3, 12, 10), "p").dense(),
                          shared.fit(w, stats, shared.split(3, 12, 10), "p").dense())


def test_sensitivity_threshold_keeps_the_least_sensitive_projections_smallest():
    layout = find_layout(tiny_model("llama"))
    ctx = context(layout, 0.3)
    table = ctx.sensitivity([0.4, 0.6, 0.8])
    threshold, ranks = search_threshold(layout, table, target_params(layout, 0.3))
    assert kept_params(layout, ranks) <= target_params(layout, 0.3)
    first, last = layout.block_projections(0)[0], layout.block_projections(2)[0]
    assert (ranks[first.name] or 1e9) <= (ranks[last.name] or 1e9)   # block 0 is the least sensitive here


def test_a_sensitivity_row_takes_one_svd_per_projection_and_the_same_numbers(monkeypatch):
    """Each projection is cut at every candidate fraction from one SVD (decompositions.LastDecomposition),
    taken from the Gram matrix (linalg.svd_by_gram): the perplexities are those of fresh SVDs of that kind
    bit for bit, and those of LAPACK's SVDs to rounding."""
    from conftest import tiny_ids

    from svd_explorer.cache.statistics import collect
    from svd_explorer.compress import candidates
    from svd_explorer.compress.candidates import DevScorer
    from svd_explorer.compress.decompositions import LastDecomposition, reusing
    from svd_explorer.run.engine import _in_memory

    model = tiny_model("llama")
    statistics = _in_memory(collect(model, tiny_ids(8, 16), 4, "float32"), model)
    scorer = DevScorer(model, tiny_ids(4, 16, seed=1), statistics, get_method("svd-llm"), precision="float32")
    calls = []
    fresh = candidates.svd_by_gram
    monkeypatch.setattr(candidates, "svd_by_gram", lambda m: calls.append(m.shape) or fresh(m))
    table = scorer.sensitivity([0.4, 0.6, 0.8])
    assert len(calls) == len(scorer.layout.projections)
    p = scorer.layout.projections[3]
    for f, ppl in table[p.name].items():
        rank = max(1, int(f * p.dense_params // p.rank_cost))
        with reusing(LastDecomposition(fresh)):
            assert scorer.perplexity({p.name: scorer.factors(p.name, rank)}) == ppl
        assert scorer.perplexity({p.name: scorer.factors(p.name, rank)}) == pytest.approx(ppl, rel=1e-5)


def test_the_kl_score_is_zero_for_the_original_positive_for_a_change_and_is_torch_kl_div():
    """score=kl: the dense model scores exactly its perplexity, any replaced projection more; the summed
    divergence of a window is torch's KL(original ‖ candidate) on the same logits."""
    from conftest import tiny_ids

    from svd_explorer.cache.statistics import collect
    from svd_explorer.compress.candidates import DevScorer, _window_kl
    from svd_explorer.run.engine import _in_memory

    model = tiny_model("llama")
    statistics = _in_memory(collect(model, tiny_ids(8, 16), 4, "float32"), model)
    scorer = DevScorer(model, tiny_ids(4, 16, seed=1), statistics, get_method("svd-llm"), precision="float32")
    assert scorer.divergence({}) == pytest.approx(scorer.dense_perplexity(), rel=1e-5)
    p = scorer.layout.projections[2]
    assert scorer.divergence({p.name: scorer.factors(p.name, 1)}) > scorer.dense_perplexity() * 1.0001
    reference, candidate = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    logp = torch.log_softmax(reference, -1)
    kl, count = _window_kl(candidate, (logp.exp(), (logp.exp() * logp).sum(-1)))
    expected = torch.nn.functional.kl_div(torch.log_softmax(candidate, -1), logp, log_target=True, reduction="sum")
    assert count == 10 and kl == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "opt"])
def test_sensitivity_measured_at_one_fraction_asks_one_forward_per_projection_and_meets_the_budget(arch):
    layout = find_layout(tiny_model(arch))
    ctx, asked = context(layout, 0.3), []
    table = ctx.sensitivity
    ctx.sensitivity = lambda fractions, score: asked.append(fractions) or table(fractions, score)
    ranks = get_allocation("sensitivity", measure="0.6").allocate(ctx).ranks
    assert asked == [[0.6, 1.0]]            # the measured fraction and the dense model, nothing else
    target, kept = target_params(layout, 0.3), kept_params(layout, ranks)
    open_ = [p for p in layout.projections if ranks[p.name] is not None and ranks[p.name] < max_rank(p)]
    assert kept <= target and (not open_ or target - kept < min(p.rank_cost for p in open_))


def test_extrapolation_goes_through_the_measurement_and_grows_with_the_energy_dropped():
    p = Projection("a", 0, "a", 0, 16, 16, False)
    spectrum = torch.tensor([4.0, 3, 2, 1, 0.5, 0.25, 0.1, 0.05], dtype=torch.float64)
    row = extrapolated_row(p, spectrum, measured={0.5: 12.0}, dense=10.0, fractions=[0.25, 0.5, 0.75])
    assert row[0.5] == pytest.approx(12.0)
    assert row[0.25] > row[0.5] > row[0.75] > 10.0
    assert math.log(row[0.25] / 10) / math.log(row[0.5] / 10) == pytest.approx(
        dropped_share(p, spectrum, 0.25) / dropped_share(p, spectrum, 0.5))
    flat = extrapolated_row(p, spectrum, measured={0.5: 10.0}, dense=10.0, fractions=[0.25, 0.75])
    assert flat == {0.25: 10.0, 0.75: 10.0}   # compressing it changed nothing measurable: it costs nothing


def test_two_measurements_are_interpolated_between_and_each_is_kept():
    """measure=0.25,0.75: both measured values come back, a fraction between lies between them on the log scale
    (linear in the dropped share), and one beyond the smaller keeps that point's proportion."""
    p = Projection("a", 0, "a", 0, 16, 16, False)
    spectrum = torch.tensor([4.0, 3, 2, 1, 0.5, 0.25, 0.1, 0.05], dtype=torch.float64)
    row = extrapolated_row(p, spectrum, measured={0.25: 40.0, 0.75: 11.0}, dense=10.0,
                           fractions=[0.125, 0.25, 0.5, 0.75])
    assert row[0.25] == pytest.approx(40.0) and row[0.75] == pytest.approx(11.0)
    share = {f: dropped_share(p, spectrum, f) for f in (0.125, 0.25, 0.5, 0.75)}
    between = (share[0.5] - share[0.75]) / (share[0.25] - share[0.75])
    assert math.log(row[0.5] / 10) == pytest.approx(math.log(1.1) + between * (math.log(4) - math.log(1.1)))
    assert math.log(row[0.125] / 10) == pytest.approx(math.log(4) * share[0.125] / share[0.25])
    one = extrapolated_row(p, spectrum, measured={0.75: 11.0}, dense=10.0, fractions=[0.25])
    assert one[0.25] != pytest.approx(row[0.25])     # the second measurement changed the estimate there
    assert parse_measure("0.5, 0.3") == [0.3, 0.5] and parse_measure("all") is None


def test_allocation_options_are_checked():
    with pytest.raises(ValueError, match="unknown allocation"):
        get_allocation("magic")
    with pytest.raises(ValueError, match="blocks must be auto, search or a number"):
        get_allocation("depth", blocks="many")
    for endless in ("inf", "1e999", "2.5"):          # int(float("inf")) was an OverflowError in the budget
        with pytest.raises(ValueError, match="blocks must be auto, search or a whole number"):
            get_allocation("depth", blocks=endless)
    with pytest.raises(ValueError, match="slope must be at least 0.0"):
        get_allocation("depth", slope="nan")
    with pytest.raises(ValueError, match="kept fraction must be strictly between 0 and 1"):
        get_allocation("sensitivity", fractions="0.5,1.5")
    with pytest.raises(ValueError, match="fractions: at most 12 kept fractions, got 49"):
        get_allocation("sensitivity", fractions=",".join(f".{i:02d}" for i in range(1, 50)))
    with pytest.raises(ValueError, match=r"measure \(all, or kept fractions\): expected kept fractions"):
        get_allocation("sensitivity", measure="some")
    with pytest.raises(ValueError, match=r"measure \(all, or kept fractions\): every kept fraction must be"):
        get_allocation("sensitivity", measure="0.3,1")
    with pytest.raises(ValueError, match="score"):
        get_allocation("sensitivity", score="accuracy")


def test_the_exact_solver_finds_the_least_summed_damage_that_brute_force_finds():
    import itertools

    from svd_explorer.compress.allocation.solver import Candidate, solve
    g = torch.Generator().manual_seed(3)
    candidates = {}
    for name in "abcde":
        costs = sorted(torch.randint(5, 60, (3,), generator=g).tolist())
        damages = sorted(torch.rand(3, generator=g).tolist(), reverse=True)
        candidates[name] = [Candidate(i + 1, c, d) for i, (c, d) in enumerate(zip(costs, damages))] + \
            [Candidate(None, 80, 0.0)]
    cheapest = sum(min(c.params for c in row) for row in candidates.values())
    for budget in (cheapest, cheapest + 30, cheapest + 90, 400):
        ranks, found = solve(candidates, budget)
        chosen = [next(c for c in candidates[n] if c.rank == ranks[n]) for n in candidates]
        best = min(sum(c.damage for c in combo) for combo in itertools.product(*candidates.values())
                   if sum(c.params for c in combo) <= budget)
        assert sum(c.params for c in chosen) <= budget and found["proven"]
        assert found["damage"] == pytest.approx(best) and sum(c.damage for c in chosen) == pytest.approx(best)
    with pytest.raises(BudgetError, match="smallest candidate"):
        solve(candidates, cheapest - 1)


def test_the_exact_solver_never_sums_more_damage_than_the_threshold_and_meets_the_budget():
    """Where projections' damage is spread unevenly the two choices differ; the integer program's summed
    log-score increase is never above the threshold search's."""
    from svd_explorer.compress.allocation.sensitivity import candidates
    layout = find_layout(tiny_model("llama"))
    for ratio in (0.2, 0.4):
        ctx, totals = context(layout, ratio), {}
        table = {n: {f: v for f, v in row.items() if f < 1} for n, row in ctx.sensitivity([0.4, 0.6, 0.8]).items()}
        for solver in ("threshold", "exact"):
            allocated = get_allocation("sensitivity", fractions="0.4,0.6,0.8", solver=solver).allocate(ctx)
            assert kept_params(layout, allocated.ranks) <= target_params(layout, ratio)
            options = candidates(layout, table, dict.fromkeys(table, 10.0))
            totals[solver] = sum(next(c.damage for c in options[n] if c.rank == r or (c.rank is None and r is None))
                                 for n, r in _rounded_to_candidates(layout, allocated.ranks, options).items())
        assert totals["exact"] <= totals["threshold"] + 1e-9


def _rounded_to_candidates(layout, ranks, options):
    """Each rank down to the largest candidate rank it covers (fill may have added a few units)."""
    out = {}
    for p in layout.projections:
        r = ranks[p.name]
        kept = [c.rank for c in options[p.name] if c.rank is not None and (r is None or c.rank <= r)]
        out[p.name] = None if r is None else max(kept)
    return out


def test_zero_sum_drops_the_least_harmful_component_first_and_keeps_every_floor():
    """With every predicted change positive the zero-sum rule is a global greedy on |ΔL| (each projection
    from its smallest singular value up); a floor is never crossed; a floor the budget cannot pay is refused."""
    from svd_explorer.compress.allocation.base import floor_rank
    from svd_explorer.compress.allocation.zero_sum import zero_sum_ranks
    layout = find_layout(tiny_model("llama"))
    scores = {n: s.abs().sort(descending=True).values for n, s in fake_scores(layout).items()}
    budget = target_params(layout, 0.3)
    ranks, _ = zero_sum_ranks(layout, scores, budget, 0.0)
    dropped = [float(scores[p.name][k]) for p in layout.projections for k in range(ranks[p.name], max_rank(p))]
    kept = [float(scores[p.name][k]) for p in layout.projections for k in range(ranks[p.name])]
    assert kept_params(layout, ranks) <= budget and dropped
    assert max(dropped) <= min(kept)
    floored, _ = zero_sum_ranks(layout, scores, budget, 0.3)
    assert all(floored[p.name] >= floor_rank(p, 0.3) for p in layout.projections)
    with pytest.raises(BudgetError, match="lower the floor"):
        zero_sum_ranks(layout, scores, target_params(layout, 0.6), 0.8)


def test_zero_sum_keeps_the_running_sum_near_zero():
    """Mixed signs: after the forced drops beyond break-even, every choice pulls the running sum towards 0,
    so it ends within one component's change of 0 whenever both signs remain on offer."""
    from svd_explorer.compress.allocation.zero_sum import zero_sum_ranks
    layout = find_layout(tiny_model("llama"))
    scores = {n: s - s.mean() for n, s in fake_scores(layout, 4).items()}
    ranks, running = zero_sum_ranks(layout, scores, target_params(layout, 0.4), 0.0)
    biggest = max(float(s.abs().max()) for s in scores.values())
    assert abs(running) <= biggest + abs(sum(float(scores[p.name][max_rank(p):].sum()) for p in layout.projections))


def test_a_floor_keeps_loss_allocation_from_starving_a_projection():
    from svd_explorer.compress.allocation.base import floor_rank
    layout = find_layout(tiny_model("llama"))
    ctx = context(layout, 0.3)
    plain = get_allocation("loss", floor=0).allocate(ctx).ranks
    floored = get_allocation("loss", floor=0.4).allocate(ctx).ranks
    assert any(plain[p.name] < floor_rank(p, 0.4) for p in layout.projections)       # starved without it
    assert all(floored[p.name] >= floor_rank(p, 0.4) for p in layout.projections)
    assert kept_params(layout, floored) <= target_params(layout, 0.3)
    with pytest.raises(BudgetError, match="lower the floor"):
        get_allocation("loss", floor=0.9).allocate(context(layout, 0.5))
