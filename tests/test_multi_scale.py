"""The multi-scale test (``test_scales``, ``test_small_face``, ``test_large_face``): the merge of detections, the
small- and large-face filters, which runtimes use it, and what each pass adds on real photos with the shipped
model."""
import os

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SHIPPED_MODEL

from components.config import DEFAULT_SETTINGS
from runtime.postprocessing import (
    Detections,
    large_detections,
    merge_detections,
    nonempty_detections,
    small_detections,
)
from runtime.preprocessing import letterbox_shape

CROWDED = os.path.join(REPO_ROOT, "tests", "fixtures", "voc_mini", "JPEGImages", "1_Handshaking_Handshaking_1_420.jpg")
PORTRAIT = os.path.join(REPO_ROOT, "tests", "fixtures", "voc_mini", "JPEGImages", "web_31vsIjDJ-XL__SY445_.jpg")
NAMES = ["background", "mask", "unmask"]


def detections(boxes, scores, classes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int32), NAMES)


def test_merge_suppresses_within_a_class_only_and_sorts_by_score():
    first = detections([[0, 0, 10, 10], [50, 50, 60, 60]], [0.6, 0.9], [1, 2])
    second = detections([[1, 1, 10, 10], [0, 0, 10, 10], [100, 100, 104, 104]], [0.8, 0.7, 0.55], [1, 2, 1])
    merged = merge_detections([first, second], iou_threshold=0.4, max_detections=10)
    # [0, 0, 10, 10] mask (0.6) loses to [1, 1, 10, 10] mask (0.8); the unmask box on the same face stays
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.55])
    assert merged.classes.tolist() == [2, 1, 2, 1]
    np.testing.assert_allclose(merged.boxes[1], [1, 1, 10, 10])
    assert len(merge_detections([first, second], 0.4, max_detections=2)) == 2
    assert len(merge_detections([detections([], [], []), detections([], [], [])], 0.4, 10)) == 0


def test_merge_with_box_voting_averages_the_boxes_of_a_class_by_score():
    first = detections([[0, 0, 10, 10], [50, 50, 60, 60]], [0.6, 0.9], [1, 2])
    second = detections([[1, 1, 10, 10], [0, 0, 10, 10]], [0.8, 0.7], [1, 2])
    merged = merge_detections([first, second], iou_threshold=0.4, max_detections=10, voting_iou=0.5)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])     # NMS keeps what it kept without voting
    mean = (0.6 * np.array([0, 0, 10, 10]) + 0.8 * np.array([1, 1, 10, 10])) / 1.4   # the two mask boxes
    np.testing.assert_allclose(merged.boxes[1], mean, atol=1e-5)
    np.testing.assert_allclose(merged.boxes[2], [0, 0, 10, 10])        # unmask: alone in its class
    np.testing.assert_allclose(merged.boxes[0], [50, 50, 60, 60])


def test_nonempty_detections_drops_boxes_without_width_or_height():
    found = detections([[0, 0, 10, 10], [320, 5, 320, 40], [3, 240, 9, 240], [5, 5, 4, 9]], [0.9, 0.8, 0.7, 0.6],
                       [1, 2, 1, 2])
    kept = nonempty_detections(found)
    assert kept.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(kept.boxes, [[0, 0, 10, 10]])


@pytest.mark.slow
def test_no_detection_lies_wholly_in_the_letterbox_padding():
    """A portrait (445 x 297) is padded on the right to 4:3; at 2x the shipped model scores boxes there (above
    0.01 on this photo), which clip to the image edge with no width: Detector drops them, at every scale."""
    from runtime.detector import Detector
    from runtime.postprocessing import unbatch_detections
    portrait = cv2.cvtColor(cv2.imread(PORTRAIT), cv2.COLOR_BGR2RGB)
    detector = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(test_scales=[1, 2]))
    at_2x = detector.rescaled[0][1]
    predictions = at_2x.predict_raw(at_2x.preprocess([portrait]))
    raw = unbatch_detections(at_2x.postprocess(predictions, 0.01), at_2x.settings.model.labels_list,
                             lambda boxes, index: at_2x.to_pixels(boxes, portrait.shape))[0]
    empty = (raw.boxes[:, 2] <= raw.boxes[:, 0]) | (raw.boxes[:, 3] <= raw.boxes[:, 1])
    assert empty.sum() > 0                                        # what the padding gives before the filter
    np.testing.assert_allclose(at_2x.detections(predictions, [portrait.shape], 0.01)[0].scores,
                               raw.scores[~empty], atol=1e-6)     # exactly the others
    found = detector.detect(portrait, score_threshold=0.01)       # both scales, merged
    assert len(found) > 0
    assert np.all(found.boxes[:, 2] > found.boxes[:, 0]) and np.all(found.boxes[:, 3] > found.boxes[:, 1])


def test_small_detections_keeps_boxes_below_the_side():
    found = detections([[0, 0, 10, 10], [0, 0, 30, 30], [0, 0, 5, 80]], [0.9, 0.8, 0.7], [1, 1, 2])
    small = small_detections(found, 20)           # sides 10, 30, 20
    assert small.scores.tolist() == pytest.approx([0.9])
    assert len(small_detections(found, 20.01)) == 2


def test_large_detections_keeps_boxes_of_at_least_the_side():
    found = detections([[0, 0, 10, 10], [0, 0, 30, 30], [0, 0, 5, 80]], [0.9, 0.8, 0.7], [1, 1, 2])
    assert large_detections(found, 20).scores.tolist() == pytest.approx([0.8, 0.7])   # sides 10, 30, 20
    assert large_detections(found, 20.01).scores.tolist() == pytest.approx([0.8])


@pytest.mark.parametrize("scales", [[1, 2, 0.5], [1, 0.75], [1], [1, 3]])
def test_test_scales_takes_whole_multiples_and_fractions(scales):
    assert DEFAULT_SETTINGS.replace(test_scales=scales).detect.test_scales == tuple(scales)


@pytest.mark.parametrize("scales", [[2], [1, 1.5], [1, 0.0], [1, 1.0], [1, -0.5], [], "2"])
def test_test_scales_must_be_whole_multiples_or_fractions_from_one(scales):
    with pytest.raises(ValueError, match="--test_scales"):
        (DEFAULT_SETTINGS.replace(test_scales=scales))


@pytest.fixture(scope="module")
def crowded_rgb():
    return cv2.cvtColor(cv2.imread(CROWDED), cv2.COLOR_BGR2RGB)   # 640 x 184, 14 faces of 10-30 px


@pytest.mark.parametrize("key", ["test_small_face", "test_large_face"])
@pytest.mark.parametrize("value", [0, -24])
def test_face_size_limits_must_be_positive(key, value):
    with pytest.raises(ValueError, match=f"--{key}: must be > 0"):
        (DEFAULT_SETTINGS.replace(**{key: value}))


def test_a_bad_face_size_limit_is_one_line_and_exit_2(capsys):
    from cli.inference import main
    assert main(["--img_path", PORTRAIT, "--test_large_face", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--test_large_face" in err


@pytest.mark.slow
def test_default_test_is_one_pass_and_tta_runs_the_shipped_model_at_three_scales():
    from components.prior_box import aligned_input_size
    from runtime.detector import Detector
    single = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS)
    assert single.test_scales == [1] and not single.flip_test and not single.rescaled
    detector = Detector(single.runtime, single.settings.replace(tta=True).with_tta(), single.trained_size)
    assert detector.test_scales == [1, 2, 0.5] and detector.flip_test
    height, width = single.trained_size
    assert [other.input_size for _, other in detector.rescaled] == [(2 * height, 2 * width),
                                                                    (round(height / 2), round(width / 2))]
    # each pass runs on a canvas whose maps pad as at the trained size (for 240x320: 480x640 -> 496x640,
    # 120x160 -> 176x192), where every step divides the width, so each has its flip test
    assert [other.network_size for _, other in detector.rescaled] == [
        aligned_input_size(other.input_size, single.trained_size, single.settings.model.steps) for _, other in detector.rescaled]
    assert all(other.network_size[1] % max(single.settings.model.steps) == 0 for _, other in detector.rescaled)
    assert detector.rescaled[0][1].flip_test and detector.rescaled[1][1].flip_test


@pytest.mark.slow
def test_upscaled_pass_adds_only_small_faces_to_the_single_scale_result(crowded_rgb):
    from runtime.detector import Detector
    single = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(test_scales=[1]))
    multi = Detector(single.runtime, single.settings.replace(test_scales=[1, 2]))
    assert single.test_scales == [1] and multi.test_scales == [1, 2]
    base = single.detect(crowded_rgb, score_threshold=0.3)
    larger = multi.rescaled[0][1].detect(crowded_rgb, score_threshold=0.3)
    merged = multi.detect(crowded_rgb, score_threshold=0.3)
    limit = multi.small_face_pixels(crowded_rgb.shape)   # 64 px at 240x320 -> 128 px of this 640 px wide photo
    padded_height, padded_width = letterbox_shape(*crowded_rgb.shape[:2], single.input_size)
    assert limit == pytest.approx(64 * padded_width / single.input_size[1])
    # every merged box comes from the single pass or is a small face of the 2x pass
    for box in merged.boxes:
        from_base = any(np.allclose(box, other, atol=1e-3) for other in base.boxes)
        side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        from_larger = side < limit and any(np.allclose(box, other, atol=1e-3) for other in larger.boxes)
        assert from_base or from_larger
    # on this photo of small faces the 2x pass finds faces the single pass misses
    assert len(merged) > len(base)
    # with no face small enough, the multi-scale result is the single pass
    only_base = Detector(single.runtime, single.settings.replace(test_scales=[1, 2], test_small_face=1e-3))
    again = only_base.detect(crowded_rgb, score_threshold=0.3)
    np.testing.assert_allclose(np.sort(again.scores), np.sort(base.scores), atol=1e-6)


@pytest.mark.slow
def test_downscaled_pass_adds_only_large_faces_to_the_single_scale_result():
    from runtime.detector import Detector
    portrait = cv2.cvtColor(cv2.imread(PORTRAIT), cv2.COLOR_BGR2RGB)        # 297 x 445, one large face
    single = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(test_scales=[1]))
    multi = Detector(single.runtime, single.settings.replace(test_scales=[1, 0.5], test_large_face=8))
    height, width = single.input_size
    assert multi.test_scales == [1, 0.5] and multi.rescaled[0][1].input_size == (round(height / 2), round(width / 2))
    base = single.detect(portrait, score_threshold=0.05)
    smaller = multi.rescaled[0][1].detect(portrait, score_threshold=0.05)
    merged = multi.detect(portrait, score_threshold=0.05)
    limit = multi.large_face_pixels(portrait.shape)     # 8 px at 240x320 -> about 8 * 445 / 240 px of this photo
    padded_height, padded_width = letterbox_shape(*portrait.shape[:2], single.input_size)
    assert limit == pytest.approx(8 * padded_height / height, rel=0.01)
    assert limit == pytest.approx(multi.small_face_pixels(portrait.shape) * 8 / multi.settings.detect.test_small_face)
    assert len(smaller) > 0
    for box in merged.boxes:       # every merged box comes from the single pass or is a large face at 0.5x
        from_base = any(np.allclose(box, other, atol=1e-3) for other in base.boxes)
        side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        from_smaller = side >= limit and any(np.allclose(box, other, atol=1e-3) for other in smaller.boxes)
        assert from_base or from_smaller
    # with no face large enough, the multi-scale result is the single pass
    only_base = Detector(single.runtime, single.settings.replace(test_scales=[1, 0.5], test_large_face=1e4))
    np.testing.assert_allclose(np.sort(only_base.detect(portrait, score_threshold=0.05).scores),
                               np.sort(base.scores), atol=1e-6)


@pytest.mark.slow
def test_exports_run_one_scale(tiny_model, tmp_path):
    from deploy.export import export_model_file
    from runtime.detector import Detector
    output = str(tmp_path / "tiny.tflite")
    export_model_file(tiny_model, "tflite", output, log=lambda message: None)
    detector = Detector.from_path(output, DEFAULT_SETTINGS.replace(test_scales=[1, 2]))
    assert detector.test_scales == [1] and not detector.rescaled


@pytest.mark.slow
def test_test_scales_benchmark_times_each_setting_in_one_table(tiny_model, capsys):
    from cli.benchmark_test_scales import main
    assert main(["--model_path", tiny_model, "--settings", "[1]; [1, 2]; [1, 2, 0.5]", "--runs", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| [")]
    assert [row.split(" | ")[0] for row in rows] == ["| [1]", "| [1, 2]", "| [1, 2, 0.5]"]
    medians = [float(row.split(" | ")[2]) for row in rows]
    assert all(median > 0 for median in medians)
    ratios = [float(row.rstrip(" |").split(" | ")[-1]) for row in rows]
    assert ratios[0] == 1.0 and ratios[1:] == pytest.approx([median / medians[0] for median in medians[1:]], rel=0.05)


@pytest.mark.slow
def test_test_scales_benchmark_measures_real_detect_calls(tiny_model):
    from benchmarks.test_scales import measure_test_scales
    photo = cv2.cvtColor(cv2.imread(PORTRAIT), cv2.COLOR_BGR2RGB)
    results = measure_test_scales(tiny_model, [[1], [1, 2]], DEFAULT_SETTINGS.replace(flip_test=False), runs=2,
                                  warmup=0, images_rgb=[photo])
    assert [result.test_scales for result in results] == [[1], [1, 2]]
    assert all(not result.flip_test and 0 < result.median_ms <= result.p90_ms for result in results)


@pytest.mark.parametrize("settings, problem", [("[1, 1.5]", "--settings"), ("[2]", "--settings"),
                                               ("[1, 2", "--settings"), (";", "--settings")])
def test_test_scales_benchmark_refuses_bad_settings(settings, problem, capsys):
    from cli.benchmark_test_scales import main
    assert main(["--settings", settings]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1


def test_test_scales_benchmark_refuses_an_export(tmp_path, capsys):
    from cli.benchmark_test_scales import main
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read")
    assert main(["--model_path", str(model)]) == 2
    assert ".keras models only" in capsys.readouterr().err
