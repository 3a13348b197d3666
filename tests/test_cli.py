"""The command line, end to end on a tiny local model, and its answers to bad input."""
import json
import subprocess
import sys

import pytest

from svd_explorer.cli import main

COMMON = ["--seq-len", "16", "--calib-samples", "4", "--eval-windows", "3", "--batch-size", "2"]


def compress(tiny_folder, text_file, *extra):
    return ["compress", "--model", str(tiny_folder), "--calib", str(text_file), "--eval", str(text_file),
            *COMMON, *extra]


def test_compress_then_evaluate_the_saved_model(tiny_folder, text_file, tmp_path, capsys):
    out, result_file = tmp_path / "model", tmp_path / "run.json"
    rc = main(compress(tiny_folder, text_file, "--method", "saes-svd", "--ratio", "0.3", "--output", str(out),
                       "--json", str(result_file)))
    assert rc == 0, capsys.readouterr().err
    result = json.loads(result_file.read_text())
    for key in ("model", "method", "ratio", "params_before", "params_after", "ppl_original", "ppl_compressed",
                "kl_to_original", "top1_agreement", "seconds", "calib_forward_seconds", "peak_rss_mb", "layers",
                "depth_error"):
        assert key in result, key
    assert result["params_after"] < result["params_before"] and result["kl_to_original"] > 0
    assert result["layers"][0]["extra"]["aces"]["beta"] is not None and len(result["depth_error"]) == 3
    assert "block 0 done" in capsys.readouterr().err  # progress goes to stderr

    rc = main(["evaluate", "--model", str(out), "--eval", str(text_file), "--seq-len", "16", "--eval-windows", "3",
               "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["params"] == result["params_after"]
    assert evaluated["ppl"] == pytest.approx(result["ppl_compressed"], rel=1e-4)
    assert evaluated["manifest"]["method"] == "saes-svd"


@pytest.mark.parametrize("args, message", [
    (["--method", "svd", "--ratio", "1.5"], "strictly between 0 and 1"),
    (["--method", "svd", "--ratio", "0"], "strictly between 0 and 1"),
    (["--method", "magic", "--ratio", "0.2"], "unknown method 'magic'"),
    (["--method", "svd", "--ratio", "0.2", "--beta", "0.3"], "--beta does not apply to method svd"),
    (["--method", "ressvd", "--ratio", "0.5", "--last-layers", "1"], "use at least 2 blocks"),
])
def test_bad_arguments_get_a_clear_message(tiny_folder, text_file, args, message, capsys):
    assert main(compress(tiny_folder, text_file, *args)) == 2
    assert message in capsys.readouterr().err


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


def test_module_entry_point_and_method_list():
    done = subprocess.run([sys.executable, "-m", "svd_explorer", "methods"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    for name in ("svd", "asvd", "svd-llm", "ressvd", "aa-svd", "saes-svd"):
        assert name in done.stdout
    help_text = " ".join(subprocess.run([sys.executable, "-m", "svd_explorer", "compress", "--help"],
                                        capture_output=True, text=True, timeout=120).stdout.split())
    assert "fraction of the parameters" in help_text and "break-even rank" in help_text


def test_info_shows_ranks_before_anything_runs(tiny_folder, capsys):
    assert main(["info", "--model", str(tiny_folder), "--ratio", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kinds"]["q_proj"] == {"shape": [32, 32], "break_even_rank": 16.0, "rank": 8}
    assert info["params_after"] < info["params"]
