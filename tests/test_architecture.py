"""The layering of ARCHITECTURE.md: every import of a library module goes to its own layer or a lower one."""
import ast
import os

import pytest
from conftest import REPO_ROOT

LAYERS = {   # module -> layer (ARCHITECTURE.md, "Layers")
    0: ["components.config", "components.errors", "components.atomic_io", "components.box_utils",
        "components.prior_box", "components.lr_scheduler", "components.drawing", "components.data_file",
        "components.class_list", "components.run_config"],
    1: ["dataset.voc", "dataset.extra_ignore", "dataset.label_counts", "dataset.tf_dataset_preprocess",
        "network.network", "network.losses",
        "network.weight_average"],
    2: ["runtime.preprocessing", "runtime.postprocessing", "runtime.adapters", "runtime.model_files",
        "runtime.detector", "runtime.media", "runtime.batch", "runtime.video_source",
        "runtime.end_to_end_models", "runtime.tflite_metadata"],
    3: ["mAP.compute_mAP", "mAP.evaluation", "mAP.detect", "mAP.sets", "mAP.analyse_errors", "mAP.false_positives",
        "mAP.bootstrap", "mAP.unlabelled_faces"],
    4: ["training.trainer", "training.history", "training.distribution", "training.errors", "benchmarks.training_throughput",
        "dataset.voc_to_tfrecord", "dataset.check_dataset", "components.kmeans"],
    5: ["deploy.export", "deploy.end_to_end", "deploy.decoded_onnx", "benchmarks.models", "benchmarks.report", "benchmarks.reference",
        "benchmarks.input_size", "benchmarks.test_scales", "serving.app", "serving.server", "serving.web_model", "benchmarks.load", "benchmarks.serving"],
}
LAYER = {module: layer for layer, modules in LAYERS.items() for module in modules}
PACKAGES = ("cli", "benchmarks", "components", "dataset", "deploy", "mAP", "network", "runtime", "serving", "training")


def library_modules():
    """Dotted names of every module of the library packages (``__init__`` aside)."""
    names = []
    for package in PACKAGES[1:]:
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, package))):
            if name.endswith(".py") and name != "__init__.py":
                names.append(f"{package}.{name[:-3]}")
    return names


def imported_modules(module):
    """First-party modules ``module`` imports anywhere, except in its ``if __name__ == "__main__"`` block."""
    path = os.path.join(REPO_ROOT, *module.split(".")) + ".py"
    tree = ast.parse(open(path, encoding="utf-8").read())
    main_blocks = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    skipped = {id(child) for block in main_blocks for child in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in LAYER or name.split(".")[0] == "cli")
    return found


def test_every_library_module_has_a_layer():
    assert sorted(set(library_modules()) - set(LAYER)) == []


@pytest.mark.parametrize("module", library_modules())
def test_imports_flow_one_way(module):
    upward = sorted(name for name in imported_modules(module)
                    if name.split(".")[0] == "cli" or LAYER[name] > LAYER[module])
    assert upward == [], f"{module} (layer {LAYER[module]}) imports from a higher layer: {upward}"
