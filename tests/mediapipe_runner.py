"""Run MediaPipe Tasks' ObjectDetector on images; print one JSON line per image. Runs in the separate
environment ``.venv-mediapipe`` (mediapipe brings opencv-contrib-python, which clashes with the project's
OpenCV), started by tests/test_mediapipe.py:

    .venv-mediapipe/bin/python tests/mediapipe_runner.py MODEL.tflite SCORE_THRESHOLD IMAGE [IMAGE ...]

Output per image: {"image": path, "detections": [{"label", "index", "score", "box": [x1, y1, x2, y2]}]} with
boxes in pixels of the image (MediaPipe's bounding_box: origin_x, origin_y, width, height).
"""
import json
import sys

import mediapipe as mp
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.python import vision


def main(model_path, score_threshold, image_paths):
    options = vision.ObjectDetectorOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=model_path),
        running_mode=vision.RunningMode.IMAGE, score_threshold=score_threshold, max_results=-1)
    with vision.ObjectDetector.create_from_options(options) as detector:
        for path in image_paths:
            result = detector.detect(mp.Image.create_from_file(path))
            found = []
            for detection in result.detections:
                box, category = detection.bounding_box, detection.categories[0]
                found.append({"label": category.category_name, "index": category.index, "score": category.score,
                              "box": [box.origin_x, box.origin_y, box.origin_x + box.width,
                                      box.origin_y + box.height]})
            print(json.dumps({"image": path, "detections": found}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3:])
