"""Choose settings without touching the evaluation sets: perplexity on development text.

    python bench/dev_select.py --variants "aa-svd:refine_lr=1e-4" "aa-svd:refine_lr=3e-4"
    python bench/dev_select.py --variants "svd-llm:allocation=loss,normalize=energy" \\
        "svd-llm:allocation=loss,normalize=none"
    python bench/dev_select.py --variants "svd-llm:allocation=sensitivity,measure=all" \
        "svd-llm:allocation=sensitivity,measure=0.5"          # the README's choice of measure

Development text: --dev-windows windows of the calibration source that overlap none of the calibration
windows (the same seed's) nor the windows a search scored on, so a setting is chosen on text neither
the calibration nor a search saw; WikiText-2, PTB and task data are never read. A variant is
`method:key=value,...`; a key is a run setting (allocation, refine, refine_steps, refine_lr, ...), a
method option, or an allocation option (a value may hold commas: fractions=0.5,0.7); values are read
as JSON where they parse (1e-4, false, 200) and as text otherwise (anchored).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from svd_explorer.compress.allocation import ALLOCATIONS  # noqa: E402
from svd_explorer.compress.methods import method_class  # noqa: E402
from svd_explorer.run.config import RunConfig, with_preset  # noqa: E402
from svd_explorer.run.engine import run  # noqa: E402
from svd_explorer.study.comparison import work_seconds  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict, dict, dict]:
    """(method, run settings, method options, allocation options) of `method:key=value,...`."""
    name, _, rest = text.partition(":")
    settings, options, allocation = {}, {}, {}
    method_options = {o.name for o in method_class(name).options}
    allocation_options = {o.name for cls in ALLOCATIONS.values() for o in cls.options}
    for pair in filter(None, re.split(r",(?=\w+=)", rest)):     # a comma inside a value (fractions) stays
        key, _, value = pair.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        target = settings if key in RunConfig.__dataclass_fields__ else options if key in method_options else \
            allocation if key in allocation_options else None
        if target is None:
            raise SystemExit(f"error: {key!r} is neither a run setting nor an option of {name} or an allocation")
        target[key] = value
    return name, settings, options, allocation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--calib", default="boolq")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--dev-windows", type=int, default=16)
    args = parser.parse_args(argv)
    lines = ["| variant | seed | dev ppl | original's dev ppl | search + compression s |", "|---|---|---|---|---|"]
    for text in args.variants:
        name, settings, options, allocation = parse_variant(text)
        for seed in map(int, args.seeds.split(",")):
            config = with_preset("demo", model=args.model, method=name, ratio=args.ratio, calib=args.calib, seed=seed,
                                 eval_source="none", dev_windows=args.dev_windows, options=options,
                                 allocation_options=allocation, **settings)
            record = run(config, measure_forward=False).record
            line = (f"| {text} | {seed} | {record.dev_ppl:.2f} | {record.dev_ppl_original:.2f} | "
                    f"{work_seconds(record.to_dict()):.0f} |")
            print(line, file=sys.stderr, flush=True)
            lines.append(line)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
