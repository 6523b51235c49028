"""benchmark.py end to end: one pass and TTA side by side per runtime, mAP on several validation TFRecords, the
video of the default and --tta (few runs; the full run is a script, not a test)."""
import os
import re
import shutil

import pytest
from conftest import REPO_ROOT, SHIPPED_MODEL


def table(report, first_column="format"):
    """(header cells, {first cell: {column: cell}}) of the Markdown table of ``report`` whose first column is
    ``first_column``."""
    lines = report.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


@pytest.fixture(scope="module")
def symmetric_tiny_model(tmp_path_factory):
    """A small random 'slim' model at 240x320, where every prior has its mirror image (the flip test runs)."""
    from conftest import make_tiny_cfg

    from network.network import build_model
    from training.trainer import export_model
    config = make_tiny_cfg()
    config = config.replace(network="slim", base_channel=4, input_size=(240, 320))
    return export_model(build_model(config), config, str(tmp_path_factory.mktemp("model")), name="tiny320.keras")


@pytest.fixture(scope="module")
def two_val_sets(voc_mini_tfrecords, tmp_path_factory):
    """Two validation TFRecords of different names (the voc_mini val split twice), with their class lists."""
    folder = tmp_path_factory.mktemp("val_sets")
    paths = []
    for name in ("val_a", "val_b"):
        path = str(folder / f"{name}.tfrecord")
        shutil.copy(voc_mini_tfrecords["val"], path)
        shutil.copy(voc_mini_tfrecords["val"][:-len(".tfrecord")] + ".classes.json", path[:-len(".tfrecord")]
                    + ".classes.json")
        paths.append(path)
    return paths


def test_report_puts_one_pass_and_tta_side_by_side_for_every_runtime_and_val_set():
    from benchmarks.models import MODEL, ONE_PASS, REFERENCE_LABEL, TTA, BenchmarkResults, Row, VideoRow
    from benchmarks.models_report import render
    results = BenchmarkResults("m.keras", "2026-01-01 00:00", "1.00", "1.00", (240, 320), runs=8, warmup=1,
                               val_sets=["val_mask", "val_ilc"], notes=["x.tfrecord: validation TFRecord not found"])
    maps = {(setting, name): value for setting, name, value in
            [(ONE_PASS, "val_mask", 0.9), (TTA, "val_mask", 0.93), (ONE_PASS, "val_ilc", 0.6), (TTA, "val_ilc", 0.7)]}
    results.rows = [
        Row("keras", "keras", "TF", "m.keras", 4.0, "flip test + scales 1, 2, 0.5", 6,
            {MODEL: (5.0, 6.0), ONE_PASS: (7.0, 8.0), TTA: (70.0, 80.0)}, maps),
        Row("tflite_int8", "tflite_int8", "LiteRT", "m_int8.tflite", 1.0, "flip test", 2,
            {MODEL: (1.0, 1.5), ONE_PASS: (3.0, 4.0), TTA: (5.0, 6.0)},
            {key: value - 0.005 for key, value in maps.items()}),
        Row(REFERENCE_LABEL, "reference", "LiteRT", "ref.tflite", 3.9, "n/a (published one pass)", 0,
            {MODEL: (8.0, 9.0), ONE_PASS: (10.0, 11.0)}, {(ONE_PASS, "val_mask"): 0.88, (ONE_PASS, "val_ilc"): 0.53})]
    results.video_rows = [VideoRow("keras", ONE_PASS, "(default)", 1, 60.0, 600),
                          VideoRow("keras", TTA, "--tta (the old default)", 6, 10.0, 100),
                          VideoRow("tflite_int8", ONE_PASS, "--model_path m_int8.tflite", 1, 90.0, 600)]
    results.fastest = "tflite_int8"
    report = render(results)
    header, rows = table(report)
    assert header[-4:] == ["one pass mAP val_mask", "TTA mAP val_mask", "one pass mAP val_ilc", "TTA mAP val_ilc"]
    assert [rows["keras"][column] for column in header[-4:]] == ["0.9000", "0.9300", "0.6000", "0.7000"]
    assert rows["tflite_int8"]["TTA"] == "flip test (2 passes)" and rows["tflite_int8"]["TTA ms/image"] == "5.00"
    assert [rows[REFERENCE_LABEL][column] for column in header[-4:]] == ["0.8800", "n/a", "0.5300", "n/a"]
    assert "Note: x.tfrecord: validation TFRecord not found" in report
    assert "tflite_int8 vs keras, one pass, points of mAP: val_mask -0.50, val_ilc -0.50" in report
    assert "10.0x the ms per image, points of mAP: val_mask +3.00, val_ilc +10.00." in report
    assert "(8.00 ms, same rounds, batch 1, 2 threads): keras 0.62, tflite_int8 0.12 (target" in report
    _, video = table(report, "path")
    assert video["keras TTA"]["FPS"] == "10.0" and video["keras one pass"]["ms / frame"] == "16.7"
    assert "tflite_int8 one pass (fastest one pass)" in video
    assert "over `--tta` (the old default): 6.00x the frames per second (target: at least 3x)" in report


@pytest.mark.slow
def test_benchmark_reports_one_pass_and_tta_of_every_runtime_on_every_val_set(symmetric_tiny_model, two_val_sets,
                                                                            tmp_path, capsys):
    import benchmark
    output = tmp_path / "report.md"
    missing = str(tmp_path / "val_missing.tfrecord")
    status = benchmark.main(["--model_path", symmetric_tiny_model, "--formats", "keras,tflite", "--val_tfrecord",
                             ",".join(two_val_sets + [missing]), "--reference", "none", "--runs", "4",
                             "--warmup", "1", "--video_frames", "4", "--output", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = output.read_text()
    assert report in captured.out                                   # printed too
    header, rows = table(report)
    for name in ("val_a", "val_b"):
        assert f"one pass mAP {name}" in header and f"TTA mAP {name}" in header
    assert not any("val_missing" in column for column in header)
    assert re.search(rf"^Note: {re.escape(missing)}: validation TFRecord not found", report, re.M)
    assert set(rows) == {"keras", "tflite", "tflite (XNNPACK off)"}
    keras, tflite = rows["keras"], rows["tflite"]
    assert keras["TTA"] == "flip test + scales 1, 2, 0.5 (6 passes)"   # each scale with its flip test here
    assert tflite["TTA"] == "flip test (2 passes)"                    # an export runs one input size
    assert 0 < float(keras["one pass ms/image"]) < float(keras["TTA ms/image"])
    for row in (keras, tflite):
        assert float(row["model ms"]) > 0 and float(row["TTA ms/image"]) > 0
        for column in header[header.index("TTA ms/image") + 1:]:
            assert 0 <= float(row[column]) <= 1, (row["format"], column)
    # both copies of the set score alike; the XNNPACK-off row is the same model, timed only
    assert keras["one pass mAP val_a"] == keras["one pass mAP val_b"]
    assert rows["tflite (XNNPACK off)"]["one pass mAP val_a"] == "(same model)"
    assert float(rows["tflite (XNNPACK off)"]["one pass ms/image"]) > 0
    assert "TTA vs one pass (keras: flip test + scales 1, 2, 0.5, 6 passes)" in report
    _, video = table(report, "path")
    assert video["keras one pass"]["inference.py flags"] == "(default)"
    assert video["keras TTA"]["inference.py flags"] == "--tta (the old default)"
    assert (video["keras one pass"]["passes / frame"], video["keras TTA"]["passes / frame"]) == ("1", "6")
    assert "frames of 640x480" in report
    factor = float(re.search(r"over `--tta` \(the old default\): (\d+\.\d+)x the frames per second", report)[1])
    expected = float(video["keras one pass"]["FPS"]) / float(video["keras TTA"]["FPS"])
    assert factor == pytest.approx(expected, rel=0.05) and factor > 1
    fastest = [path for path in video if path.endswith("(fastest one pass)")]
    assert len(fastest) == 1


@pytest.mark.slow
def test_benchmark_on_a_grid_without_mirror_symmetry_reports_export_tta_not_applicable(tiny_model, voc_mini_tfrecords,
                                                                                     tmp_path, capsys):
    import benchmark
    output = tmp_path / "report.md"
    status = benchmark.main(["--model_path", tiny_model, "--formats", "keras,tflite", "--val_tfrecord",
                             voc_mini_tfrecords["val"], "--reference", "none", "--runs", "2", "--warmup", "1",
                             "--video_frames", "2", "--output", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    header, rows = table(output.read_text())
    # at 120x160 the priors have no mirror images: an export's TTA would be the one pass again, so it is neither
    # timed nor scored; the .keras model still runs its other scales
    assert rows["tflite"]["TTA"] == "n/a (priors not mirror-symmetric)"
    assert rows["tflite"]["TTA ms/image"] == "-" and rows["tflite"]["TTA mAP val_mask"] == "n/a"
    assert rows["keras"]["TTA"].startswith("scales 1, 2, 0.5")
    assert float(rows["keras"]["TTA mAP val_mask"]) >= 0


def test_benchmark_refuses_when_no_val_tfrecord_exists(tmp_path, capsys):
    import benchmark
    missing = [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]
    status = benchmark.main(["--model_path", SHIPPED_MODEL, "--val_tfrecord", ",".join(missing),
                             "--output", str(tmp_path / "report.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: --val_tfrecord: none of") and missing[1] in err[0]
    assert not (tmp_path / "report.md").exists()


def test_benchmark_report_goes_to_runs_by_default():
    from cli.benchmark import build_parser
    args = build_parser().parse_args([])
    assert args.output == os.path.join(REPO_ROOT, "runs", "benchmark.md")
    assert [os.path.basename(path) for path in args.val_tfrecord] == ["val_mask.tfrecord", "val_ilc.tfrecord"]


@pytest.mark.slow
def test_benchmark_of_the_shipped_model_times_tta_slower_than_one_pass(tmp_path, capsys):
    import benchmark
    output = tmp_path / "report.md"
    status = benchmark.main(["--model_path", SHIPPED_MODEL, "--formats", "keras", "--skip_map", "--runs", "4",
                             "--warmup", "1", "--video_frames", "4", "--reference", "none", "--output", str(output)])
    assert status == 0, capsys.readouterr().err
    report = output.read_text()
    _, rows = table(report)
    keras = rows["keras"]
    assert 0 < float(keras["model ms"]) < float(keras["one pass ms/image"]) < float(keras["TTA ms/image"])
    assert re.fullmatch(r"flip test \+ scales 1, 2, 0\.5 \([56] passes\)", keras["TTA"])
    assert "mAP not computed" in report
    _, video = table(report, "path")
    assert float(video["keras TTA"]["FPS"]) < float(video["keras one pass (fastest one pass)"]["FPS"])
