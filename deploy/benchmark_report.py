"""Rendering for ``benchmark.py``: the Markdown report of ``deploy.benchmark.measure``'s results."""
import os
import platform

from deploy.benchmark import FLIP_SUFFIX, REFERENCE_LABEL, TIMING_ROUNDS, VIDEO_SIZE

HEADER = ["format", "runtime", "model file", "size (MiB)", "median ms", "p90 ms", "images/s", "val mAP",
          "flip test median ms", "flip test val mAP"]
STAGES = ("decode", "preprocess", "infer", "postprocess", "draw")


def versions():
    import tensorflow as tf
    parts = [f"Python {platform.python_version()}", f"TensorFlow {tf.__version__}"]
    for module, label in (("ai_edge_litert", "ai-edge-litert"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")):
        try:
            imported = __import__(module)
            parts.append(f"{label} {getattr(imported, '__version__', '?')}")
        except ImportError:
            parts.append(f"{label} not installed")
    return ", ".join(parts)


def format_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for key in HEADER) + " |")
    return lines


def comparison_lines(maps):
    """int8 against float and flip test against single pass, in points of val mAP, where both were scored."""
    lines = []
    if "keras" in maps and "tflite_int8" in maps:
        lines.append(f"tflite_int8 val mAP vs keras: {100 * (maps['tflite_int8'] - maps['keras']):+.2f} points "
                     "(target: within 1 point).")
    if "keras" + FLIP_SUFFIX in maps:
        lines.append(f"Flip test vs single pass (keras): {100 * (maps['keras' + FLIP_SUFFIX] - maps['keras']):+.2f} "
                     "points of val mAP.")
    return lines


def reference_lines(medians):
    """Our formats' model-only latency as a share of the reference's, where the reference was timed."""
    if REFERENCE_LABEL not in medians:
        return []
    base = medians[REFERENCE_LABEL]
    shares = ", ".join(f"{label} {medians[label] / base:.2f}" for label in ("tflite_int8", "tflite", "onnx", "keras")
                       if label in medians)
    return [f"Latency as a share of the {REFERENCE_LABEL}'s ({1000 * base:.2f} ms, same rounds, batch 1, 2 threads): "
            f"{shares} (target for tflite_int8: at most 0.50)."]


def video_lines(results):
    lines = [f"End-to-end video ({results.video_rows[0][3]} frames of {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}, mp4v, decode + "
             "preprocess + infer + NMS + draw; stage times are medians in ms per frame):", "",
             "| path | FPS | decode | preprocess | infer | postprocess | draw |", "|---|---|---|---|---|---|---|"]
    for label, fps, stages, _ in results.video_rows:
        name = label + (" (fastest single pass)" if label == results.fastest else "")
        lines.append(f"| {name} | {fps:.1f} | " + " | ".join(f"{stages[stage]:.2f}" for stage in STAGES) + " |")
    return lines


def render(results):
    """The Markdown report text of BenchmarkResults."""
    height, width = results.input_size
    timed = TIMING_ROUNDS * -(-results.runs // TIMING_ROUNDS)
    lines = [f"# Benchmark of {results.model_file}", "",
             f"{results.started}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
             f"{versions()}.",
             f"Batch 1, {height}x{width} input, model only (`predict_raw`), {timed} timed runs after {results.warmup} "
             f"warm-up runs (in {TIMING_ROUNDS} rounds, the formats in turn); every runtime on 2 threads. "
             f"Load average (1/5/15 min) before: {results.load_before}, after: {results.load_after}.", ""]
    lines += format_table(results.rows)
    lines += ["", "Shared post-processing (decode + class-wise NMS, batch 1, `components.postprocessing.postprocess`): "
                  f"{results.post_default_ms:.2f} ms at score threshold {results.score_threshold:g} (inference), "
                  f"{results.post_low_ms:.2f} ms at 0.01 (mAP)."]
    lines += comparison_lines(results.maps)
    lines += reference_lines(results.medians)
    lines += [""] + video_lines(results)
    return "\n".join(lines) + "\n"
