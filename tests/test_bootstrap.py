"""Tests of mAP/bootstrap.py: the weighted AP against compute_mAP's, a draw against the evaluation of the images
it draws, paired comparisons, and the command line (table, plot, one-line errors)."""
import os

import numpy as np
import pytest
from conftest import found, truth

from mAP import bootstrap_ci as bs
from mAP import voc_ap as cm

FACE, OTHER, FAR = [0, 0, 100, 100], [200, 0, 300, 100], [500, 500, 600, 600]
GROUND_TRUTH = {"a": truth(("mask", FACE), ("unmask", OTHER)),
                "b": truth(("mask", FACE), ("mask", OTHER), ("unmask", FAR, True)),
                "c": truth(("unmask", FACE)),
                "d": truth()}
DETECTIONS = {"a": found(("mask", 0.91, FACE), ("unmask", 0.55, OTHER), ("mask", 0.42, FAR)),
              "b": found(("mask", 0.83, [0, 0, 100, 90]), ("mask", 0.37, FAR), ("unmask", 0.77, FAR)),
              "c": found(("mask", 0.66, FACE), ("unmask", 0.29, FACE)),
              "d": found(("unmask", 0.71, FACE))}


def test_unit_weights_give_compute_maps_average_precision():
    rng = np.random.default_rng(3)
    for _ in range(20):
        outcome = rng.random(rng.integers(1, 40)) < 0.6
        positives = outcome.sum() + rng.integers(0, 5)
        precision, recall = cm.precision_recall(outcome, positives)
        weighted = bs.weighted_average_precision(outcome, np.ones((1, len(outcome))), np.array([positives], float))
        assert weighted[0] == pytest.approx(cm.average_precision(recall, precision))


def test_every_image_once_is_the_full_evaluation():
    outcomes = bs.set_outcomes(GROUND_TRUTH, DETECTIONS)
    assert bs.bootstrap_map(outcomes, np.ones((1, 4)))[0] == pytest.approx(outcomes.mean_ap)
    assert outcomes.mean_ap == pytest.approx(cm.evaluate_detections(GROUND_TRUTH, DETECTIONS).mean_ap)


def test_a_draw_scores_as_the_images_it_draws():
    counts = {"a": 2, "b": 0, "c": 1, "d": 3}      # an image drawn k times is k copies of it
    copies_truth, copies_found = {}, {}
    for name, count in counts.items():
        for copy in range(count):
            copies_truth[f"{name}{copy}"] = GROUND_TRUTH[name]
            copies_found[f"{name}{copy}"] = DETECTIONS[name]
    expected = cm.evaluate_detections(copies_truth, copies_found).mean_ap
    draw = np.array([[counts[name] for name in GROUND_TRUTH]], float)
    assert bs.bootstrap_map(bs.set_outcomes(GROUND_TRUTH, DETECTIONS), draw)[0] == pytest.approx(expected)


def test_draws_are_seeded_and_keep_the_number_of_images():
    draws = bs.image_draws(7, 50, seed=1)
    assert draws.shape == (50, 7) and (draws.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(draws, bs.image_draws(7, 50, seed=1))
    assert not np.array_equal(draws, bs.image_draws(7, 50, seed=2))


def test_a_run_against_itself_and_against_a_worse_one():
    run = bs.set_outcomes(GROUND_TRUTH, DETECTIONS)
    worse = dict(DETECTIONS, a=found(("mask", 0.2, FACE), ("unmask", 0.55, OTHER), ("mask", 0.42, FAR)))
    baseline = bs.set_outcomes(GROUND_TRUTH, worse)
    same = bs.compare_sets({"set": run, "other": run}, {"set": run, "other": run}, num_samples=200)
    assert [row.name for row in same] == ["set", "other", "mean"]
    assert all((row.difference_draws == 0).all() and row.share_ahead == 0.5 for row in same)
    better = bs.compare_sets({"set": run}, {"set": baseline}, num_samples=200)
    assert len(better) == 1 and better[0].run_map > better[0].baseline_map
    assert (better[0].difference_draws >= 0).all() and better[0].share_ahead > 0.5
    low, high = bs.interval(better[0].run_draws)
    assert 0.0 <= low <= high <= 1.0


def test_paired_sets_must_score_the_same_images():
    run = bs.set_outcomes(GROUND_TRUTH, DETECTIONS)
    fewer = {name: GROUND_TRUTH[name] for name in "abc"}
    baseline = bs.set_outcomes(fewer, {name: DETECTIONS[name] for name in "abc"})
    with pytest.raises(ValueError, match="set: the run and the baseline score different images"):
        bs.compare_sets({"set": run}, {"set": baseline}, num_samples=10)


def write_set(folder, ground_truth, detections):
    """A set folder as mAP/detect.py writes it."""
    for sub, rows in (("ground-truth", ground_truth), ("detection-results", detections)):
        os.makedirs(os.path.join(folder, sub))
        for name, item in rows.items():
            with open(os.path.join(folder, sub, f"{name}.txt"), "w") as handle:
                for index, label in enumerate(item.labels):
                    score = f" {item.scores[index]:.2f}" if sub == "detection-results" else ""
                    flag = " difficult" if sub == "ground-truth" and item.difficult[index] else ""
                    handle.write(f"{label}{score} {' '.join(f'{v:g}' for v in item.boxes[index])}{flag}\n")


def test_command_line_writes_the_table_and_plot(tmp_path, capsys):
    from cli.bootstrap_map import main
    write_set(str(tmp_path / "run" / "Maskdata"), GROUND_TRUTH, DETECTIONS)
    write_set(str(tmp_path / "base" / "Maskdata"), GROUND_TRUTH, dict(DETECTIONS, c=found()))
    output = tmp_path / "out"
    assert main(["--set_dirs", str(tmp_path / "run" / "Maskdata"), "--baseline_dirs",
                 str(tmp_path / "base" / "Maskdata"), "--samples", "50", "--output_dir", str(output)]) in (0, None)
    printed = capsys.readouterr().out
    assert "difference [95% interval]" in printed and "Maskdata" in printed
    assert (output / bs.TABLE_FILE_NAME).read_text().splitlines()[1:] == printed.splitlines()[1:3]
    assert (output / bs.PLOT_FILE_NAME).stat().st_size > 1000


@pytest.mark.parametrize("flags, message", [
    (["--samples", "1"], "--samples: must be at least 2, got 1"),
    (["--baseline_dirs", "x,y"], "--baseline_dirs: 2 folders for 1 in --set_dirs"),
    (["--set_dirs", "missing_folder"], "missing_folder: set folder not found"),
    (["--iou", "0"], "--iou: must be in (0, 1], got 0"),
])
def test_command_line_errors_are_one_line(tmp_path, capsys, flags, message):
    from cli.bootstrap_map import main
    write_set(str(tmp_path / "Maskdata"), GROUND_TRUTH, DETECTIONS)
    argv = ["--set_dirs", str(tmp_path / "Maskdata"), "--output_dir", str(tmp_path / "out")] + flags
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
