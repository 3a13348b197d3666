"""The gallery: finished runs on the embedded models, made by `bench/gallery.py`, that the page shows the
moment it opens and beside a visitor's own runs.

A gallery holds what the pages draw — each run's record (spectra, depth errors, ranks, ACES curves,
refinement losses; no serving cost, which the bench skips) and both models' greedy answers to the example
prompts — and no weights. To stay small (the repository keeps it), spectra are rounded to 4 significant
digits, and a raw weight's spectrum, the same in every run of its model, is stored once. The file is
gzip-compressed JSON; reading checks its version and shape, and anything wrong is one `GalleryError` line
(the page then works without it).
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..model.hub import DEFAULT_MODEL

GALLERY_FILE = Path(__file__).with_name("gallery.json.gz")
VERSION = 2                     # 2: original answers per model (a second embedded model)
MAX_BYTES = 20 * 2**20          # the bound on what the repository keeps
DIGITS = 4                      # significant digits kept of a spectrum (far below what a log plot shows)


class GalleryError(ValueError):
    """The gallery file is missing, too large or not what this version writes."""


@dataclass(frozen=True)
class Entry:
    """One precomputed run: its name (stable: 'svd-llm/auto/0.1', another model's 'gemma3-270m/aa-svd/auto/0.2'),
    its record and its answers."""

    name: str
    label: str
    result: dict
    answers: list[str]

    @property
    def allocation(self) -> str:
        """The allocation the run asked for ('auto': the method's own)."""
        return self.result.get("config", {}).get("allocation", "auto")

    @property
    def model(self) -> str:
        return model_of(self.result)

    @property
    def setting(self) -> tuple[str, str, float]:
        """(method, allocation, ratio): what the page's controls show for this run."""
        return self.result["method"], self.allocation, self.result["ratio"]


@dataclass(frozen=True)
class Gallery:
    made: dict                                   # command, commit, machine, date, settings
    prompts: list[str]
    original_answers: dict[str, list[str]]       # model -> the original model's answers to the prompts
    entries: list[Entry] = field(default_factory=list)
    default: str | None = None                   # the entry the page opens on (chosen by the bench)

    def entry(self, name: str | None) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def answer(self, entry: Entry, prompt: str) -> tuple[str, str] | None:
        """(original, compressed) greedy answers to `prompt` when it is one of the stored prompts."""
        prompt = prompt.strip()
        if prompt not in self.prompts:
            return None
        i = self.prompts.index(prompt)
        return self.original_answers[entry.model][i], entry.answers[i]

    def describe(self) -> str:
        m = self.made
        return (f"precomputed with `{m.get('command', '?')}` at commit {m.get('commit', '?')} on "
                f"{m.get('machine', '?')}, {m.get('date', '?')}: {m.get('settings', '')}").rstrip(": ")


def model_of(result: dict) -> str:
    return result.get("config", {}).get("model") or result.get("model", "")


def entry_name(method: str, allocation: str, ratio: float, model: str = DEFAULT_MODEL) -> str:
    """'method/allocation/ratio', prefixed by the model for any but the default one."""
    name = f"{method}/{allocation}/{ratio:g}"
    return name if model == DEFAULT_MODEL else f"{model}/{name}"


# ---------------------------------------------------------------------------------------------
# Writing (the bench)
# ---------------------------------------------------------------------------------------------

def rounded(values: list[float]) -> list[float]:
    return [float(f"{v:.{DIGITS}g}") for v in values]


def compact(result: dict, raw_spectra: dict[str, list[float]]) -> dict:
    """The record with rounded spectra; a raw spectrum equal to the shared one for its projection is
    dropped (filled back on reading), a new one becomes the shared one."""
    layers = []
    for layer in result.get("layers", []):
        layer = dict(layer, spectrum_truncated=rounded(layer["spectrum_truncated"]))
        raw, key = rounded(layer.pop("spectrum_raw")), _spectrum_key(layer, model_of(result))
        if raw_spectra.setdefault(key, raw) != raw:
            layer["spectrum_raw"] = raw
        layers.append(layer)
    return dict(result, layers=layers)


def _spectrum_key(layer: dict, model: str) -> str:
    """Where a projection's raw spectrum is kept once for every run of its model: 'model:block/name'."""
    return f"{model}:{layer['block']}/{layer['name']}"


def pack(path: Path, made: dict, prompts: list[str], original_answers: dict[str, list[str]], runs: list[dict],
         default: str | None) -> int:
    """Write the gallery from finished runs ({name, label, result, answers}); returns its size in bytes."""
    raw: dict[str, list[float]] = {}
    entries = [dict(run, result=compact(run["result"], raw)) for run in runs]
    body = {"version": VERSION, "made": made, "prompts": prompts, "original_answers": original_answers,
            "default": default, "raw_spectra": raw, "entries": entries}
    data = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)
    if len(data) > MAX_BYTES:
        raise GalleryError(f"the gallery would take {len(data) / 2**20:.1f} MB, more than {MAX_BYTES / 2**20:g} MB")
    path.write_bytes(data)
    return len(data)


# ---------------------------------------------------------------------------------------------
# Reading (the page)
# ---------------------------------------------------------------------------------------------

def read(path: Path = GALLERY_FILE) -> Gallery:
    """The gallery at `path`; GalleryError (one line) when it is missing, too large or damaged."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise GalleryError(f"the gallery file is larger than {MAX_BYTES / 2**20:g} MB")
        body = json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        raise GalleryError("no precomputed gallery is installed (bench/gallery.py makes one)") from None
    except (OSError, EOFError, ValueError) as err:
        raise GalleryError(f"the gallery file could not be read ({type(err).__name__})") from None
    return _checked(body)


def _checked(body) -> Gallery:
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise GalleryError(f"the gallery file is not a version-{VERSION} gallery")
    try:
        raw = body["raw_spectra"]
        entries = [_entry(e, raw, len(body["prompts"])) for e in body["entries"]]
        originals = {str(model): [str(a) for a in answers] for model, answers in body["original_answers"].items()}
        gallery = Gallery(dict(body["made"]), list(body["prompts"]), originals, entries, body.get("default"))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise GalleryError(f"the gallery file is damaged ({type(err).__name__}: {err})") from None
    if any(len(a) != len(gallery.prompts) for a in gallery.original_answers.values()):
        raise GalleryError("the gallery file is damaged (answers and prompts differ in number)")
    if any(e.model not in gallery.original_answers for e in gallery.entries):
        raise GalleryError("the gallery file is damaged (a run's model has no original answers)")
    return gallery


def _entry(body: dict, raw: dict, prompts: int) -> Entry:
    result = dict(body["result"])
    model = model_of(result)
    result["layers"] = [dict(layer, spectrum_raw=layer.get("spectrum_raw") or raw[_spectrum_key(layer, model)])
                        for layer in result.get("layers", [])]
    answers = [str(a) for a in body["answers"]]
    if len(answers) != prompts or not isinstance(result.get("method"), str):
        raise ValueError(f"entry {body.get('name')!r} is incomplete")
    return Entry(str(body["name"]), str(body["label"]), result, answers)
