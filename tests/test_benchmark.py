"""benchmark.py end to end on the shipped model, Keras only and few runs (the full run is a script, not a test)."""
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_MODEL = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")


@pytest.mark.slow
def test_benchmark_reports_single_pass_and_flip_test_side_by_side(tmp_path, capsys):
    import benchmark
    output = tmp_path / "report.md"
    status = benchmark.main(["--model_path", SHIPPED_MODEL, "--formats", "keras", "--skip_map", "--runs", "4",
                             "--warmup", "1", "--video_frames", "4", "--output", str(output)])
    assert status == 0, capsys.readouterr().err
    report = output.read_text()
    row = next(line for line in report.splitlines() if line.startswith("| keras |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    single_ms, flip_ms = float(cells[4]), float(cells[8])
    assert 0 < single_ms < flip_ms              # the flip test runs the model on two images
    assert re.search(r"^\| keras \+ flip test \| \d+\.\d \|", report, re.M)   # video with the flip test too
    assert re.search(r"^\| keras \(fastest single pass\) \| \d+\.\d \|", report, re.M)


@pytest.mark.slow
def test_benchmark_on_a_grid_without_mirror_symmetry_reports_flip_test_not_applicable(tiny_model, tmp_path, capsys):
    import benchmark
    output = tmp_path / "report.md"
    status = benchmark.main(["--model_path", tiny_model, "--formats", "keras", "--skip_map", "--runs", "2",
                             "--warmup", "1", "--video_frames", "2", "--output", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = output.read_text()
    row = next(line for line in report.splitlines() if line.startswith("| keras |"))
    assert "n/a (priors not symmetric)" in row
    # neither timed nor run on video: on this grid it would only be the single pass again
    assert "timing round" in captured.out + captured.err
    assert "+ flip test" not in report + captured.out + captured.err
