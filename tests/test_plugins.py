"""One tester for every plugin: each registered method and allocation goes through the same checks, and a
method written in a file of its own (a temporary module here) joins the CLI, the pipeline and the tester with
one `register` line."""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest
import torch
from conftest import tiny_ids, tiny_model

from svd_explorer.cli.main import main as cli
from svd_explorer.compress.allocation import ALLOCATIONS, Allocation, AllocationContext, kept_params, target_params
from svd_explorer.compress.methods import REGISTRY, Method
from svd_explorer.compress.pipeline import compress_model
from svd_explorer.figures.plots import PLUGIN_FIGURES
from svd_explorer.model.blocks import find_layout

DASHES = {"solid", "dot", "dash", "longdash", "dashdot", "longdashdot"}


def check_metadata(plugin) -> None:
    """What the CLI listing, the page and the figures read from a plugin, present and well formed."""
    assert plugin.name and plugin.title and plugin.summary, plugin
    json.dumps(plugin().describe())                                   # the page and the listings show it
    for option in plugin.options:
        assert option.name and option.help, (plugin.name, option)


def check_method(cls: type[Method]) -> None:
    """Metadata, an original-stream form a scorer can fit, declared figures that exist, and a real compression
    of a tiny model that keeps the budget and stays finite."""
    check_metadata(cls)
    assert cls.paper and cls.color.startswith("#"), cls.name
    method = cls()
    assert not method.original_stream_form().sequential
    assert all(name in PLUGIN_FIGURES for tab in cls.figures for name in tab.figures), cls.name
    model, ids = tiny_model("llama"), tiny_ids(4, 16)
    compressed, record = compress_model(model, method, 0.3, ids, batch_size=2)
    assert record.linear_params_after <= 0.7 * record.linear_params_before, cls.name
    assert torch.isfinite(compressed(input_ids=ids[:1]).logits).all(), cls.name


def check_allocation(cls: type[Allocation]) -> None:
    """Metadata, a line style the figures can draw, and the budget met on a tiny model when the allocation
    can decide from shapes alone (those that need data are run end to end by test_allocation)."""
    check_metadata(cls)
    assert cls.dash in DASHES, cls.name
    layout = find_layout(tiny_model("llama"))
    allocation = cls()
    if allocation.needs_statistics:
        return
    ranks = allocation.allocate(AllocationContext(layout, 0.3, REGISTRY["svd"]())).ranks
    assert kept_params(layout, ranks) <= target_params(layout, 0.3), cls.name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_passes_the_common_checks(name):
    check_method(REGISTRY[name])


@pytest.mark.parametrize("name", list(ALLOCATIONS))
def test_every_allocation_passes_the_common_checks(name):
    check_allocation(ALLOCATIONS[name])


TOY_METHOD = '''
"""`toy-svd`: plain truncated SVD under another name, written as a newcomer would add a method."""
from svd_explorer.compress.linalg import truncate
from svd_explorer.compress.methods import Fit, Method, register


class ToySVD(Method):
    name = "toy-svd"
    title = "Toy SVD"
    paper = "none: a test of the plugin system"
    summary = "Truncates the weight itself."
    color = "#123456"

    def fit(self, weight, stats, budget, name):
        t = truncate(weight, budget.rank, name)
        return Fit(t.left, t.right, t.spectrum, "W")


register(ToySVD)
'''


@pytest.fixture
def toy_method(tmp_path):
    path = tmp_path / "toy_svd.py"
    path.write_text(textwrap.dedent(TOY_METHOD))
    spec = importlib.util.spec_from_file_location("toy_svd", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_svd"] = module
    spec.loader.exec_module(module)
    yield module.ToySVD
    REGISTRY.pop("toy-svd", None)
    sys.modules.pop("toy_svd", None)


def test_a_method_added_as_one_file_joins_the_cli_the_pipeline_and_the_tester(toy_method, tiny_folder, text_file,
                                                                              tmp_path, capsys):
    check_method(toy_method)
    out = tmp_path / "toy.json"
    code = cli(["compress", "--model", str(tiny_folder), "--method", "toy-svd", "--ratio", "0.3", "--calib",
                str(text_file), "--calib-samples", "2", "--seq-len", "16", "--eval", str(text_file),
                "--eval-windows", "1", "--no-stats-cache", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["method"] == "toy-svd" and result["layers"][0]["truncated"] == "W"
    cli(["methods"])
    assert "Toy SVD" in capsys.readouterr().out
