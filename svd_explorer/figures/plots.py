"""Plotly figures, as pure functions of run results (the dictionaries the CLI writes with --json)."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..compress.allocation import ALLOCATIONS
from ..compress.methods import REGISTRY

TEMPLATE = "plotly_white"
HEIGHT = 380
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


def method_color(method: str, fallback: int = 0) -> str:
    """A method's own colour (methods own their metadata), or one of the palette's."""
    cls = REGISTRY.get(method)
    return cls.color if cls is not None else COLORS[fallback % len(COLORS)]


def _figure(title: str, x: str, y: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, height=HEIGHT, title=title, xaxis_title=x, yaxis_title=y,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.2), **layout)
    return fig


def empty(message: str) -> go.Figure:
    fig = _figure("", "", "")
    fig.add_annotation(text=message, showarrow=False, font=dict(size=15, color="#6b7280"), x=0.5, y=0.5,
                       xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def kinds(result: dict) -> list[str]:
    """The projection kinds in a block's order. An allocation may leave a kind out of the first blocks, so a
    kind first seen later goes beside its neighbours in its own block, not at the end."""
    blocks: dict[int, list[str]] = {}
    for layer in result.get("layers", []):
        blocks.setdefault(layer["block"], []).append(layer["kind"])
    seen: list[str] = []
    for order in blocks.values():
        for i, kind in enumerate(order):
            if kind not in seen:
                seen.insert(_place(seen, order[:i], order[i + 1:]), kind)
    return seen


def _place(seen: list[str], before: list[str], after: list[str]) -> int:
    """Where a new kind goes: after every known kind before it in its block, else before every one after it."""
    known_before = [seen.index(k) for k in before if k in seen]
    if known_before:
        return max(known_before) + 1
    known_after = [seen.index(k) for k in after if k in seen]
    return min(known_after) if known_after else len(seen)


def first_kind(result: dict, block: int) -> str | None:
    """The projection a page shows first: the first kind compressed in `block`, else the first kind at all."""
    names = kinds(result)
    return next((k for k in names if find_layer(result, block, k)), names[0] if names else None)


def find_layer(result: dict, block: int, kind: str) -> dict | None:
    return next((layer for layer in result.get("layers", [])
                 if layer["block"] == block and layer["kind"] == kind), None)


def _percent(share: float) -> str:
    """A share close to 1 with enough digits that what is lost shows (99.97%, not 100.0%)."""
    lost = 1 - share
    if lost < 1e-6:
        return "> 99.9999%" if lost > 0 else "100%"
    digits = max(1, -math.floor(math.log10(lost)) - 2)
    return f"{100 * share:.{digits}f}%"


def spectrum_figure(result: dict, block: int, kind: str) -> go.Figure:
    """Singular values of raw W and of the matrix the method truncates, each relative to its largest."""
    layer = find_layer(result, block, kind)
    if layer is None:
        return empty(f"block {block} · {kind} was not compressed in this run")
    m, n = layer["shape"]
    k = layer["rank"]
    fig = _figure(f"block {block} · {kind} ({m}×{n}) · rank kept {k} · break-even {m * n / (m + n):.0f}",
                  "index i", "σᵢ / σ₁ (log)", yaxis_type="log")
    for values, name, color in ((layer["spectrum_raw"], "raw W", "#9ca3af"),
                                (layer["spectrum_truncated"], f"truncated: {layer['truncated']}", "#2563eb")):
        top = values[0] if values and values[0] > 0 else 1.0
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=[max(v / top, 1e-12) for v in values],
                                 mode="lines", name=name, line=dict(color=color, width=2)))
    fig.add_vline(x=k, line=dict(color="#dc2626", dash="dash"), annotation_text=f"kept rank {k}",
                  annotation_position="top right")
    fig.add_vrect(x0=k, x1=min(m, n), fillcolor="#fecaca", opacity=0.25, line_width=0)
    energy = [v * v for v in layer["spectrum_truncated"]]
    share = sum(energy[:k]) / sum(energy) if sum(energy) else 1.0
    fig.add_annotation(text=f"rank {k} keeps {_percent(share)} of the energy · rel. error {layer['rel_error']:.3f}",
                       x=0.01, y=0.02, xref="paper", yref="paper", showarrow=False, xanchor="left",
                       bgcolor="rgba(255,255,255,0.8)")
    return readable_log_axis(fig)


def depth_figure(runs: list[tuple[str, dict]], metric: str = "rel_error") -> go.Figure:
    """Accumulated error of the hidden states through depth, one line per run."""
    label = {"rel_error": "‖H_c − H_f‖ / ‖H_f‖", "cosine_distance": "1 − cos(H_c, H_f)"}[metric]
    fig = _figure("Error of the compressed model's hidden states after each block", "block", label)
    for i, (name, result) in enumerate(runs):
        rows = result.get("depth_error", [])
        if rows:
            fig.add_trace(go.Scatter(x=[r["block"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers",
                                     name=name, line=dict(color=method_color(result.get("method", ""), i),
                                                          width=3 if i == len(runs) - 1 else 1.5)))
    if not fig.data:
        return empty("run a compression to see the error through depth")
    return fig


def error_heatmap(result: dict) -> go.Figure:
    """Relative error of every compressed projection on its calibration inputs (blocks × projections)."""
    names = kinds(result)
    blocks = sorted({layer["block"] for layer in result.get("layers", [])})
    if not names:
        return empty("run a compression to see the per-projection errors")
    z = [[(find_layer(result, b, k) or {}).get("rel_error") for k in names] for b in blocks]
    fig = _figure("Relative error ‖(W − W')X‖ / ‖WX‖ per projection", "projection", "block")
    fig.add_trace(go.Heatmap(z=z, x=names, y=blocks, colorscale="Reds", colorbar=dict(title="rel. error"),
                             hovertemplate="block %{y} · %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return fig


def allocation_dash(name: str) -> str:
    """The allocation's own line style ("auto", the method's own, is drawn solid); a sweep's summary names it
    with its options, "sensitivity (measure=0.5 score=kl)", drawn as sensitivity."""
    bare = name.split(" (", 1)[0]
    return ALLOCATIONS[bare].dash if bare in ALLOCATIONS else "solid"


NO_ACES = "this run has no ACES search"


def aces_figure(result: dict, block: int, kind: str, missing: str = NO_ACES) -> go.Figure:
    """ACES: share of the objective that rank k cannot capture, against the coefficient β, and the choice."""
    layer = find_layer(result, block, kind)
    aces = ((layer or {}).get("extra") or {}).get("aces")
    if not aces:
        return empty(missing)
    def lost(pairs):  # (β, share captured) -> (βs, share lost), floored for the log axis
        return [p[0] for p in pairs], [max(1 - p[1], 1e-16) for p in pairs]

    fig = _figure(f"ACES search · block {block} · {kind}", "β = α / (1 + α)",
                  "share lost at rank k (log, lower is better)", yaxis_type="log")
    if aces.get("interval"):
        lo, hi = aces["interval"]
        fig.add_vrect(x0=lo, x1=hi, fillcolor="#dbeafe", opacity=0.5, line_width=0, annotation_text="search interval")
    curve, points = lost(aces.get("curve") or []), lost(aces.get("points") or [])
    if curve[0]:
        fig.add_trace(go.Scatter(x=curve[0], y=curve[1], mode="lines", name="surrogate (fixed subspace)",
                                 line=dict(color="#93c5fd")))
    if points[0]:
        fig.add_trace(go.Scatter(x=points[0], y=points[1], mode="markers", name="coefficients tried",
                                 marker=dict(color="#2563eb", size=8)))
    if aces.get("beta") is not None:
        x, y = lost([(aces["beta"], aces["captured"])])
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="chosen (exact)",
                                 marker=dict(color="#dc2626", size=14, symbol="star")))
    if aces.get("guard"):
        fig.add_annotation(text="the surrogate's pick lost more than the midpoint: midpoint kept", x=0.5, y=0.02,
                           xref="paper", yref="paper", showarrow=False)
    values = curve[1] + points[1]
    if values and max(values) <= min(values) * (1 + 1e-4):
        fig.add_annotation(text="every β loses the same share here: no upstream error to compensate yet "
                                "(block 0's inputs are identical in both models)" if block == 0 else
                           "every β loses (almost) the same share here: the choice hardly matters",
                           x=0.5, y=0.9, xref="paper", yref="paper", showarrow=False)
    return readable_log_axis(fig)


def aces_depth_figure(result: dict, missing: str = NO_ACES) -> go.Figure:
    """The chosen β through depth, one line per projection kind."""
    fig = _figure("Coefficient chosen by ACES through depth", "block", "β")
    for i, kind in enumerate(kinds(result)):
        layers = [layer for layer in result["layers"]
                  if layer["kind"] == kind and (layer.get("extra") or {}).get("aces")]
        if layers:
            fig.add_trace(go.Scatter(x=[layer["block"] for layer in layers],
                                     y=[layer["extra"]["aces"]["beta"] for layer in layers],
                                     mode="lines+markers", name=kind, line=dict(color=COLORS[i % len(COLORS)])))
    return fig if fig.data else empty(missing)


def cost_figure(result: dict) -> go.Figure:
    """One factorised layer against the dense one, per projection shape: time ratio (below 1 = faster) against
    the rank as a share of the parameter break-even rank mn/(m+n). Solid: the run's prefill length; dotted:
    8 rows (batch-8 decoding). Diamonds: the ranks this run kept."""
    timings = (result.get("cost") or {}).get("layers") or []
    if not timings:
        return empty((result.get("cost") or {}).get("skipped") or "this run did not measure its serving cost")
    fig = _figure("A factorised layer's time against the dense layer's", "rank / parameter break-even rank mn/(m+n)",
                  "time of up·down ÷ time of W (below 1: faster)")
    kept, shapes = _kept_ranks(result), list(dict.fromkeys(tuple(t["shape"]) for t in timings))
    for t in timings:
        color, prefill = COLORS[shapes.index(tuple(t["shape"])) % len(COLORS)], t["rows"] != 8
        x = [r / t["parameter_break_even"] for r in t["ranks"]]
        y = [v / t["dense_seconds"] for v in t["lowrank_seconds"]]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line=dict(color=color, dash="solid" if prefill
                                                                            else "dot"),
                                 name=f"{t['shape'][0]}×{t['shape'][1]}, {t['rows']} rows"))
        ranks = kept.get(tuple(t["shape"]), [])
        if prefill and ranks:
            fig.add_trace(go.Scatter(x=[r / t["parameter_break_even"] for r in ranks],
                                     y=[_at(r, t["ranks"], y) for r in ranks], mode="markers", showlegend=False,
                                     marker=dict(color=color, symbol="diamond", size=11),
                                     hovertemplate="kept rank %{x:.2f} × break-even<extra></extra>"))
    fig.add_hline(y=1, line_dash="dash", line_color="#6b7280", annotation_text="as slow as the dense layer")
    fig.add_vline(x=1, line_dash="dot", line_color="#6b7280", annotation_text="stores as much as W")
    return fig


def _kept_ranks(result: dict) -> dict[tuple, list[int]]:
    out: dict[tuple, set] = {}
    for layer in result.get("layers", []):
        if layer.get("rank"):
            out.setdefault(tuple(layer["shape"]), set()).add(layer["rank"] + layer.get("residual_rank", 0))
    return {k: sorted(v) for k, v in out.items()}


def _at(rank: float, ranks: list[int], values: list[float]) -> float:
    """values at `rank`, linearly interpolated between the measured ranks."""
    for (r0, v0), (r1, v1) in zip(zip(ranks, values), zip(ranks[1:], values[1:])):
        if r0 <= rank <= r1:
            return v0 + (v1 - v0) * (rank - r0) / (r1 - r0)
    return values[0] if rank < ranks[0] else values[-1]


# Figures a method declares (Method.figures): name -> draw(result, block, kind, missing)
PLUGIN_FIGURES = {
    "aces": aces_figure,
    "aces_depth": lambda result, block, kind, missing: aces_depth_figure(result, missing),
}


def refine_figure(result: dict, block: int | None = None) -> go.Figure:
    """AA-SVD block refinement: the loss per step of one block, and every block's loss before and after."""
    refined = [b for b in result.get("blocks", []) if b.get("refine")]
    if not refined:
        return empty("block refinement exists for aa-svd runs with refinement steps > 0")
    chosen = next((b for b in refined if b["block"] == block), refined[0])
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"block {chosen['block']}: loss per step",
                                                        "calibration loss per block"))
    losses = chosen["refine"]["losses"]
    fig.add_trace(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines", name="MSE per step",
                             line=dict(color="#dc2626")), row=1, col=1)
    x = [b["block"] for b in refined]
    fig.add_trace(go.Bar(x=x, y=[b["refine"]["loss_before"] for b in refined], name="before refinement",
                         marker_color="#9ca3af"), row=1, col=2)
    fig.add_trace(go.Bar(x=x, y=[b["refine"]["loss_after"] for b in refined], name="after refinement",
                         marker_color="#dc2626"), row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=HEIGHT, barmode="group", margin=dict(l=60, r=20, t=50, b=50),
                      legend=dict(orientation="h", y=-0.2))
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="block", row=1, col=2)
    return fig


QUALITY = {"ppl_compressed": "perplexity (log)", "kl_to_original": "KL to the original",
           "top1_agreement": "top-1 agreement with the original"}
ORIGINAL = {"ppl_compressed": None, "kl_to_original": 0.0, "top1_agreement": 1.0}


SYMBOLS = ["circle", "square", "triangle-up", "x", "star", "cross"]


def comparison_figure(rows: list[dict], metric: str = "ppl_compressed") -> go.Figure:
    """Runs in the history: quality against the share of parameters kept, one marker per run, and the
    original model at (1, its value). Axes keep differences in proportion: KL from 0, top-1 from 0 to 1,
    perplexity on a log axis that includes the original. Runs measured on different evaluation texts (other
    text, window count or length, or another model) get their own marker shape and their own original
    point, and a line above the picture says what differs: their perplexities are not comparable. A run whose
    allocation is not its method's own is drawn open, in its method's colour."""
    fig = _figure("Runs compared", "parameters kept (whole model)", QUALITY[metric],
                  yaxis_type="log" if metric == "ppl_compressed" else "linear")
    fig.update_layout(margin=dict(l=60, r=20, t=70, b=50))
    sets = list(dict.fromkeys(evaluation_set(r) for r in rows))
    for i, name in enumerate(dict.fromkeys(series(r) for r in rows)):
        mine = [r for r in rows if series(r) == name and _finite(r.get(metric))]
        if mine:
            fig.add_trace(go.Scatter(
                x=[r["params_after"] / r["params_before"] for r in mine], y=[r[metric] for r in mine],
                mode="markers+text", name=name, text=[f"{r['ratio']:g}" for r in mine], textposition="middle right",
                marker=_markers(mine, method_color(mine[0]["method"], i), sets)))
    if not fig.data:
        return empty("runs with an evaluation appear here")
    for k, name in enumerate(sets):
        _original_point(fig, [r for r in rows if evaluation_set(r) == name], metric, k, name if len(sets) > 1 else "")
    if len(sets) > 1:
        fig.update_layout(title=dict(text="Runs compared<br><sup>measured on different texts, not comparable across "
                                          "shapes: " + " · ".join(f"{SYMBOLS[k % len(SYMBOLS)]}: {name}"
                                                                  for k, name in enumerate(sets)) + "</sup>"))
    _proportional_axes(fig, rows, metric)
    return readable_log_axis(fig) if metric == "ppl_compressed" else fig


def _markers(rows: list[dict], color: str, sets: list[str]) -> dict:
    """One series' markers: shapes by evaluation text, an open one's ring drawn in the series' colour."""
    symbols = [_symbol(sets.index(evaluation_set(r)), r) for r in rows]
    return dict(size=12, color=color, symbol=symbols,
                line=dict(color=color, width=[2.5 if s.endswith("-open") else 0 for s in symbols]))


def _symbol(evaluation: int, row: dict) -> str:
    """A marker's shape says its evaluation text; an allocation other than the method's own draws it open."""
    shape = SYMBOLS[evaluation % len(SYMBOLS)]
    return shape if allocation_of(row) == "auto" else f"{shape}-open"


def allocation_of(row: dict) -> str:
    """A run's allocation ("auto": its method's own)."""
    return (row.get("config") or {}).get("allocation", "auto")


def series(row: dict) -> str:
    """The line a run belongs to in a comparison: its method, and its allocation unless the method's own."""
    allocation = allocation_of(row)
    return row["method"] + ("" if allocation == "auto" else f" + {allocation}")


def evaluation_set(row: dict) -> str:
    """What a run's quality was measured on: the model, the text and its windows ('smollm2-135m, wikitext
    test (local copy), 20 × 512')."""
    ev = row.get("evaluation") or {}
    text = (ev.get("description") or ev.get("source") or "?").split(":")[0]
    return f"{row.get('model', '?')}, {text}, {ev.get('windows', '?')} × {ev.get('seq_len', '?')}"


def _original_point(fig: go.Figure, rows: list[dict], metric: str, k: int, name: str) -> None:
    original = ORIGINAL[metric] if metric != "ppl_compressed" else next(
        (r["ppl_original"] for r in reversed(rows) if _finite(r.get("ppl_original"))), None)
    if original is not None and (metric == "ppl_compressed" or k == 0):
        label = "original" + (f" ({SYMBOLS[k % len(SYMBOLS)]})" if name and metric == "ppl_compressed" else "")
        fig.add_trace(go.Scatter(x=[1.0], y=[original], mode="markers+text", name=label, text=[label],
                                 textposition="middle left", hovertext=name or None,
                                 marker=dict(size=12, color="#6b7280", symbol="diamond")))


def _proportional_axes(fig: go.Figure, rows: list[dict], metric: str) -> None:
    kept = [r["params_after"] / r["params_before"] for r in rows if _finite(r.get(metric))] + [1.0]
    fig.update_xaxes(range=[max(0.0, min(kept) - 0.08), 1.06])
    if metric == "top1_agreement":
        fig.update_yaxes(range=[0, 1.05])
    elif metric == "kl_to_original":
        top = max(r[metric] for r in rows if _finite(r.get(metric)))
        fig.update_yaxes(range=[0, top * 1.15 or 1])


def pareto_figure(summary: list[dict], session: list[dict], measure: str | None = None) -> go.Figure:
    """A sweep's configurations (mean over seeds, error bars = their standard deviation) against the share
    of parameters kept, beside this session's own runs (hollow markers)."""
    measure = measure or next((k for row in summary for k in row if k.startswith("ppl_")), "ppl_wikitext2")
    fig = _figure(f"Quality against size: {measure[4:]} perplexity (mean ± std over seeds)",
                  "parameters kept (whole model)", f"{measure[4:]} perplexity (log)", yaxis_type="log")
    groups: dict[tuple, list[dict]] = {}
    for row in summary:
        groups.setdefault((row["method"], row["allocation"], row["refine"]), []).append(row)
    for i, ((method, allocation, refine), rows) in enumerate(groups.items()):
        rows = [r for r in rows if r.get(measure, (None, None))[0] is not None]
        if not rows:
            continue
        name = (method + ("" if allocation == "auto" else f" + {allocation}")
                + {"on": " + refine", "off": " - refine"}.get(refine, ""))
        fig.add_trace(go.Scatter(
            x=[r["kept"][0] for r in rows], y=[r[measure][0] for r in rows], name=name, mode="lines+markers",
            error_y=dict(type="data", array=[r[measure][1] or 0 for r in rows], visible=True),
            text=[f"ratio {r['ratio']:g}, {len(r['seeds'])} seed(s)" for r in rows],
            line=dict(color=method_color(method, i), dash=allocation_dash(allocation))))
    source = measure[4:]
    mine = [r for r in session if r.get("evaluation", {}).get("source") == source and _finite(r.get("ppl_compressed"))]
    if mine:
        fig.add_trace(go.Scatter(x=[r["params_after"] / r["params_before"] for r in mine],
                                 y=[r["ppl_compressed"] for r in mine], mode="markers", name="this session's runs",
                                 text=[r.get("label", r["method"]) for r in mine],
                                 marker=dict(size=12, symbol="circle-open", color="#111827", line=dict(width=2))))
    return readable_log_axis(fig) if fig.data else empty("no finished run with this evaluation set")


def rank_depth_figure(runs: list[tuple[str, dict]]) -> go.Figure:
    """Rank kept through depth, per projection kind, as a share of its break-even rank mn/(m+n) (1 = the
    factors would store as much as the dense weight; a block kept dense is drawn at 1 with an open marker).
    The last run is drawn thick, earlier ones thin, each kind in the same colour in every run; an earlier run
    has one legend entry, its name (it shows or hides all its lines)."""
    fig = _figure("Rank kept through depth (share of break-even)", "block", "rank / break-even rank")
    fig.add_hline(y=1.0, line=dict(color="#dc2626", dash="dash"), annotation_text="break-even: no saving",
                  annotation_position="top left")
    order = list(dict.fromkeys(k for _, result in runs[::-1] for k in kinds(result)))   # the last run's first
    for r, (name, result) in enumerate(runs):
        blocks = sorted({b["block"] for b in result.get("blocks", [])})
        last = r == len(runs) - 1
        for i, (kinds_, share) in enumerate(_rank_shares(result)):
            fig.add_trace(go.Scatter(
                x=blocks, y=[share.get(b, 1.0) for b in blocks], mode="lines+markers",
                legendgroup=None if last else name, name=", ".join(kinds_) if last else f"{name} (faint)",
                showlegend=last or i == 0, opacity=1.0 if last else 0.35,
                line=dict(color=COLORS[order.index(kinds_[0]) % len(COLORS)], width=2.5 if last else 1),
                hovertemplate=f"{name}: {', '.join(kinds_)}<br>block %{{x}}: %{{y:.2f}}<extra></extra>",
                marker=dict(symbol=["circle" if b in share else "circle-open" for b in blocks])))
    rows = math.ceil(sum(1 for t in fig.data if t.showlegend) / 3)
    fig.update_yaxes(range=[0, 1.1])
    fig.update_layout(height=HEIGHT + 22 * max(0, rows - 1))    # the legend below keeps the plot its height
    return fig if len(fig.data) else empty("run a compression to see where its rank went")


def _rank_shares(result: dict) -> list[tuple[list[str], dict]]:
    """(projection kinds, block -> rank / break-even rank), kinds whose lines would coincide drawn as one line
    named after all of them (a uniform allocation gives every kind the same share)."""
    lines: dict[tuple, tuple[list[str], dict]] = {}
    for kind in kinds(result):
        share = {layer["block"]: layer["rank"] / (layer["shape"][0] * layer["shape"][1] / sum(layer["shape"]))
                 for layer in result["layers"] if layer["kind"] == kind and layer.get("rank")}
        drawn = tuple((b, round(v, 2)) for b, v in sorted(share.items()))    # what the eye can tell apart
        lines.setdefault(drawn, ([], share))[0].append(kind)
    return list(lines.values())


def zero_shot_figure(scores: dict[str, dict[str, dict]]) -> go.Figure:
    """Accuracy per task, one bar per model ({model: {task: {acc, stderr}}})."""
    fig = _figure("Zero-shot accuracy (lm-eval)", "task", "accuracy", barmode="group")
    for i, (model, tasks) in enumerate(scores.items()):
        names = [t for t in tasks if tasks[t].get("acc") is not None]
        fig.add_trace(go.Bar(x=names, y=[tasks[t]["acc"] for t in names], name=model,
                             marker_color=COLORS[i % len(COLORS)],
                             error_y=dict(type="data", array=[tasks[t].get("acc_stderr") or 0 for t in names])))
    return fig if fig.data else empty("run the zero-shot tasks to see their accuracy")


def readable_log_axis(fig: go.Figure) -> go.Figure:
    """Ticks of a log y axis on the 1-2-5 sequence (powers of ten over more than three decades), written in
    full: plotly's own minor labels read "2" and "3" for 200 and 300. When every value is about the same,
    a span around them, not 8-digit ticks."""
    ys = [v for trace in fig.data for v in _extent(trace) if _finite(v) and v > 0]
    if not ys:
        return fig
    lo, hi = min(ys), max(ys)
    lo, hi = (lo / 2, hi * 2) if hi / lo < 1.5 else (lo, hi)
    steps = (1, 2, 5) if math.log10(hi / lo) <= 3 else (1,)          # over many decades, powers of ten only
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in steps if lo / 1.5 <= m * 10.0 ** e <= hi * 1.5]
    fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:,.0f}" if t >= 1 else f"{t:.3g}" for t in ticks],
                     range=[math.log10(lo / 1.3), math.log10(hi * 1.3)])
    return fig


def _extent(trace) -> list:
    """The y values a trace draws, error bars included."""
    ys = list(trace.y or ())
    errors = getattr(trace, "error_y", None)
    if errors is not None and errors.array is not None:
        ys += [y + e for y, e in zip(ys, errors.array)] + [y - e for y, e in zip(ys, errors.array)]
    return ys


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
