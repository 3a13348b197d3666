"""Sweeps on a local Ray with 2 CPUs and a tiny model: results, resume, refusal of another protocol, failures."""
import json
import time

import pytest

from svd_explorer.cli.main import main
from svd_explorer.errors import ConfigError
from svd_explorer.study.sweep import reference_forward

pytestmark = pytest.mark.filterwarnings("ignore")


def sweep(tiny_folder, text_file, out, *extra, methods="svd,svd-llm", ratios="0.2,0.4"):
    return main(["sweep", "--model", str(tiny_folder), "--methods", methods, "--ratios", ratios, "--seeds", "0",
                 "--calib", str(text_file), "--eval", str(text_file), "--seq-len", "16", "--calib-samples", "4",
                 "--eval-windows", "2", "--batch-size", "2", "--cpus-per-run", "1", "--out", str(out), *extra])


def results(out):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def test_a_sweep_runs_every_configuration_then_resumes_only_what_is_missing(tiny_folder, text_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep(tiny_folder, text_file, out) == 0
    first = results(out)
    assert len(first) == 4 and all(r["status"] == "done" for r in first.values())
    assert {r["method"] for r in first.values()} == {"svd", "svd-llm"}
    summary = (out / "summary.md").read_text()
    assert "| svd-llm | auto | auto | 0.2 | 1 |" in summary and (out / "pareto.html").stat().st_size > 10_000
    assert "svd-llm" in (out / "summary.csv").read_text()
    stats = json.loads((out / "statistics.json").read_text())
    assert all(r["calib_forward_seconds"] == stats["0"]["calib_forward_seconds"] > 0 for r in first.values())
    removed = sorted(first)[0]
    (out / "runs" / removed).unlink()
    stamps = {name: (out / "runs" / name).stat().st_mtime for name in first if name != removed}
    capsys.readouterr()
    time.sleep(0.05)
    assert sweep(tiny_folder, text_file, out) == 0
    assert "4 runs, 3 already done, 1 to do" in capsys.readouterr().err
    again = results(out)
    assert set(again) == set(first)
    assert all((out / "runs" / name).stat().st_mtime == stamp for name, stamp in stamps.items())
    assert again[removed]["ppl_compressed"] == pytest.approx(first[removed]["ppl_compressed"], rel=1e-6)
    assert sweep(tiny_folder, text_file, out, "--eval-windows", "3") == 2
    assert "eval_windows was 2, now 3" in capsys.readouterr().err


def test_every_run_divides_by_the_least_disturbed_forward_of_its_seeds():
    """A forward timed while the machine was busy (seed 0 here) must not make the runs of that seed look fast."""
    prepared = {0: {"calib_forward_seconds": 491.6}, 1: {"calib_forward_seconds": 35.8},
                2: {"calib_forward_seconds": 35.3}}
    assert reference_forward(prepared.values()) == 35.3


def test_a_failing_run_is_retried_recorded_and_does_not_stop_the_others(tiny_folder, tmp_path):
    """Sensitivity needs development text outside the calibration windows; this text is too short for it,
    which only shows once the run works: those runs fail (twice: Ray retries once), the uniform ones finish.
    `--measure` goes to the allocations that have it (not to uniform, nor to the statistics pass)."""
    short = tmp_path / "short.txt"
    short.write_text("The quick brown fox jumps over the lazy dog. " * 2)
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", str(tiny_folder), "--methods", "svd", "--allocations", "uniform,sensitivity",
                 "--ratios", "0.3", "--calib", str(short), "--eval", str(short), "--seq-len", "16",
                 "--calib-samples", "8", "--eval-windows", "2", "--batch-size", "2", "--cpus-per-run", "1",
                 "--measure", "0.5", "--out", str(out)]) == 0
    rows = {r["config"]["allocation"]: r for r in results(out).values()}
    assert rows["uniform"]["status"] == "done" and rows["uniform"]["config"]["allocation_options"] == {}
    assert rows["sensitivity"]["config"]["allocation_options"] == {"measure": "0.5"}
    assert rows["sensitivity"]["status"] == "failed" and "not enough text" in rows["sensitivity"]["error"]
    assert rows["sensitivity"]["attempts"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--methods", "svd,magic"], "unknown method 'magic'"),
    (["--ratios", "0.2,1.5"], "--ratios: 1.5 is outside (0, 1)"),
    (["--seeds", "x"], "--seeds: 'x' is not a whole number"),
    (["--address", "ray://127.0.0.1:1"], "cannot be reached"),
])
def test_bad_sweeps_are_refused_before_any_task_starts(tiny_folder, text_file, tmp_path, extra, message, capsys):
    start = time.time()
    args = ["sweep", "--model", str(tiny_folder), "--methods", "svd", "--ratios", "0.2", "--calib", str(text_file),
            "--seq-len", "16", "--calib-samples", "4", "--out", str(tmp_path / "s")]
    for flag in extra[::2]:
        index = args.index(flag) if flag in args else None
        if index is not None:
            del args[index:index + 2]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err and time.time() - start < 20
    assert not (tmp_path / "s" / "runs").exists() or not list((tmp_path / "s" / "runs").iterdir())


def write_zip(path, members: dict):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


RESULT = json.dumps({"method": "svd", "config": {"seed": 0}, "ratio": 0.2, "params_after": 8, "params_before": 10,
                     "seconds": 1.0})
SHAPED = {"method": "svd", "config": {"seed": 0}, "ratio": 0.2, "params_after": 8, "params_before": 10, "seconds": 1.0}


@pytest.mark.parametrize("members, message", [
    ({"../evil.json": RESULT}, "points outside the folder"),
    ({"runs/a.py": "print(1)"}, "is not a sweep file"),
    ({"runs/a.json": "{not json"}, "is not valid JSON"),
    ({"runs/a.json": RESULT, "runs/b.json": " " * 4000}, "unpacks to more than"),
    ({"runs/a.json": "[" * 1900}, "is not valid JSON"),                                 # RecursionError
    ({"runs/a.json": json.dumps({**SHAPED, "seconds": None})}, "not a run result"),     # aggregate's KeyError
    ({"runs/a.json": json.dumps({**SHAPED, "params_before": 0})}, "not a run result"),  # ZeroDivisionError
    ({"runs/a.json": json.dumps({**SHAPED, "config": ["seed"]})}, "not a run result"),  # AttributeError
    ({"runs/a.json": json.dumps({**SHAPED, "config": {}})}, "not a run result"),       # aggregate's seed
    ({"runs/a.json": json.dumps({**SHAPED, "seconds": 10**400})}, "not a run result"),  # OverflowError
])
def test_an_uploaded_sweep_zip_is_refused_by_name_when_unsafe(tmp_path, monkeypatch, members, message):
    from svd_explorer.study import comparison

    monkeypatch.setattr(comparison, "ZIP_TOTAL_LIMIT", 2000)
    with pytest.raises(comparison.ComparisonError, match=message):
        comparison.read_zip(write_zip(tmp_path / "sweep.zip", members))


def test_an_uploaded_sweep_zip_gives_its_results(tmp_path):
    from svd_explorer.study.comparison import aggregate, read_zip

    rows = read_zip(write_zip(tmp_path / "sweep.zip", {"runs/a.json": RESULT, "summary.md": "| x |"}))
    assert [r["method"] for r in rows] == ["svd"]
    padded = {**SHAPED, "layers": ["x" * 1000] * 1000, "kl_to_original": "high", "extra_ppl": {"ptb": "no"}}
    row = read_zip(write_zip(tmp_path / "padded.zip", {"runs/a.json": json.dumps(padded)}))[0]
    assert "layers" not in row and row["kl_to_original"] is None and row["extra_ppl"] == {}   # what is kept of it
    assert row["evaluation"] == {}                       # no source: the folder reader's column name, not "None"
    assert aggregate([row])[0]["kept"] == (0.8, None)


def test_a_damaged_zip_member_is_refused_by_name(tmp_path):
    from svd_explorer.study.comparison import ComparisonError, read_zip

    path = write_zip(tmp_path / "sweep.zip", {"runs/a.json": json.dumps(SHAPED)})
    data = bytearray(path.read_bytes())
    data[data.index(b"PK\x01\x02") + 16] ^= 0xFF                      # the member's CRC, as the directory says
    path.write_bytes(bytes(data))
    with pytest.raises(ComparisonError, match="runs/a.json cannot be read from the archive"):
        read_zip(path)


def test_a_runs_time_counts_its_allocation_search():
    """A sensitivity table can take far longer than the compression: "x fwd" must include it."""
    from svd_explorer.study.comparison import aggregate

    run = {"method": "asvd", "ratio": 0.2, "config": {"seed": 0, "allocation": "sensitivity"}, "params_after": 8,
           "params_before": 10, "seconds": 6.0, "allocation_seconds": 454.0, "calib_forward_seconds": 20.0}
    row = aggregate([run])[0]
    assert row["seconds"] == (460.0, None) and row["x_forward"] == (23.0, None)


def test_a_sweeps_allocation_drawn_in_its_own_style_when_it_has_options():
    """The summary names "sensitivity (measure=0.5 score=kl)", which the line styles missed: it was drawn solid,
    as uniform is."""
    from svd_explorer.figures.plots import pareto_figure
    from svd_explorer.study.comparison import aggregate

    def run(allocation, options):
        return {"method": "svd-llm", "ratio": 0.2, "ppl_compressed": 50.0, "evaluation": {"source": "wikitext2"},
                "params_after": 8, "params_before": 10, "seconds": 1.0,
                "config": {"seed": 0, "allocation": allocation, "allocation_options": options}}
    summary = aggregate([run("sensitivity", {"measure": 0.5, "score": "kl"}), run("uniform", {})])
    dashes = {t.name: t.line.dash for t in pareto_figure(summary, [], "ppl_wikitext2").data}
    assert dashes == {"svd-llm + sensitivity (measure=0.5 score=kl)": "dashdot", "svd-llm + uniform": "solid"}


def test_a_sweeps_allocation_options_go_to_the_allocations_that_have_them(tiny_folder, text_file):
    from svd_explorer.cli.main import build_parser
    from svd_explorer.cli.sweep import grid
    from svd_explorer.study.comparison import group_key
    from svd_explorer.study.sweep import run_name

    args = build_parser().parse_args(["sweep", "--model", str(tiny_folder), "--methods", "svd-llm", "--ratios", "0.2",
                                      "--allocations", "uniform,sensitivity", "--measure", "0.5",
                                      "--calib", str(text_file), "--seq-len", "16", "--out", "x"])
    uniform, sensitivity = grid(args)
    assert uniform.allocation_options == {} and sensitivity.allocation_options == {"measure": "0.5"}
    assert run_name(sensitivity) == "svd-llm-sensitivity_measure0.5-refine_auto-r0.2-s0"
    row = {"method": "svd-llm", "ratio": 0.2, "config": sensitivity.to_dict()}
    assert group_key(row)[1] == "sensitivity (measure=0.5)"


def test_a_sweep_takes_seed_auto_options_and_refuses_an_option_nothing_uses(tiny_folder, text_file):
    """--seed was overwritten by --seeds' default 0; --blocks was dropped for ressvd's auto (depth) allocation, and
    an option no allocation of the grid has was dropped without a word."""
    from svd_explorer.cli.main import build_parser
    from svd_explorer.cli.sweep import grid

    def configs(*extra):
        return grid(build_parser().parse_args(["sweep", "--model", str(tiny_folder), "--ratios", "0.2", "--calib",
                                               str(text_file), "--seq-len", "16", "--out", "x", *extra]))
    assert [c.seed for c in configs("--methods", "svd", "--seed", "5")] == [5]
    assert [c.seed for c in configs("--methods", "svd", "--seed", "5", "--seeds", "1,2")] == [1, 2]
    auto, depth = configs("--methods", "ressvd", "--allocations", "auto,depth", "--blocks", "2")
    assert auto.allocation_options == depth.allocation_options == {"blocks": "2"}
    with pytest.raises(ConfigError, match="--measure applies to no allocation of this sweep"):
        configs("--methods", "svd", "--allocations", "uniform", "--measure", "0.5")


def test_a_sweep_folder_refuses_a_rerun_that_quantizes_and_accepts_an_older_folder(tmp_path):
    """--quantize changes every number, so a folder written without it must not count its runs as done; a folder
    written before the field existed still reads as the default."""
    from svd_explorer.run.config import RunConfig
    from svd_explorer.study.sweep import check_folder, protocol

    check_folder(tmp_path, [RunConfig()])
    with pytest.raises(ConfigError, match="quantize was 'none', now 'int8'"):
        check_folder(tmp_path, [RunConfig(quantize="int8")])
    older = {k: v for k, v in protocol(RunConfig()).items() if k not in ("quantize", "tasks", "limit", "task_data")}
    (tmp_path / "sweep.json").write_text(json.dumps(older))
    check_folder(tmp_path, [RunConfig()])


def test_a_worker_loads_its_model_once_and_every_run_on_it_scores_as_a_fresh_load(tiny_folder, text_file):
    """The sweep's workers keep the original model between runs: the runs must not see each other."""
    from dataclasses import replace

    from svd_explorer.run.config import RunConfig
    from svd_explorer.run.engine import run
    from svd_explorer.run.plan import plan
    from svd_explorer.study.sweep import held_model

    config = RunConfig(model=str(tiny_folder), method="svd-llm", ratio=0.2, calib=str(text_file),
                       eval_source=str(text_file), seq_len=16, calib_samples=4, eval_windows=2, batch_size=2,
                       cost=False, stats_cache="off")
    first, second = plan(config), plan(replace(config, method="svd", ratio=0.4, seed=1))
    held = held_model(first)
    assert held_model(second) is held
    records = [run(p, loaded=held, measure_forward=False).record for p in (first, second)]
    assert "--no-cost" in records[0].cost["skipped"]                    # a run without cost says so
    reused = [record.scores for record in records]
    fresh = [run(p, measure_forward=False).record.scores for p in (first, second)]
    for a, b in zip(reused, fresh):
        assert a["ppl_compressed"] == pytest.approx(b["ppl_compressed"], rel=1e-6)
        assert a["ppl_original"] == pytest.approx(b["ppl_original"], rel=1e-6)
