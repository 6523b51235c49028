"""Tests of the own-data workflow (issue 12): data files, class names that travel with TFRecords and models,
unknown labels, fine-tuning to another class list, resuming a run's saved settings, outputs for any class
list, quiet defaults and short --help, the README example and the shipped 3-class model.

Everything runs on tests/fixtures/voc_mini (labels face / face_mask) described by small data files written
to a temporary folder; nothing outside the repository is read.
"""
import argparse
import csv
import json
import os
import re
import shlex
import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT, SHIPPED_3CLASS_MODEL, VOC_MINI

import cli
from components.class_list import class_mismatch, read_tfrecord_classes, tfrecord_classes_path
from components.config import CONFIG_HELP, DATA_KEYS, DEFAULT_SETTINGS, DEFAULTS, add_config_arguments
from components.data_file import DataFileError, load_data_file

THREE_CLASSES = ["background", "mask", "unmask", "incorrect"]
SMALL_RUN = ["--steps_per_epoch", "2", "--batch_size", "2", "--input_size", "(120, 160)", "--no_progress",
             "--val_steps", "1", "--cache_dataset", "false", "--network", "slim", "--base_channel", "4"]


def write_data_file(folder, name="mini", names="[mask, unmask, incorrect]",
                    aliases="{face_mask: mask, face: unmask}", root=VOC_MINI):
    """A data file for voc_mini whose TFRecords go to ``folder``; returns its path."""
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"name: {name}\nroot: {root}\nnames: {names}\naliases: {aliases}\n"
                     f"train: [{{path: ., split: train}}]\nval: [{{path: ., split: val}}]\n"
                     f"tfrecord_dir: {folder}\n")
    return path


def run_main(main, argv, capsys):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("own_data"))


@pytest.fixture(scope="module")
def converted(data_dir):
    """voc_mini converted through a 3-class data file: (status, data file path)."""
    from cli.voc_to_tfrecord import main
    data = write_data_file(data_dir)
    return main(["--data", data]), data


# --- 1. data file -----------------------------------------------------------------------------------------

def test_data_file_gives_classes_aliases_and_one_tfrecord_per_split(tmp_path):
    data = write_data_file(str(tmp_path), root="voc")             # relative to the file
    spec = load_data_file(data)
    assert spec.root == str(tmp_path / "voc") and spec.labels_list == THREE_CLASSES
    assert spec.aliases["face"] == "unmask" and spec.aliases["incorrect"] == "incorrect"   # names map to themselves
    given = spec.settings()   # {flag: value} the file sets
    assert given["train_tfrecord"] == [os.path.join(str(tmp_path), "mini_train.tfrecord")]
    assert given["val_tfrecord"] == [os.path.join(str(tmp_path), "mini_val.tfrecord")]
    assert load_data_file(data, root=VOC_MINI).sources["val"][0].voc_path == VOC_MINI   # --root wins

    parser = add_config_arguments(argparse.ArgumentParser(), data=True)
    settings = cli.settings_from_args(parser.parse_args(["--data", data, "--batch_size", "4"]))
    assert settings.model.labels_list == tuple(THREE_CLASSES) and settings.train.batch_size == 4
    settings = cli.settings_from_args(parser.parse_args(
        ["--data", data, "--labels_list", "['background', 'mask', 'unmask']", "--label_aliases", "{'face': 'unmask'}"]))
    assert settings.model.labels_list == ("background", "mask", "unmask")    # flags override the file


def test_data_file_mistakes_name_the_file_and_the_fix(tmp_path):
    bad_alias = write_data_file(str(tmp_path), name="a", aliases="{with_incorrect_mask: incorrect}",
                                names="[mask, unmask]")
    with pytest.raises(DataFileError, match=r"a\.yaml: aliases: with_incorrect_mask -> 'incorrect'.*names:"):
        load_data_file(bad_alias)
    missing_root = write_data_file(str(tmp_path), name="b", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataFileError, match=r"b\.yaml: VOC folder .*nowhere not found.*--root"):
        load_data_file(missing_root).check_root()


def test_alias_to_a_class_missing_from_labels_list_is_one_clear_error():
    parser = add_config_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--label_aliases", "{'with_incorrect_mask': 'incorrect', 'face': 'unmask'}"])
    with pytest.raises(ValueError, match=r"with_incorrect_mask map to 'incorrect'.*--labels_list"):
        cli.settings_from_args(args)


def test_converter_with_data_writes_each_split_with_its_class_list(converted, data_dir):
    status, _ = converted
    assert status == 0
    for split in ("train", "val"):
        tfrecord = os.path.join(data_dir, f"mini_{split}.tfrecord")
        assert os.path.isfile(tfrecord)
        assert read_tfrecord_classes(tfrecord) == THREE_CLASSES
    with open(tfrecord_classes_path(os.path.join(data_dir, "mini_train.tfrecord"))) as handle:
        assert sum(json.load(handle)["boxes"].values()) > 0


# --- 2. names travel ----------------------------------------------------------------------------------------

def test_class_mismatch_says_which_names_differ_and_the_fix():
    line = class_mismatch(["background", "mask", "unmask"], THREE_CLASSES, "this run", "x.tfrecord", "use --data")
    assert "incorrect only in x.tfrecord" in line and line.endswith("use --data") and "\n" not in line
    assert class_mismatch(THREE_CLASSES, list(THREE_CLASSES), "a", "b", "fix") is None


def test_training_on_a_tfrecord_of_other_classes_is_one_line_error(converted, data_dir, tmp_path, capsys):
    import train
    status, out, err = run_main(train.main, ["--train_tfrecord", os.path.join(data_dir, "mini_train.tfrecord"),
                                             "--val_tfrecord", os.path.join(data_dir, "mini_val.tfrecord"),
                                             "--checkpoint_dir", tmp_path / "ckpt", "--log_dir", tmp_path / "logs",
                                             "--epoch", "1", *SMALL_RUN], capsys)
    assert status == 2 and "Traceback" not in err
    assert len(error_lines(err)) == 1 and "incorrect only in" in error_lines(err)[0]


def test_a_tfrecord_without_class_list_is_checked_by_its_class_ids(voc_mini, tmp_path, capsys):
    import train
    from dataset.tfrecord_writer import convert_split
    settings = DEFAULT_SETTINGS.replace(labels_list=["background", "incorrect", "unmask", "mask"],
                                        label_aliases={"face_mask": "mask", "face": "unmask"})
    tfrecord = str(tmp_path / "old.tfrecord")
    convert_split(voc_mini, "train", tfrecord, settings, progress=False)
    os.remove(tfrecord_classes_path(tfrecord))                        # as written by older versions
    status, _, err = run_main(train.main, ["--train_tfrecord", tfrecord, "--val_tfrecord", "",
                                           "--checkpoint_dir", tmp_path / "ckpt", "--epoch", "1", *SMALL_RUN], capsys)
    assert status == 2 and "Traceback" not in err
    assert "holds class id 3" in error_lines(err)[0]


def test_check_dataset_refuses_a_tfrecord_of_other_classes(converted, data_dir, capsys):
    from cli.check_dataset import main
    status, _, err = run_main(main, ["--tfrecord", os.path.join(data_dir, "mini_train.tfrecord")], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "incorrect only in" in error_lines(err)[0]


@pytest.mark.slow
def test_detect_refuses_a_model_of_other_classes(converted, tiny_model, tmp_path, capsys):
    from cli.detect import main
    _, data = converted
    status, _, err = run_main(main, ["--model_path", tiny_model, "--data", data, "--output_dir", tmp_path], capsys)
    assert status == 2 and "Traceback" not in err
    assert "incorrect only in" in error_lines(err)[0] and "tiny.keras" in error_lines(err)[0]


# --- 3. unknown labels -----------------------------------------------------------------------------------------

def test_unknown_labels_stop_the_converter_after_a_table(tmp_path, capsys):
    from cli.voc_to_tfrecord import main
    data = write_data_file(str(tmp_path), names="[mask, unmask]", aliases="{face_mask: mask}")
    status, out, err = run_main(main, ["--data", data], capsys)
    assert status == 2 and "Traceback" not in err
    assert re.search(r"face\s+UNKNOWN\s+\d+", out) and re.search(r"face_mask\s+mask\s+\d+", out)
    assert len(error_lines(err)) == 1
    assert "'face'" in error_lines(err)[0] and "mini.yaml" in error_lines(err)[0]
    assert "--skip_unknown_labels" in error_lines(err)[0]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tfrecord")]
    status, out, err = run_main(main, ["--data", data, "--skip_unknown_labels"], capsys)
    assert status == 0 and os.path.isfile(tmp_path / "mini_train.tfrecord")


def test_unknown_labels_of_every_split_are_reported_at_once(tmp_path, capsys):
    from cli.voc_to_tfrecord import main
    data = write_data_file(str(tmp_path), names="[mask, unmask]", aliases="{face_mask: mask}")
    status, out, err = run_main(main, ["--data", data], capsys)
    assert status == 2 and len(error_lines(err)) == 1
    line = error_lines(err)[0]
    assert line.startswith("error: unknown labels in 2 split(s): ")
    assert f"{VOC_MINI} (train): 'face'" in line and f"{VOC_MINI} (val): 'face'" in line
    assert out.count("UNKNOWN") == 2                              # both tables printed before the stop


def test_unknown_labels_stop_kmeans_too(tmp_path, capsys):
    from cli.kmeans import main
    status, _, err = run_main(main, ["--dataset_path", VOC_MINI, "--label_aliases", "{'face_mask': 'mask'}",
                                     "--k", "3", "--output", tmp_path / "k.png"], capsys)
    assert status == 2 and "'face'" in error_lines(err)[0] and "--label_aliases" in error_lines(err)[0]


# --- 4. fine-tuning and 5. resume --------------------------------------------------------------------------------

def test_new_class_heads_keep_the_rows_of_shared_classes(tiny_cfg):
    from network.network import build_model, transfer_class_rows, transfer_weights
    source_settings = tiny_cfg.replace(network="slim", base_channel=4)
    source = build_model(source_settings)
    target = build_model(source_settings.replace(labels_list=THREE_CLASSES))
    _, fresh = transfer_weights(source, target)
    filled = transfer_class_rows(source, target, source_settings.model.labels_list, THREE_CLASSES)
    assert sorted(filled) == sorted(name for name in fresh if name.startswith("conf_head"))
    images = np.random.default_rng(0).uniform(-1, 1, (1, 120, 160, 3)).astype(np.float32)
    before, after = source(images).numpy(), target(images).numpy()
    np.testing.assert_allclose(after[..., :7], before[..., :7], atol=1e-5)   # boxes, background, mask, unmask


def test_a_warm_up_longer_than_the_run_is_shortened_with_a_note():
    from training.trainer import fit_warmup
    notes = []
    shortened = fit_warmup(DEFAULT_SETTINGS.replace(epoch=3, warmup_epoch=5), notes.append)
    assert shortened.train.warmup_epoch < 3 and "shortened" in notes[0]
    assert fit_warmup(DEFAULT_SETTINGS.replace(epoch=30, warmup_epoch=5), notes.append).train.warmup_epoch == 5
    assert len(notes) == 1


@pytest.fixture(scope="module")
def fine_tuned(converted, tiny_model, tmp_path_factory):
    """A 1-epoch fine-tune of the 2-class tiny model to the 3 classes of the data file, then a resume to
    epoch 2 with only --resume and --epoch: (first stdout, resume stdout, statuses, checkpoint folder)."""
    import contextlib
    import io

    import train
    _, data = converted
    folder = str(tmp_path_factory.mktemp("fine_tune") / "ckpt")
    outputs, statuses = [], []
    for argv in (["--data", data, "--weights", tiny_model, "--checkpoint_dir", folder, "--log_dir", folder + "_logs",
                  "--epoch", "1", "--warmup_epoch", "5", *SMALL_RUN],
                 ["--checkpoint_dir", folder, "--resume", "--epoch", "2", "--no_progress"]):
        stream = io.StringIO()
        with contextlib.redirect_stdout(stream):
            statuses.append(train.main(argv))
        outputs.append(stream.getvalue())
    return outputs[0], outputs[1], statuses, folder


@pytest.mark.slow
def test_fine_tuning_starts_new_heads_and_says_so(fine_tuned):
    first, _, statuses, folder = fine_tuned
    assert statuses[0] == 0, first
    assert "new class heads" in first and "incorrect from scratch" in first
    assert "warm-up shortened" in first
    from runtime.model_files import read_model_spec
    assert read_model_spec(os.path.join(folder, "last.keras"))["labels_list"] == THREE_CLASSES


@pytest.mark.slow
def test_resume_restores_the_saved_run_and_lists_changes(fine_tuned):
    _, resumed, statuses, folder = fine_tuned
    assert statuses[1] == 0, resumed
    assert "changed by flags: epoch: 1 -> 2" in resumed and "(epoch 1, step 2)" in resumed
    with open(os.path.join(folder, "history.jsonl")) as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2]
    with open(os.path.join(folder, "run_config.json")) as handle:
        saved = json.load(handle)
    groups = saved["settings"]   # grouped as Settings.as_dict writes them
    assert groups["train"]["batch_size"] == 2 and groups["model"]["labels_list"] == THREE_CLASSES
    assert saved["steps_per_epoch"] == 2 and groups["train"]["epoch"] == 2


@pytest.mark.slow
def test_resume_refuses_a_change_of_classes_in_one_line(fine_tuned, capsys):
    import train
    folder = fine_tuned[3]
    status, _, err = run_main(train.main, ["--checkpoint_dir", folder, "--resume", "--epoch", "3",
                                           "--labels_list", "['background', 'mask', 'unmask']"], capsys)
    assert status == 2 and len(error_lines(err)) == 1
    assert "labels_list" in error_lines(err)[0] and "--checkpoint_dir" in error_lines(err)[0]


@pytest.mark.slow
def test_resume_of_a_run_without_saved_settings_uses_the_flags(fine_tuned, converted, tmp_path, capsys):
    import train
    old = str(tmp_path / "old_run")
    shutil.copytree(fine_tuned[3], old)
    os.remove(os.path.join(old, "run_config.json"))                   # as a run started by older versions
    status, out, err = run_main(train.main, ["--data", converted[1], "--checkpoint_dir", old, "--log_dir",
                                             tmp_path / "logs", "--resume", "--epoch", "3", *SMALL_RUN], capsys)
    assert status == 0, err
    assert "run_config.json not found" in out and "trained to epoch 3" in out


# --- 6. outputs for any class list -------------------------------------------------------------------------------

class ThreeClassDetections:
    def __init__(self, boxes, classes, names):
        self.boxes = np.array(boxes, np.float32)
        self.scores = np.full(len(boxes), 0.9, np.float32)
        self.classes = np.array(classes)
        self.class_names = names

    def labels(self):
        return [self.class_names[c] for c in self.classes]


def test_boxes_are_coloured_by_class_index_with_the_default_colours_kept():
    from components.drawing import CLASS_PALETTE_BGR, class_color_bgr, draw_detections
    assert class_color_bgr(1) == (0, 200, 0) and class_color_bgr(2) == (0, 0, 255)     # green mask, red unmask
    assert len({class_color_bgr(index) for index in range(1, 8)}) == 7
    image = np.full((200, 400, 3), 128, np.uint8)
    boxes = [[20, 80, 100, 180], [150, 80, 230, 180], [280, 80, 360, 180]]
    annotated = draw_detections(image, ThreeClassDetections(boxes, [1, 2, 3], THREE_CLASSES))
    for (left, _, _, _), class_id in zip(boxes, (1, 2, 3)):
        assert tuple(annotated[150, left]) == CLASS_PALETTE_BGR[class_id - 1]


def test_labels_of_nearby_boxes_do_not_overlap():
    from components.drawing import label_rectangles
    boxes = [[50, 100, 150, 200], [60, 105, 160, 205], [55, 98, 150, 190], [300, 0, 380, 60]]
    rects = label_rectangles(boxes, ["incorrect 0.91", "unmask 0.88", "mask 0.70", "mask 0.99"], (480, 640, 3))
    for index, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 640 and 0 <= a[1] and a[3] <= 480
        for b in rects[index + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_summary_csv_has_one_column_per_class(tmp_path):
    from runtime.batch import write_batch_outputs
    records = {"a.jpg": {"image": "a.jpg", "classes": ["incorrect", "mask", "incorrect"], "boxes": [], "scores": []}}
    write_batch_outputs(str(tmp_path), {"model": "m", "score_threshold": 0.5}, records, [],
                                  THREE_CLASSES[1:])
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "faces", "mask", "unmask", "incorrect"]
    assert (rows[0]["faces"], rows[0]["mask"], rows[0]["unmask"], rows[0]["incorrect"]) == ("3", "1", "0", "2")


def test_check_dataset_legend_comes_from_the_class_list():
    from components.drawing import class_color_rgb
    from dataset.dataset_report import legend_handles
    handles = legend_handles(THREE_CLASSES)
    assert [handle.get_label() for handle in handles] == THREE_CLASSES[1:]
    assert tuple(handles[2].get_edgecolor()[:3]) == pytest.approx(class_color_rgb(3))


# --- 7. quiet defaults and short --help --------------------------------------------------------------------------

def test_kmeans_plot_goes_to_runs_unless_asked(tmp_path, monkeypatch, capsys):
    from cli.kmeans import main
    readme_figure = os.path.join(REPO_ROOT, "assets", "kmeans_anchors.png")
    before = os.stat(readme_figure).st_mtime_ns
    monkeypatch.chdir(tmp_path)
    status, out, _ = run_main(main, ["--dataset_path", VOC_MINI, "--k", "3"], capsys)
    assert status == 0
    assert os.path.isfile(tmp_path / "runs" / "kmeans_anchors.png")
    assert os.stat(readme_figure).st_mtime_ns == before                # the README's figure is left alone


def test_check_dataset_default_output_is_under_runs():
    from cli import check_dataset
    assert check_dataset.DEFAULT_OUTPUT.split(os.sep)[0] == "runs"


SCRIPT_MAINS = {
    "dataset/voc_to_tfrecord.py": ("cli.voc_to_tfrecord", "main"),
    "train.py": ("cli.train", "main"),
    "inference.py": ("cli.inference", "main"),
    "mAP/detect.py": ("cli.detect", "main"),
    "components/kmeans.py": ("cli.kmeans", "main"),
    "dataset/check_dataset.py": ("cli.check_dataset", "main"),
    "serve.py": ("cli.serve", "main"),
}
NO_CONFIG_SCRIPTS = {   # scripts that take no setting flags: their --help shows none
    "export.py": ("cli.export", "main"),
    "benchmark.py": ("cli.benchmark", "main"),
    "benchmark_input_size.py": ("cli.benchmark_input_size", "main"),
    "benchmark_serve.py": ("cli.benchmark_serve", "main"),
    "detect_reference.py": ("cli.detect_reference", "main"),
}


def help_text(script, capsys):
    import importlib
    module, name = {**SCRIPT_MAINS, **NO_CONFIG_SCRIPTS}[script]
    with pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module), name)(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def setting_flags(text):
    return set(re.findall(r"^\s+--(\w+) VALUE", text, flags=re.MULTILINE))


def test_help_shows_only_the_settings_each_script_uses_with_a_description(capsys):
    assert set(CONFIG_HELP) == set(DEFAULTS)                      # every setting has its one-line description
    texts = {script: help_text(script, capsys) for script in SCRIPT_MAINS}
    assert setting_flags(texts["dataset/voc_to_tfrecord.py"]) == set(DATA_KEYS)
    assert "init_lr" not in setting_flags(texts["inference.py"]) and "score_threshold" in setting_flags(texts["inference.py"])
    assert "score_threshold" not in setting_flags(texts["train.py"]) and "init_lr" in setting_flags(texts["train.py"])
    assert "init_lr" not in setting_flags(texts["components/kmeans.py"])
    for script, text in texts.items():
        assert len(setting_flags(text)) < len(DEFAULTS), script
        flat = " ".join(text.split())
        for key in setting_flags(text):
            assert " ".join(CONFIG_HELP[key].split()) in flat, (script, key)
        if script not in ("inference.py", "serve.py"):
            assert "--data FILE" in text, script
    assert {"workers", "max_pending", "max_request_mb", "max_image_pixels"} <= {
        flag[2:] for flag in re.findall(r"--\w+", texts["serve.py"])}             # serve_* keys by their own flags
    assert "score_threshold" in setting_flags(texts["serve.py"]) and "init_lr" not in setting_flags(texts["serve.py"])
    for script in NO_CONFIG_SCRIPTS:
        assert setting_flags(help_text(script, capsys)) == set(), script


# --- 8. the README example and 9. the shipped model ----------------------------------------------------------------

def readme_section_commands():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Train on your own data", 1)[1].split("\n## ", 1)[0]
    commands = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE):
        if language not in ("bash", "sh", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("python "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_example_uses_existing_scripts_files_and_flags(capsys):
    commands = readme_section_commands()
    scripts = {command[0] for command in commands}
    assert {"dataset/voc_to_tfrecord.py", "train.py", "mAP/detect.py", "inference.py"} <= scripts
    for command in commands:
        script, argv = command[0], command[1:]
        assert os.path.isfile(os.path.join(REPO_ROOT, script)), script
        if script not in SCRIPT_MAINS:
            continue
        text = help_text(script, capsys)
        for flag in (arg for arg in argv if arg.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", text), (script, flag)
        for value in argv:
            if value.startswith(("data/", "checkpoints/mask_detector")):
                assert os.path.exists(os.path.join(REPO_ROOT, value)), value




def test_shipped_3class_model_has_the_classes_of_the_ilc2021_data_file():
    from runtime.model_files import read_model_spec
    assert read_model_spec(SHIPPED_3CLASS_MODEL)["labels_list"] == load_data_file(os.path.join(REPO_ROOT, "data", "ilc2021.yaml")).labels_list
    assert load_data_file(os.path.join(REPO_ROOT, "data", "maskdata.yaml")).labels_list == list(DEFAULT_SETTINGS.model.labels_list)


@pytest.mark.slow
def test_inference_with_the_3class_model_draws_and_counts_three_classes(tmp_path, capsys):
    import inference
    output = tmp_path / "out.jpg"
    status, out, err = run_main(inference.main, ["--model_path", SHIPPED_3CLASS_MODEL, "--img_path",
                                                 os.path.join(REPO_ROOT, "assets", "test_00002330.jpg"),
                                                 "--output", output], capsys)
    assert status == 0, err
    summary = [line for line in out.splitlines() if " faces: " in line or " face: " in line][0]
    assert re.search(r"\d+ mask, \d+ unmask, \d+ incorrect", summary)
    assert output.read_bytes()[:2] == b"\xff\xd8"
