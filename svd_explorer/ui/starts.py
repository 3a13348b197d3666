"""One-click starting points for a student: each shows a gallery run, draws others beside it, sets the
controls to the run's setting and says what to look at. Data only; a starting point whose runs the
gallery lacks is not offered."""
from __future__ import annotations

from dataclasses import dataclass

from ..study.gallery import Gallery


@dataclass(frozen=True)
class Start:
    title: str
    shown: str                  # the gallery entry shown ("[model/]method/allocation/ratio")
    beside: tuple[str, ...]     # entries drawn beside it (Depth error, Ranks, Compare runs)
    look: str                   # what to look at, in which tabs


STARTS = (
    Start("Whitening against plain SVD", "svd-llm/auto/0.2", ("svd/auto/0.2", "asvd/auto/0.2"),
          "**Spectra**: the grey line is raw W, the blue one the matrix the method truncates. Plain SVD cuts W "
          "itself; SVD-LLM cuts W whitened by the inputs' statistics, so its rank keeps what the layer *outputs* "
          "on real text. Compare the energy kept at the red line, then **Depth error** and **Compare runs**: "
          "the three methods at the same budget."),
    Start("Error through depth", "aa-svd/auto/0.2", ("svd/auto/0.2", "svd-llm/auto/0.2"),
          "**Depth error**: how far the compressed model's hidden states drift from the original's after each "
          "block. Each block's error is passed on to the next. AA-SVD fits every layer to the inputs the "
          "*compressed* model feeds it, then tunes each block end to end (**Refinement** shows that loss)."),
    Start("Where the rank goes", "svd-llm/sensitivity/0.2", ("svd-llm/auto/0.2",),
          "**Ranks**: the share of each projection kept, block by block. The uniform allocation (dashed or "
          "solid, see the legend) keeps the same share everywhere; `sensitivity` measures how much each "
          "projection hurts when cut and moves rank to those that matter. **Compare runs**: same budget, "
          "two perplexities."),
    Start("The ACES search", "saes-svd/auto/0.2", ("svd-llm/auto/0.2",),
          "**ACES search**: for every projection SAES-SVD tries several mixes of its local error and the error "
          "accumulated from earlier blocks, and keeps the one that fits best; the curves show that search "
          "and the depth picture shows the mix chosen per block."),
    Start("One method across budgets", "svd-llm/auto/0.2",
          ("svd-llm/auto/0.05", "svd-llm/auto/0.1", "svd-llm/auto/0.3", "svd-llm/auto/0.4"),
          "**Compare runs**: quality against the share of parameters kept, one point per budget; the original "
          "model is the grey diamond. **Side by side** holds each run's answers to the example prompts."),
    Start("A second model: Gemma 3 270M", "gemma3-270m/aa-svd/sensitivity/0.2",
          ("gemma3-270m/aa-svd/auto/0.2", "gemma3-270m/svd-llm/sensitivity/0.2", "gemma3-270m/svd-llm/auto/0.2"),
          "Does what SmolLM2 taught carry over to a base model of another family? **Compare runs**: svd-llm and "
          "AA-SVD, each uniform and with `sensitivity`, at the same budget. **Ranks**: where the search moved the "
          "rank. Gemma's embedding, most of its parameters, is never compressed: the budget table above says how "
          "little of the file 20% of the projections is."),
)


def available(gallery: Gallery | None) -> list[Start]:
    """The starting points whose runs are all in the gallery."""
    if gallery is None:
        return []
    names = {e.name for e in gallery.entries}
    return [s for s in STARTS if s.shown in names and set(s.beside) <= names]
