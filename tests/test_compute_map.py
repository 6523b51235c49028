"""Tests of mAP/compute_mAP.py: AP arithmetic, matching rules, file parsing and the command line."""
import os

import numpy as np
import pytest
from conftest import REPO_ROOT, found, truth, write_files

import cli.compute_map as compute_map_cli
from mAP import voc_ap as cm

SCRIPT = os.path.join(REPO_ROOT, "mAP", "compute_mAP.py")


BOX_A, BOX_B, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]


# --- average_precision --------------------------------------------------------------------------------

def test_average_precision_tp_fp_tp_by_hand():
    # 2 GT; TP, FP, TP: recall 0.5, 0.5, 1; precision 1, 1/2, 2/3 -> 0.5 * 1 + 0.5 * 2/3
    assert cm.average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 1 / 3)


def test_average_precision_uses_monotone_envelope():
    # precision dips then rises: the envelope lifts the dip to the later 0.75
    recall = [0.25, 0.25, 0.5, 0.75]
    precision = [1.0, 0.5, 2 / 3, 0.75]
    assert cm.average_precision(recall, precision) == pytest.approx(0.25 * 1 + 0.5 * 0.75)


def test_average_precision_empty_is_zero():
    assert cm.average_precision([], []) == 0.0


# --- matching -----------------------------------------------------------------------------------------

def test_perfect_detections_give_ap_one():
    ground_truth = {"a": truth(("mask", BOX_A), ("mask", BOX_B)), "b": truth(("unmask", BOX_A))}
    detections = {"a": found(("mask", 0.9, BOX_A), ("mask", 0.8, BOX_B)), "b": found(("unmask", 0.7, BOX_A))}
    evaluation = cm.evaluate_detections(ground_truth, detections)
    assert evaluation.classes["mask"].ap == pytest.approx(1.0)
    assert evaluation.classes["unmask"].ap == pytest.approx(1.0)
    assert evaluation.mean_ap == pytest.approx(1.0)


def test_tp_fp_tp_sequence():
    ground_truth = {"a": truth(("mask", BOX_A), ("mask", BOX_B))}
    detections = {"a": found(("mask", 0.9, BOX_A), ("mask", 0.8, FAR), ("mask", 0.7, BOX_B))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    assert (result.true_positives, result.false_positives, result.num_ground_truth) == (2, 1, 2)
    np.testing.assert_allclose(result.recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.precision, [1.0, 0.5, 2 / 3])
    assert result.ap == pytest.approx(0.8333333)


def test_duplicate_detection_is_false_positive():
    ground_truth = {"a": truth(("mask", BOX_A))}
    detections = {"a": found(("mask", 0.6, [0, 0, 10, 9]), ("mask", 0.9, BOX_A))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    assert (result.true_positives, result.false_positives) == (1, 1)
    np.testing.assert_allclose(result.precision, [1.0, 0.5])
    assert result.ap == pytest.approx(1.0)


def test_detections_are_ranked_across_images():
    # the highest-scoring detection is a miss in image b, so the hit in image a comes second
    ground_truth = {"a": truth(("mask", BOX_A)), "b": truth(("mask", BOX_B))}
    detections = {"a": found(("mask", 0.6, BOX_A)), "b": found(("mask", 0.9, FAR))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    np.testing.assert_allclose(result.precision, [0.0, 0.5])
    assert result.ap == pytest.approx(0.25)


def test_difficult_ground_truth_is_ignored():
    ground_truth = {"a": truth(("mask", BOX_A), ("mask", BOX_B, True))}
    detections = {"a": found(("mask", 0.9, BOX_B), ("mask", 0.8, BOX_B), ("mask", 0.7, BOX_A))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    assert result.num_ground_truth == 1 and result.num_difficult == 1
    assert (result.true_positives, result.false_positives, result.ignored) == (1, 0, 2)
    assert result.num_detections == 3
    assert result.ap == pytest.approx(1.0)


def test_detection_takes_best_unmatched_box():
    # two overlapping faces; the second detection overlaps the first (taken) face most but still
    # covers the second face with IoU >= 0.5, so it is a true positive
    face_1, face_2 = [0, 0, 10, 10], [3, 0, 13, 10]
    ground_truth = {"a": truth(("mask", face_1), ("mask", face_2))}
    detections = {"a": found(("mask", 0.9, face_1), ("mask", 0.8, [1, 0, 11, 10]))}
    result = cm.evaluate_class("mask", ground_truth, detections)
    assert (result.true_positives, result.false_positives) == (2, 0)


def test_iou_uses_continuous_pixels_and_threshold():
    # continuous IoU of these boxes is 50 / 150 = 0.333; with VOC's "+1" it would be 0.375
    ground_truth = {"a": truth(("mask", [0, 0, 10, 10]))}
    detections = {"a": found(("mask", 0.9, [5, 0, 15, 10]))}
    assert cm.evaluate_class("mask", ground_truth, detections, iou_threshold=0.35).true_positives == 0
    assert cm.evaluate_class("mask", ground_truth, detections, iou_threshold=0.33).true_positives == 1
    # IoU exactly at the threshold counts
    half = {"a": found(("mask", 0.9, [0, 0, 10, 5]))}
    assert cm.evaluate_class("mask", ground_truth, half, iou_threshold=0.5).true_positives == 1


def test_wrong_class_or_image_is_false_positive():
    ground_truth = {"a": truth(("mask", BOX_A)), "b": truth(("unmask", BOX_A))}
    detections = {"a": found(("unmask", 0.9, BOX_A)), "b": found(("unmask", 0.8, BOX_A))}
    result = cm.evaluate_class("unmask", ground_truth, detections)
    assert (result.true_positives, result.false_positives) == (1, 1)
    assert result.ap == pytest.approx(0.5)


def test_zero_detections_give_ap_zero_and_count_in_map():
    ground_truth = {"a": truth(("mask", BOX_A), ("unmask", BOX_B))}
    detections = {"a": found(("mask", 0.9, BOX_A))}
    evaluation = cm.evaluate_detections(ground_truth, detections)
    assert evaluation.classes["unmask"].ap == 0.0
    assert evaluation.classes["unmask"].recall.size == 0
    assert evaluation.mean_ap == pytest.approx(0.5)


def test_class_without_ground_truth_is_excluded_from_map():
    ground_truth = {"a": truth(("mask", BOX_A), ("unmask", BOX_B, True))}
    detections = {"a": found(("mask", 0.9, BOX_A), ("ghost", 0.8, BOX_B), ("unmask", 0.7, FAR))}
    evaluation = cm.evaluate_detections(ground_truth, detections)
    assert evaluation.classes["ghost"].ap is None
    assert evaluation.classes["ghost"].status == cm.NO_GROUND_TRUTH
    assert evaluation.classes["unmask"].ap is None
    assert evaluation.classes["unmask"].status == cm.ONLY_DIFFICULT
    assert evaluation.mean_ap == pytest.approx(1.0)


# --- files --------------------------------------------------------------------------------------------

def test_read_folders(tmp_path):
    write_files(tmp_path / "gt", {"a": "mask 0 0 10 10\nunmask 20 20 30 30 difficult\n\n", "b": ""})
    write_files(tmp_path / "det", {"a": "mask 0.9 0 0 10 10\n"})
    ground_truth = cm.read_ground_truth_dir(str(tmp_path / "gt"))
    assert sorted(ground_truth) == ["a", "b"]
    assert ground_truth["a"].labels == ["mask", "unmask"]
    np.testing.assert_array_equal(ground_truth["a"].difficult, [False, True])
    np.testing.assert_allclose(ground_truth["a"].boxes[1], [20, 20, 30, 30])
    detections = cm.read_detection_dir(str(tmp_path / "det"), list(ground_truth))
    assert detections["a"].scores.tolist() == pytest.approx([0.9])
    assert len(detections["b"].labels) == 0             # no file: no detections


@pytest.mark.parametrize("text", ["mask 0 0 10\n", "mask 0 0 10 ten\n", "mask 0 0 10 10 hard\n",
                                  "mask 10 0 0 10\n"])
def test_malformed_ground_truth_names_file_and_line(tmp_path, text):
    write_files(tmp_path, {"a": "mask 1 1 5 5\n" + text})
    with pytest.raises(ValueError, match=r"a\.txt: line 2: "):
        cm.read_ground_truth_file(str(tmp_path / "a.txt"))


def test_malformed_detection_names_file_and_line(tmp_path):
    write_files(tmp_path, {"a": "mask 0.5 0 0 10 10\nmask 0 0 10 10\n"})
    with pytest.raises(ValueError, match=r"a\.txt: line 2: "):
        cm.read_detection_file(str(tmp_path / "a.txt"))


def test_detection_file_without_ground_truth_is_an_error(tmp_path):
    write_files(tmp_path / "det", {"stray": "mask 0.5 0 0 10 10\n"})
    with pytest.raises(ValueError, match="stray.txt: no ground-truth file"):
        cm.read_detection_dir(str(tmp_path / "det"), ["a"])


# --- command line -------------------------------------------------------------------------------------

def make_folders(root):
    write_files(root / "gt", {"img1": "mask 0 0 10 10\nmask 20 20 30 30\n", "img2": "unmask 0 0 50 50\n"})
    write_files(root / "det", {"img1": "mask 0.9 0 0 10 10\nmask 0.8 100 100 110 110\nmask 0.7 20 20 30 30\n",
                               "img2": "unmask 0.95 1 1 50 50\n"})
    return ["--gt_dir", str(root / "gt"), "--det_dir", str(root / "det"), "--output_dir", str(root / "out")]


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, run_script):
    args = make_folders(tmp_path)
    run = run_script([SCRIPT, *args], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.split()[:4] == ["mask", "2", "3", "2"] and line.endswith("83.33%") for line in lines)
    assert any(line.startswith("unmask") and line.endswith("100.00%") for line in lines)
    assert "mAP = 91.67%" in run.stdout
    output = tmp_path / "out"
    assert "mAP = 91.67%" in (output / "results.txt").read_text()
    for name in ("mask_pr.png", "unmask_pr.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(output)) == ["mask_pr.png", "results.txt", "unmask_pr.png"]   # no temp files


@pytest.mark.slow
def test_cli_missing_ground_truth_folder(tmp_path, run_script):
    missing = tmp_path / "nowhere"
    run = run_script([SCRIPT, "--gt_dir", str(missing), "--det_dir", str(tmp_path)], cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: ground-truth folder not found"]
    assert run.stderr.rstrip().splitlines()[-1] == errors[0]
    assert run.stdout == ""


def test_main_no_plot_and_malformed_file(tmp_path, capsys):
    args = make_folders(tmp_path)
    assert compute_map_cli.main(args + ["--no_plot"]) == 0
    assert os.listdir(tmp_path / "out") == ["results.txt"]
    with open(tmp_path / "det" / "img2.txt", "a") as handle:
        handle.write("unmask high 0 0 1 1\n")
    capsys.readouterr()
    assert compute_map_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "img2.txt: line 2: " in err


def test_main_rejects_bad_iou(tmp_path, capsys):
    assert compute_map_cli.main(make_folders(tmp_path) + ["--iou", "1.5"]) == 2
    assert capsys.readouterr().err.startswith("error: --iou")


# --- several sets (--set_dirs) --------------------------------------------------------------------------

def make_set(folder, ground_truth, detections):
    write_files(folder / "ground-truth", ground_truth)
    write_files(folder / "detection-results", detections)
    return str(folder)


def make_two_sets(root):
    """Set ``a``: mask 83.33%, unmask 100% (mAP 91.67%); set ``b``: mask 100%, unmask 0%, incorrect 100%
    (mAP 66.67%). Only ``b`` has ``incorrect`` ground truth."""
    set_a = make_set(root / "sets" / "a",
                     {"img1": "mask 0 0 10 10\nmask 20 20 30 30\n", "img2": "unmask 0 0 50 50\n"},
                     {"img1": "mask 0.9 0 0 10 10\nmask 0.8 100 100 110 110\nmask 0.7 20 20 30 30\n",
                      "img2": "unmask 0.95 1 1 50 50\n"})
    set_b = make_set(root / "sets" / "b",
                     {"img1": "mask 0 0 10 10\n", "img2": "unmask 0 0 50 50\nincorrect 60 60 80 80\n"},
                     {"img1": "mask 0.9 0 0 10 10\n", "img2": "unmask 0.9 100 100 150 150\nincorrect 0.8 60 60 80 80\n"})
    return set_a, set_b


def summary_table(lines):
    """{row name: [cells]} of a summary table's text lines (the title line and the header left out)."""
    return {line.split()[0]: line.split()[1:] for line in lines[2:]}


def test_summary_rows_mean_is_of_set_maps_and_per_class_over_sets_with_ground_truth(tmp_path):
    evaluations = cm.evaluate_set_dirs(list(make_two_sets(tmp_path)))
    classes, rows = cm.summary_rows(evaluations)
    assert classes == ["incorrect", "mask", "unmask"]
    assert [row[0] for row in rows] == ["a", "b", "mean"]
    for name, aps, mean_ap in rows[:2]:
        assert mean_ap == evaluations[name].mean_ap
        assert aps == {cls: (evaluations[name].classes[cls].ap if cls in evaluations[name].classes else None)
                       for cls in classes}
    _, mean_aps, mean_map = rows[2]
    assert mean_map == pytest.approx((11 / 12 + 2 / 3) / 2)            # mean of the sets' mAPs, by hand
    assert mean_aps == pytest.approx({"incorrect": 1.0, "mask": (5 / 6 + 1) / 2, "unmask": 0.5})
    assert rows[0][1]["incorrect"] is None


@pytest.mark.slow
def test_cli_set_dirs_writes_each_set_and_the_summary(tmp_path, run_script):
    set_a, set_b = make_two_sets(tmp_path)
    output = tmp_path / "results"
    run = run_script([SCRIPT, "--set_dirs", f"{set_a},{set_b}", "--output_dir", str(output)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(output)) == ["a", "b", "summary.txt"]
    assert sorted(os.listdir(output / "a")) == ["mask_pr.png", "results.txt", "unmask_pr.png"]
    assert sorted(os.listdir(output / "b")) == ["incorrect_pr.png", "mask_pr.png", "results.txt", "unmask_pr.png"]
    for name, folder in (("a", set_a), ("b", set_b)):       # each set's results as a one-set run writes them
        single = cm.format_results(cm.evaluate_folders(os.path.join(folder, "ground-truth"),
                                                       os.path.join(folder, "detection-results")))
        assert (output / name / "results.txt").read_text().splitlines() == single
        assert "\n".join(single) in run.stdout
    summary = (output / "summary.txt").read_text().splitlines()
    assert "\n".join(summary) in run.stdout
    assert summary[1].split() == ["set", "incorrect", "mask", "unmask", "mAP"]
    table = summary_table(summary)
    assert table == {"a": ["-", "83.33%", "100.00%", "91.67%"], "b": ["100.00%", "100.00%", "0.00%", "66.67%"],
                     "mean": ["100.00%", "91.67%", "50.00%", "79.17%"]}
    # the mean row's mAP is the mean of the mAP lines of the sets' results.txt
    set_maps = [float((output / name / "results.txt").read_text().split("mAP = ")[1].split("%")[0])
                for name in ("a", "b")]
    assert float(table["mean"][-1].rstrip("%")) == pytest.approx(np.mean(set_maps), abs=0.01)


def test_set_dirs_of_the_same_folder_name_get_unique_names(tmp_path, capsys):
    first = make_set(tmp_path / "x" / "val", {"img": "mask 0 0 10 10\n"}, {"img": "mask 0.9 0 0 10 10\n"})
    second = make_set(tmp_path / "y" / "val", {"img": "mask 0 0 10 10\n"}, {"img": "mask 0.9 50 50 60 60\n"})
    output = tmp_path / "out"
    assert compute_map_cli.main(["--set_dirs", f"{first},{second}", "--output_dir", str(output), "--no_plot"]) == 0
    assert sorted(os.listdir(output)) == ["summary.txt", "val", "val_2"]
    table = summary_table((output / "summary.txt").read_text().splitlines())
    assert table == {"val": ["100.00%", "100.00%"], "val_2": ["0.00%", "0.00%"], "mean": ["50.00%", "50.00%"]}


@pytest.mark.parametrize("case", ["missing set", "no ground truth", "no detections"])
def test_set_dirs_bad_input_is_one_line_error_naming_the_folder(tmp_path, capsys, case):
    good = make_set(tmp_path / "good", {"img": "mask 0 0 10 10\n"}, {"img": "mask 0.9 0 0 10 10\n"})
    bad = tmp_path / "bad"
    if case == "no ground truth":
        write_files(bad / "detection-results", {"img": "mask 0.9 0 0 10 10\n"})
    elif case == "no detections":
        write_files(bad / "ground-truth", {"img": "mask 0 0 10 10\n"})
    named = {"missing set": bad, "no ground truth": bad / "ground-truth", "no detections": bad / "detection-results"}
    output = tmp_path / "out"
    assert compute_map_cli.main(["--set_dirs", f"{good},{bad}", "--output_dir", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"error: {named[case]}: "), captured.err
    assert captured.out == ""
    assert not output.exists()                       # every set is scored before anything is written


def test_set_dirs_with_gt_dir_is_an_error(tmp_path, capsys):
    set_a, set_b = make_two_sets(tmp_path)
    assert compute_map_cli.main(["--set_dirs", f"{set_a},{set_b}", "--gt_dir", set_a]) == 2
    assert capsys.readouterr().err.startswith("error: --set_dirs: ")


def test_unique_names():
    from mAP.sets import unique_names
    assert unique_names(["val", "val", "ilc", "val", "val_2"]) == ["val", "val_2", "ilc", "val_3", "val_2_2"]
