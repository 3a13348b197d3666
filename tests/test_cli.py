"""The command line end to end on a tiny local model, the run description, and every bad input's one line."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from svd_explorer.cli.flags import config_from_args
from svd_explorer.cli.main import build_parser, main
from svd_explorer.compress.allocation import ALLOCATIONS
from svd_explorer.compress.methods import REGISTRY
from svd_explorer.run.config import PRESETS, RunConfig, command_line, with_preset

COMMON = ["--seq-len", "16", "--calib-samples", "4", "--eval-windows", "3", "--batch-size", "2"]


def compress(tiny_folder, text_file, *extra):
    return ["compress", "--model", str(tiny_folder), "--calib", str(text_file), "--eval", str(text_file),
            *COMMON, *extra]


def test_compress_then_evaluate_the_saved_model(tiny_folder, text_file, tmp_path, capsys):
    out, result_file = tmp_path / "model", tmp_path / "run.json"
    rc = main(compress(tiny_folder, text_file, "--method", "saes-svd", "--ratio", "0.3", "--output", str(out),
                       "--json", str(result_file), "--save-dtype", "float32"))
    assert rc == 0, capsys.readouterr().err
    result = json.loads(result_file.read_text())
    for key in ("model", "method", "ratio", "params_before", "params_after", "ppl_original", "ppl_compressed",
                "kl_to_original", "top1_agreement", "seconds", "calib_forward_seconds", "peak_rss_mb", "layers",
                "depth_error", "config", "placement", "allocation", "output_bytes"):
        assert key in result, key
    assert result["params_after"] < result["params_before"] and result["kl_to_original"] > 0
    assert result["layers"][0]["extra"]["aces"]["beta"] is not None and len(result["depth_error"]) == 3
    assert RunConfig.from_dict(result["config"]).method == "saes-svd"   # the run's description travels with it
    assert "block 0 done" in capsys.readouterr().err  # progress goes to stderr
    rc = main(["evaluate", "--model", str(out), "--eval", str(text_file), "--seq-len", "16", "--eval-windows", "3",
               "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["params"] == result["params_after"]
    assert evaluated["ppl"] == pytest.approx(result["ppl_compressed"], rel=1e-4)
    assert evaluated["manifest"]["method"] == "saes-svd"


def test_evaluate_reads_the_development_and_extra_sets_a_compress_run_reads(tiny_folder, text_file, tmp_path, capsys):
    """`evaluate --dev-windows/--extra-eval` were accepted and ignored: the original model must now score
    what the compress run reported for it, on the same windows."""
    run_file, eval_file = tmp_path / "run.json", tmp_path / "eval.json"
    assert main(compress(tiny_folder, text_file, "--method", "svd", "--ratio", "0.3", "--dev-windows", "2",
                         "--extra-eval", str(text_file), "--seed", "3", "--json", str(run_file))) == 0
    result = json.loads(run_file.read_text())
    assert main(["evaluate", "--model", str(tiny_folder), "--calib", str(text_file), "--eval", "none", *COMMON[:6],
                 "--dev-windows", "2", "--extra-eval", str(text_file), "--seed", "3", "--json", str(eval_file)]) == 0
    evaluated = json.loads(eval_file.read_text())
    assert evaluated["dev_ppl"] == pytest.approx(result["dev_ppl_original"], rel=1e-5)
    extra = str(text_file)
    assert evaluated["extra_ppl"][extra] == pytest.approx(result["extra_ppl_original"][extra], rel=1e-5)
    assert "dev_ppl" in capsys.readouterr().out


def test_the_default_save_is_bfloat16_and_half_the_size(tiny_folder, text_file, tmp_path):
    sizes = {}
    for dtype, timing in (("float32", ["--no-forward-timing"]), ("bfloat16", [])):
        assert main(compress(tiny_folder, text_file, "--method", "svd-llm", "--ratio", "0.3", "--output",
                             str(tmp_path / dtype), "--save-dtype", dtype, *timing,
                             "--json", str(tmp_path / f"{dtype}.json"))) == 0
        sizes[dtype] = (tmp_path / dtype / "model.safetensors").stat().st_size
    assert sizes["bfloat16"] < 0.55 * sizes["float32"]
    forwards = {d: json.loads((tmp_path / f"{d}.json").read_text())["calib_forward_seconds"] for d in sizes}
    assert forwards["float32"] is None and forwards["bfloat16"] > 0          # --no-forward-timing skips it
    manifest = json.loads((tmp_path / "bfloat16" / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16" and manifest["config"]["method"] == "svd-llm"


@pytest.mark.parametrize("args, message", [
    (["--method", "svd", "--ratio", "1.5"], "strictly between 0 and 1"),
    (["--method", "svd", "--ratio", "0"], "strictly between 0 and 1"),
    (["--method", "magic", "--ratio", "0.2"], "unknown method 'magic'"),
    (["--method", "svd", "--ratio", "0.2", "--beta", "0.3"], "--beta does not apply to method svd"),
    (["--method", "ressvd", "--ratio", "0.5", "--last-layers", "1"], "use at least 2 blocks"),
    (["--method", "svd", "--ratio", "0.2", "--batch-size", "0"], "--batch-size: must be a whole number >= 1"),
    (["--method", "svd", "--ratio", "0.2", "--eval-windows", "-1"], "--eval-windows: must be a whole number >= 0"),
    (["--method", "svd", "--ratio", "0.2", "--calib-samples", "0"], "--calib-samples: must be a whole number >= 1"),
    (["--method", "svd", "--ratio", "0.2", "--device", "cuda"], "not available on this machine; available: cpu"),
    (["--method", "svd", "--ratio", "0.2", "--allocation", "magic"], "unknown allocation 'magic'"),
    (["--method", "svd", "--ratio", "0.2", "--alpha", "9"], "--alpha does not apply to method svd"),
    (["--method", "asvd", "--ratio", "0.2", "--alpha", "9"], "alpha must be between 0.0 and 2.0"),
    (["--method", "svd", "--ratio", "0.2", "--refine-lr", "-1"], "refine_lr must be a positive number"),
    (["--method", "svd", "--ratio", "0.2", "--search-windows", "5000"], "search_windows must be at most 32"),
    (["--method", "svd", "--ratio", "0.2", "--eval-windows", "0", "--extra-eval", "self"], "give eval_windows > 0"),
    (["--method", "svd", "--ratio", "0.2", "--extra-eval", "none"], "none is not one"),
])
def test_bad_arguments_get_one_clear_line(tiny_folder, text_file, args, message, capsys):
    assert main(compress(tiny_folder, text_file, *args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("error: ")   # refused before loading


def test_bad_inputs_are_refused_before_the_model_loads(tiny_folder, text_file, tmp_path, capsys):
    """An unknown task, a bad source or a bad output folder cost nothing: refused before any loading."""
    lines = tmp_path / "lines.jsonl"
    lines.write_text('["not", "an", "object"]\n')
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    for extra, message in (
            (["--tasks", "no_such_task"], "cannot run task 'no_such_task'"),
            (["--output", str(used)], "is not empty"),
            (["--output", str(tiny_folder)], "is the folder the model is read from"),
            (["--offload", "disk", "--offload-folder", "/proc/forbidden"], "is not writable"),
            (["--eval", str(tmp_path / "missing.txt")], "no file")):
        assert main(compress(tiny_folder, text_file, "--method", "svd", "--ratio", "0.2", *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and "loading" not in err, (extra, err)
    assert main(["compress", "--model", str(tiny_folder), "--method", "svd", "--ratio", "0.2", "--calib", str(lines),
                 *COMMON]) == 2
    assert "line 1 is not an object with a 'text' field" in capsys.readouterr().err


def test_force_overwrites_a_used_output_folder(tiny_folder, text_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(compress(tiny_folder, text_file, "--method", "svd", "--ratio", "0.3", "--output", str(out),
                         "--force")) == 0
    assert (out / "manifest.json").exists()


def test_unknown_model_and_empty_text(tmp_path, text_file, tiny_folder, capsys):
    assert main(["compress", "--model", "no-such-org/no-such-model", "--method", "svd", "--ratio", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model" in err and ("not reachable" in err or "could not" in err)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["compress", "--model", str(tiny_folder), "--method", "svd", "--ratio", "0.2", "--calib", str(empty),
                 *COMMON]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nowhere")]) == 2
    assert "no folder" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_folder), "--seq-len", "0"]) == 2
    assert "--seq-len: must be a whole number >= 2" in capsys.readouterr().err


def test_errors_never_show_a_traceback_unless_asked(tiny_folder):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    args = [sys.executable, "-m", "svd_explorer", "compress", "--model", str(tiny_folder), "--method", "ressvd",
            "--ratio", "0.5", "--last-layers", "1", "--calib", "self", *COMMON]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and "use at least 2 blocks" in quiet.stderr
    loud = subprocess.run(args + ["--debug"], capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == 2 and "Traceback" in loud.stderr


def test_eval_windows_all_reads_the_whole_text(tiny_folder, text_file, tmp_path):
    """`--eval-windows all` was looked up under a misspelt key and refused as "not a whole number"."""
    args = build_parser().parse_args(["evaluate", "--model", str(tiny_folder), "--eval-windows", "all"])
    assert config_from_args(args).eval_windows is None
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tiny_folder), "--eval", str(text_file), "--eval-windows", "all",
                 "--seq-len", "16", "--json", str(out)]) == 0
    whole = json.loads(out.read_text())["evaluation"]["windows"]
    assert main(["evaluate", "--model", str(tiny_folder), "--eval", str(text_file), "--eval-windows", "2",
                 "--seq-len", "16", "--json", str(out)]) == 0
    assert whole > json.loads(out.read_text())["evaluation"]["windows"] == 2


@pytest.mark.parametrize("config", [
    RunConfig(method="ressvd", ratio=0.3, options={"residual": True}, allocation="depth",
              allocation_options={"blocks": 4}),
    RunConfig(method="ressvd", options={"residual": False}, cost=False, eval_windows=None, seed=5),
    RunConfig(method="svd-llm", allocation="sensitivity", allocation_options={"fractions": "0.4, 0.6", "score": "kl"},
              output="/tmp/my run", force=True, extra_eval=("ptb", "lambada"), revision="refs/pr/1"),
    with_preset("paper", method="aa-svd", refine_steps=50, stats_cache="off", merge=True, quantize="int8"),
])
def test_the_cards_command_line_parses_back_to_the_same_run(config):
    """The command a saved model's card quotes rebuilds its RunConfig: switches as on/off, --no-cost, quoted
    values (a bare --residual, a lost False, an unquoted path with a space each broke it)."""
    words = shlex.split(command_line(config))
    assert words[:4] == ["python", "-m", "svd_explorer", "compress"]
    again = config_from_args(build_parser().parse_args(words[3:]))
    same = ("build_method", "build_allocation")
    assert {**again.to_dict(), "options": {}, "allocation_options": {}} == \
        {**config.to_dict(), "options": {}, "allocation_options": {}}
    assert all(getattr(again, f)().config == getattr(config, f)().config for f in same)


def test_run_config_round_trips_through_json_and_presets_expand():
    config = with_preset("paper", method="aa-svd", ratio=0.3, seq_len=1024, tasks=("piqa", "arc_easy"))
    assert RunConfig.from_json(config.to_json()) == config
    assert config.seq_len == 1024                         # an explicit flag wins over the preset
    for key, value in PRESETS["paper"].values.items():
        if key not in ("seq_len", "calib"):
            assert getattr(config, key) == value, key
    assert with_preset("demo").calib_samples == 32 and with_preset("demo", eval_windows=None).eval_windows is None
    with pytest.raises(ValueError, match="unknown run setting"):
        RunConfig.from_dict({"methd": "svd"})


def test_module_entry_point_and_listings():
    listing = subprocess.run([sys.executable, "-m", "svd_explorer", "methods"], capture_output=True, text=True,
                             timeout=120)
    assert listing.returncode == 0
    for name in REGISTRY:
        assert name in listing.stdout
    allocations = subprocess.run([sys.executable, "-m", "svd_explorer", "allocations"], capture_output=True, text=True,
                                 timeout=120).stdout
    assert all(name in allocations for name in ALLOCATIONS)
    help_text = " ".join(subprocess.run([sys.executable, "-m", "svd_explorer", "compress", "--help"],
                                        capture_output=True, text=True, timeout=120).stdout.split())
    assert "fraction of the parameters" in help_text and "break-even rank" in help_text


def test_info_shows_ranks_before_anything_runs(tiny_folder, capsys):
    assert main(["info", "--model", str(tiny_folder), "--ratio", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kinds"]["q_proj"] == {"shape": [32, 32], "break_even_rank": 16.0, "rank": 8}
    assert info["params_after"] < info["params"]


def test_a_second_ratio_reuses_the_cached_statistics_and_svds(tiny_folder, text_file, tmp_path):
    cache, runs = tmp_path / "stats", {}
    cached, alone = ["--stats-cache", str(cache)], ["--no-stats-cache"]
    for name, ratio, extra in [("first", "0.3", cached), ("second", "0.2", cached), ("alone", "0.2", alone)]:
        assert main(compress(tiny_folder, text_file, "--method", "svd-llm", "--ratio", ratio, *extra,
                             "--json", str(tmp_path / f"{name}.json"))) == 0
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())["calibration"]
        runs[name]["ppl"] = json.loads((tmp_path / f"{name}.json").read_text())["ppl_compressed"]
    assert runs["first"]["statistics"] == "cache computed" and runs["first"]["decompositions"]["reused"] == 0
    assert runs["second"]["statistics"] == "cache hit"
    assert runs["second"]["decompositions"] == {"reused": runs["first"]["decompositions"]["computed"], "computed": 0}
    assert runs["alone"]["decompositions"] == "not stored" and runs["alone"]["ppl"] == runs["second"]["ppl"]


def test_sensitivity_measured_at_one_fraction_end_to_end(tiny_folder, text_file, tmp_path, capsys):
    """`--measure 0.5` runs through the engine: one measured column and the dense model cached, the choice
    recorded, and the development perplexity reported on windows the search never scored on."""
    run_file = tmp_path / "run.json"
    rc = main(compress(tiny_folder, text_file, "--method", "svd-llm", "--ratio", "0.3", "--allocation", "sensitivity",
                       "--measure", "0.5", "--dev-windows", "2", "--stats-cache", str(tmp_path / "cache"),
                       "--json", str(run_file)))
    assert rc == 0, capsys.readouterr().err
    result = json.loads(run_file.read_text())
    assert result["allocation"]["options"]["measure"] == "0.5" and result["allocation"]["info"]["measured"] == "0.5"
    assert result["dev_ppl"] > 0 and result["calibration"]["statistics_seconds"] > 0
    (table,) = (tmp_path / "cache").glob("sensitivity-*.json")
    assert all(set(row) == {"0.5", "1.0"} for row in json.loads(table.read_text())["value"].values())
    rc = main(compress(tiny_folder, text_file, "--method", "svd-llm", "--ratio", "0.3", "--allocation", "sensitivity",
                       "--measure", "0.5", "--score", "kl", "--search-windows", "2", "--stats-cache",
                       str(tmp_path / "cache"), "--json", str(run_file)))
    assert rc == 0, capsys.readouterr().err
    result = json.loads(run_file.read_text())
    assert result["allocation"]["options"]["score"] == "kl" and result["config"]["search_windows"] == 2
    assert len(list((tmp_path / "cache").glob("sensitivity-*.json"))) == 2     # its own table, not the perplexity one


def test_zero_sum_end_to_end_gradients_once_then_from_the_cache(tiny_folder, text_file, tmp_path, capsys):
    """`--allocation zero-sum` takes gradients on the development windows, meets the budget, records its
    predicted change, and a second run at another ratio reads the first-order scores back."""
    run_file, cache = tmp_path / "run.json", tmp_path / "cache"
    for ratio, state in (("0.3", "cache computed"), ("0.4", "cache hit")):
        rc = main(compress(tiny_folder, text_file, "--method", "svd-llm", "--ratio", ratio, "--allocation", "zero-sum",
                           "--floor", "0.1", "--search-windows", "2", "--stats-cache", str(cache),
                           "--json", str(run_file)))
        assert rc == 0, capsys.readouterr().err
        result = json.loads(run_file.read_text())
        info = result["allocation"]["info"]
        assert result["allocation"]["name"] == "zero-sum" and info["floor"] == 0.1
        assert isinstance(info["predicted_change"], float)
        assert result["calibration"]["prepared"]["first-order"] == state
        assert result["linear_params_after"] <= (1 - float(ratio)) * result["linear_params_before"] + 1
    assert len(list(cache.rglob("first-order-*.safetensors"))) == 1
