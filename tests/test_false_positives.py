"""Tests of mAP/false_positives.py: the kind of each false positive, the AP without a kind, the table and plot
that mAP/analyse_errors.py writes, and compute_mAP's per-detection outcomes they rest on."""
import numpy as np
import pytest
from conftest import found, truth

from mAP import error_analysis as ae
from mAP import false_positives as fp
from mAP import voc_ap as cm

FACE, OTHER = [0, 0, 100, 100], [200, 0, 300, 100]
GROUND_TRUTH = {"a": truth(("mask", FACE), ("unmask", OTHER)), "b": truth(("mask", [0, 0, 50, 50], True))}
DETECTIONS = {"a": found(("mask", 0.9, FACE),                 # true positive
                         ("mask", 0.8, [0, 0, 100, 90]),      # duplicate: IoU 0.9 with a face already found
                         ("mask", 0.7, [50, 0, 150, 100]),    # localisation: IoU 1/3
                         ("mask", 0.6, [200, 0, 300, 95]),    # wrong class: IoU 0.95 with the unmask face
                         ("mask", 0.5, [500, 500, 600, 600]), # background
                         ("mask", 0.2, [120, 0, 200, 100])),  # background: IoU 0 with its class's face
              "b": found(("mask", 0.95, [0, 0, 50, 50]),      # on a difficult box: not counted
                         ("mask", 0.4, [0, 0, 50, 20]),       # IoU 0.4 with a difficult box only: background
                         ("unmask", 0.9, [0, 0, 10, 10]))}    # an image without its class: background


def test_compute_map_keeps_each_counted_detection_with_its_outcome():
    result = cm.evaluate_class("mask", GROUND_TRUTH, DETECTIONS)
    assert result.images == ["a"] * 5 + ["b", "a"]                  # score order, the difficult one left out
    np.testing.assert_allclose(result.scores, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2])
    assert result.true_positive.tolist() == [True] + [False] * 6
    assert (result.true_positive.sum(), len(result.true_positive)) == (result.true_positives,
                                                                      len(result.precision))
    np.testing.assert_allclose(result.boxes[2], [50, 0, 150, 100])


def test_each_false_positive_gets_its_kind():
    result = cm.evaluate_class("mask", GROUND_TRUTH, DETECTIONS)
    assert fp.false_positive_kinds(result, GROUND_TRUTH).tolist() == [
        "", "duplicate", "localisation", "wrong class", "background", "background", "background"]
    unmask = cm.evaluate_class("unmask", GROUND_TRUTH, DETECTIONS)
    assert fp.false_positive_kinds(unmask, GROUND_TRUTH).tolist() == ["background"]


def test_ap_without_a_kind_by_hand():
    ground_truth = {"a": truth(("mask", FACE), ("mask", OTHER))}
    detections = {"a": found(("mask", 0.9, [500, 500, 600, 600]), ("mask", 0.8, FACE), ("mask", 0.7, OTHER))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    assert result.ap == pytest.approx(2 / 3)                         # precision 1/2 then 2/3: envelope 2/3
    kinds = fp.false_positive_kinds(result, ground_truth)
    assert fp.ap_without(result, kinds == "background") == pytest.approx(1.0)
    assert fp.ap_without(result, kinds == "duplicate") == pytest.approx(2 / 3)


def test_rows_count_false_positives_at_the_score_and_skip_classes_without_faces():
    ground_truth = dict(GROUND_TRUTH, c=truth(("ignored", FACE, True)))
    rows = fp.false_positive_rows(ground_truth, dict(DETECTIONS, c=found()), score_threshold=0.3)
    assert [row.class_name for row in rows] == ["mask", "unmask"]
    mask = rows[0]
    assert mask.counts == {"background": 2, "localisation": 1, "wrong class": 1, "duplicate": 1}
    assert mask.ap == pytest.approx(1.0)                             # the true positive ranks first
    assert all(value == pytest.approx(1.0) for value in mask.ap_without.values())
    assert rows[1].counts["background"] == 1 and rows[1].ap == pytest.approx(0.0)


def write_set(folder, ground_truth, detections):
    for sub, files in (("ground-truth", ground_truth), ("detection-results", detections)):
        (folder / sub).mkdir(parents=True)
        for name, text in files.items():
            (folder / sub / f"{name}.txt").write_text(text)


def test_analyse_errors_writes_the_table_and_the_plot(tmp_path):
    write_set(tmp_path / "s", {"a": "mask 0 0 100 100\nmask 200 0 300 100\n"},
              {"a": "mask 0.9 500 500 600 600\nmask 0.8 0 0 100 100\nmask 0.7 200 0 300 100\n"})
    analyses = ae.analyse_set_dirs([str(tmp_path / "s")])
    text = ae.write_errors(analyses, str(tmp_path / "out"))
    table = text.split("AP gained without each kind of false positive")[1].splitlines()
    assert table[1].split() == ["class", "AP", "background", "localisation", "wrong", "class", "duplicate"]
    assert table[2].split() == ["mask", "66.67%", "+33.33", "(1)", "+0.00", "(0)", "+0.00", "(0)", "+0.00", "(0)"]
    assert (tmp_path / "out" / ae.FALSE_POSITIVE_PLOT_FILE_NAME).read_bytes()[:4] == b"\x89PNG"
