"""Tests of mAP/analyse_errors.py: recall by face size, its ceiling, wrong-class and localisation misses, size
ratios, difficult boxes, bin edges, and the command line."""
import os

import pytest
from conftest import REPO_ROOT, write_files

import cli.analyse_errors as analyse_errors_cli
from mAP import error_analysis as ae

SCRIPT = os.path.join(REPO_ROOT, "mAP", "analyse_errors.py")


def make_set(folder, ground_truth, detections):
    write_files(folder / "ground-truth", ground_truth)
    write_files(folder / "detection-results", detections)
    return folder


def analyse(folder, ground_truth, detections, **kwargs):
    """{(class, size bin): ErrorRow} of one set written to ``folder``."""
    make_set(folder, ground_truth, detections)
    analysis = ae.analyse_folders(str(folder / "ground-truth"), str(folder / "detection-results"), **kwargs)
    return {(row.class_name, row.size_bin): row for row in analysis.rows}


# --- bins ------------------------------------------------------------------------------------------------

def test_bin_edges_go_to_the_bin_above():
    assert ae.size_bin_index([15.99, 16, 31.99, 32, 127.9, 128, 1000], ae.DEFAULT_SIZE_BINS).tolist() == \
        [0, 1, 1, 2, 3, 4, 4]
    assert ae.size_bin_names(ae.DEFAULT_SIZE_BINS) == ["<16", "16-32", "32-64", "64-128", ">=128"]
    assert ae.size_bin_names((12.5, 20)) == ["<12.5", "12.5-20", ">=20"]


def test_faces_are_binned_by_the_side_sqrt_of_area(tmp_path):
    # sides: 8x32 -> 16 (16-32), 15x15 (<16), 32x32 -> 32 (32-64), 127x128 -> 127.5 (64-128), 64x256 -> 128
    rows = analyse(tmp_path, {"a": "mask 0 0 8 32\nmask 0 0 15 15\nmask 0 0 32 32\nmask 0 0 127 128\n"
                                   "mask 0 0 64 256\n"}, {})
    assert [rows[("mask", name)].faces for name in ["<16", "16-32", "32-64", "64-128", ">=128", "all"]] == \
        [1, 1, 1, 1, 1, 5]
    custom = analyse(tmp_path / "custom", {"a": "mask 0 0 8 32\nmask 0 0 15 15\n"}, {}, size_bins=(16,))
    assert (custom[("mask", "<16")].faces, custom[("mask", ">=16")].faces) == (1, 1)


# --- recall and errors -----------------------------------------------------------------------------------

def test_recall_and_ceiling_per_size_bin(tmp_path):
    ground_truth = {"a": "mask 0 0 10 10\nmask 20 20 30 30\nmask 100 100 140 140\nmask 200 200 240 240\n"
                         "mask 300 300 500 500\n"}
    detections = {"a": "mask 0.9 0 0 10 10\n"           # <16: found
                       "mask 0.1 20 20 30 30\n"         # <16: only below the score (the ceiling)
                       "mask 0.5 100 100 140 140\n"     # 32-64: found; the other 32-64 face is missed
                       "mask 0.95 300 300 500 520\n"}   # >=128: IoU 200*200 / 200*220, 10% too tall
    rows = analyse(tmp_path, ground_truth, detections)
    small, middle, large, everything = (rows[("mask", name)] for name in ["<16", "32-64", ">=128", "all"])
    assert (small.faces, small.recall, small.recall_ceiling) == (2, 0.5, 1.0)
    assert (middle.faces, middle.recall, middle.recall_ceiling) == (2, 0.5, 0.5)
    assert (large.faces, large.recall, large.recall_ceiling) == (1, 1.0, 1.0)
    assert (everything.faces, everything.recall, everything.recall_ceiling) == (5, 3 / 5, 4 / 5)
    assert (everything.wrong_class, everything.localisation) == (0.0, 0.0)
    assert large.height_ratio == pytest.approx(1.1) and large.width_ratio == pytest.approx(1.0)
    assert (everything.height_ratio, everything.width_ratio) == (1.0, 1.0)   # medians of 1, 1, 1.1 / 1, 1, 1
    empty = rows[("mask", "16-32")]
    assert (empty.faces, empty.recall, empty.recall_ceiling, empty.height_ratio) == (0, None, None, None)
    assert sorted(rows) == sorted(("mask", name) for name in ae.size_bin_names(ae.DEFAULT_SIZE_BINS) + ["all"])


def test_score_threshold_moves_recall_not_the_ceiling(tmp_path):
    rows = analyse(tmp_path, {"a": "mask 0 0 10 10\nmask 20 20 30 30\n"},
                   {"a": "mask 0.9 0 0 10 10\nmask 0.1 20 20 30 30\n"}, score_threshold=0.05)
    assert (rows[("mask", "all")].recall, rows[("mask", "all")].recall_ceiling) == (1.0, 1.0)


def test_localisation_miss(tmp_path):
    ground_truth = {"a": "mask 0 0 20 20\nmask 50 50 70 70\nmask 100 100 120 120\n"}
    detections = {"a": "mask 0.9 0 0 20 8\n"            # IoU 160 / 400 = 0.4: a localisation miss
                       "mask 0.1 50 50 70 58\n"         # IoU 0.4 but below the score: not counted
                       "mask 0.9 100 100 120 105\n"}    # IoU 0.25: below 0.3, not a localisation miss
    row = analyse(tmp_path, ground_truth, detections)[("mask", "16-32")]
    assert (row.faces, row.recall, row.recall_ceiling, row.wrong_class) == (3, 0.0, 0.0, 0.0)
    assert row.localisation == pytest.approx(1 / 3)
    assert row.height_ratio == pytest.approx(0.4) and row.width_ratio == pytest.approx(1.0)   # that one face


def test_wrong_class(tmp_path):
    ground_truth = {"a": "mask 0 0 10 10\nmask 20 20 30 30\nmask 40 40 50 50\n"}
    detections = {"a": "unmask 0.9 0 0 10 10\n"                       # found only as unmask
                       "unmask 0.9 20 20 30 30\nmask 0.8 20 20 30 30\n"   # found as mask too: no error
                       "unmask 0.1 40 40 50 50\n"}                    # below the score: not counted
    rows = analyse(tmp_path, ground_truth, detections)
    assert sorted({name for name, _ in rows}) == ["mask"]               # classes of the ground truth
    row = rows[("mask", "<16")]
    assert (row.faces, row.localisation) == (3, 0.0)
    assert row.recall == pytest.approx(1 / 3) and row.wrong_class == pytest.approx(1 / 3)


def test_confusions_list_faces_found_confidently_only_as_another_class(tmp_path):
    ground_truth = {"a": "mask 0 0 10 10\nmask 20 20 30 30\nunmask 40 40 50 50\nmask 60 60 70 70 difficult\n",
                    "b": "unmask 0 0 100 100\n"}
    detections = {"a": "unmask 0.95 0 0 10 10\n"                       # listed: no mask detection on it
                       "unmask 0.97 20 20 30 30\nmask 0.6 20 20 30 30\n"  # its own class reaches 0.5: not listed
                       "mask 0.8 40 40 50 50\n"                          # below the review score: not listed
                       "unmask 0.99 60 60 70 70\n",                      # difficult: not listed
                  "b": "mask 0.91 1 1 100 100\nunmask 0.3 0 0 100 100\n"}   # listed, own class 0.3
    make_set(tmp_path, ground_truth, detections)
    analysis = ae.analyse_folders(str(tmp_path / "ground-truth"), str(tmp_path / "detection-results"))
    assert [(c.image, c.labelled, c.detected) for c in analysis.confusions] == [("a", "mask", "unmask"),
                                                                              ("b", "unmask", "mask")]
    assert analysis.confusions[0].score == pytest.approx(0.95) and analysis.confusions[1].own_score == pytest.approx(0.3)
    assert analysis.confusions[1].box == (0.0, 0.0, 100.0, 100.0)
    lower = ae.analyse_folders(str(tmp_path / "ground-truth"), str(tmp_path / "detection-results"), review_score=0.8)
    assert len(lower.confusions) == 3
    ae.write_errors({"s": analysis}, str(tmp_path / "out"), plots=False)
    lines = (tmp_path / "out" / ae.CONFUSIONS_FILE_NAME).read_text().splitlines()
    assert lines[0].startswith("s: 2 faces") and lines[1].startswith("a labelled mask found as unmask 0.950")
    with pytest.raises(ValueError, match="--review_score"):
        ae.analyse_folders(str(tmp_path / "ground-truth"), str(tmp_path / "detection-results"), review_score=2.0)


def test_difficult_boxes_are_left_out(tmp_path):
    rows = analyse(tmp_path, {"a": "mask 0 0 10 10 difficult\nmask 20 20 30 30\n",
                              "b": "unmask 0 0 50 50 difficult\n"},
                   {"a": "mask 0.9 0 0 10 10\n", "b": "unmask 0.9 0 0 50 50\n"})
    assert sorted({name for name, _ in rows}) == ["mask"]
    row = rows[("mask", "all")]
    assert (row.faces, row.recall, row.recall_ceiling) == (1, 0.0, 0.0)


def test_only_difficult_ground_truth_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no non-difficult ground-truth box"):
        analyse(tmp_path, {"a": "mask 0 0 10 10 difficult\n"}, {})


# --- command line ----------------------------------------------------------------------------------------

def make_two_sets(root):
    set_a = make_set(root / "sets" / "a", {"img1": "mask 0 0 10 10\nmask 20 20 30 30\n", "img2": "unmask 0 0 50 50\n"},
                     {"img1": "mask 0.9 0 0 10 10\n", "img2": "unmask 0.95 1 1 50 50\n"})
    set_b = make_set(root / "sets" / "b", {"img1": "mask 0 0 100 100\n"}, {"img1": "unmask 0.9 0 0 100 100\n"})
    return str(set_a), str(set_b)


def table_rows(lines):
    """{(class, size): [cells]} of a table's text lines (the title line and the header left out)."""
    return {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:]}


@pytest.mark.slow
def test_cli_set_dirs_prints_and_writes_the_tables_and_the_plot(tmp_path, run_script):
    set_a, set_b = make_two_sets(tmp_path)
    output = tmp_path / "out"
    run = run_script([SCRIPT, "--set_dirs", f"{set_a},{set_b}", "--output_dir", str(output)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(output)) == sorted([ae.CONFUSIONS_FILE_NAME, ae.ERRORS_FILE_NAME, ae.PLOT_FILE_NAME,
                                                 ae.FALSE_POSITIVE_PLOT_FILE_NAME])   # no temporary files
    assert (output / ae.PLOT_FILE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (output / ae.ERRORS_FILE_NAME).read_text()
    assert text.rstrip("\n") in run.stdout
    table_a, kinds_a, table_b, kinds_b = (block.splitlines() for block in text.rstrip("\n").split("\n\n"))
    assert table_a[0].startswith("a: ") and table_b[0].startswith("b: ")
    assert kinds_a[0].startswith("a: AP gained without each kind of false positive") and kinds_b[0].startswith("b: ")
    assert table_a[1].split()[:5] == ["class", "size", "faces", "recall", "ceiling"]
    assert table_rows(table_a)[("mask", "<16")] == ["2", "50.00%", "50.00%", "0.00%", "0.00%", "1.00", "1.00"]
    assert table_rows(table_a)[("unmask", "32-64")][:3] == ["1", "100.00%", "100.00%"]
    assert table_rows(table_a)[("mask", "16-32")] == ["0", "-", "-", "-", "-", "-", "-"]
    assert table_rows(table_b)[("mask", "64-128")] == ["1", "0.00%", "0.00%", "100.00%", "0.00%", "-", "-"]


def test_main_one_set_no_plot(tmp_path, capsys):
    make_set(tmp_path / "run", {"img": "mask 0 0 10 10\n"}, {"img": "mask 0.9 0 0 10 10\n"})
    output = tmp_path / "out"
    assert analyse_errors_cli.main(["--gt_dir", str(tmp_path / "run" / "ground-truth"), "--det_dir",
                                    str(tmp_path / "run" / "detection-results"), "--output_dir", str(output),
                                    "--no_plot", "--size_bins", "8,64"]) == 0
    assert sorted(os.listdir(output)) == [ae.CONFUSIONS_FILE_NAME, ae.ERRORS_FILE_NAME]
    lines = (output / ae.ERRORS_FILE_NAME).read_text().splitlines()
    assert lines[0].startswith("run: ")                        # named by the folder of detection-results/
    assert table_rows(lines)[("mask", "8-64")][:2] == ["1", "100.00%"]
    assert "\n".join(lines) in capsys.readouterr().out


@pytest.mark.slow
def test_cli_missing_folder_is_one_line_exit_2(tmp_path, run_script):
    missing = tmp_path / "nowhere"
    run = run_script([SCRIPT, "--gt_dir", str(missing), "--det_dir", str(tmp_path), "--output_dir",
                      str(tmp_path / "out")], cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.rstrip().splitlines()[-1] == f"error: {missing}: ground-truth folder not found"
    assert run.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["bad line", "missing set", "bad bins", "bad score", "set_dirs with gt_dir"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    set_a, set_b = make_two_sets(tmp_path)
    args = ["--set_dirs", f"{set_a},{set_b}", "--output_dir", str(tmp_path / "out")]
    expected = {"bad line": f"error: {os.path.join(set_b, 'detection-results', 'img1.txt')}: line 2: ",
                "missing set": f"error: {tmp_path / 'gone'}: set folder not found",
                "bad bins": "error: --size_bins: ", "bad score": "error: --score: ",
                "set_dirs with gt_dir": "error: --set_dirs: "}[case]
    if case == "bad line":
        with open(os.path.join(set_b, "detection-results", "img1.txt"), "a") as handle:
            handle.write("mask high 0 0 1 1\n")
    elif case == "missing set":
        args[1] += f",{tmp_path / 'gone'}"
    elif case == "bad bins":
        args += ["--size_bins", "32,16"]
    elif case == "bad score":
        args += ["--score", "1.5"]
    else:
        args += ["--gt_dir", set_a]
    assert exit_status(args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(expected), captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()


def exit_status(argv):
    """``main(argv)``'s exit status, argparse's own errors (SystemExit) included."""
    try:
        return analyse_errors_cli.main(argv)
    except SystemExit as stop:
        return stop.code
