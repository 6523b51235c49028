"""No start-up lines of native libraries on the terminal (cli/stderr_filter.py): what TensorFlow, absl, oneDNN,
XNNPACK and onnxruntime write to file descriptor 2 is dropped in every script, everything else passes unchanged
(also at exit, on errors and with --verbose the library lines come back)."""
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGE

from cli import launched_as_script
from cli.stderr_filter import is_noise, split_segments, wanted

# lines seen on an AMD EPYC CPU (TensorFlow 2.21), with LiteRT and on GPU builds
KNOWN_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796645960.497501    4550 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796646135.953225    9445 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "W0000 00:00:1700000000.000000   123 loader.cc:42] some library warning",
    "2024-05-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "E0000 00:00:1700000000.000000   123 cuda_dnn.cc:8310] Unable to register cuDNN factory: ...",
    "2024-05-01 10:00:00.123456 [W:onnxruntime:, session_state.cc:1166 VerifyEachNodeIsAssignedToAnEp] ...",
]
# what any library log line looks like: a new one that the filter lets through fails the script tests below
LIBRARY_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log|WARNING: Logging before|INFO: |\d{4}-\d\d-\d\d "
                          r"\d\d:\d\d:\d\d[.,]\d+:? ?\[?[IWEF][ :])|oneDNN|XNNPACK|absl::|rebuild TensorFlow")
OURS = ["error: x.jpg: file not found", "Traceback (most recent call last):", '  File "a.py", line 1, in <module>',
        "ValueError: bad", "note: input size adjusted", "100%|##########| 2/2 [00:01<00:00,  1.9it/s]",
        "E0000 a line that is not the glog format"]


@pytest.mark.parametrize("line", KNOWN_NOISE)
def test_known_library_lines_are_noise(line):
    assert is_noise(line) and is_noise(line + "\n")
    assert LIBRARY_LINE.search(line)


@pytest.mark.parametrize("line", OURS)
def test_our_lines_are_not_noise(line):
    assert not is_noise(line)


def test_segments_keep_progress_bars_and_the_unterminated_rest():
    segments, rest = split_segments(b"a\n\r 50%|#\r100%|##\nhalf")
    assert segments == [b"a\n", b"\r", b" 50%|#\r", b"100%|##\n"] and rest == b"half"


def test_verbose_flag_or_environment_turns_the_filter_off():
    assert wanted(["x.py", "--img_path", "a.jpg"], {})
    assert not wanted(["x.py", "--verbose"], {})
    assert not wanted(["x.py"], {"FACEMASK_VERBOSE": "1"})


def test_only_our_scripts_count_as_scripts():
    class Main:
        pass
    for path, expected in [(os.path.join(REPO_ROOT, "inference.py"), True),
                           (os.path.join(REPO_ROOT, "mAP", "detect.py"), True),
                           ("/usr/bin/facemask-train", True),
                           (os.path.join(REPO_ROOT, ".venv", "bin", "pytest"), False),
                           (os.path.join(REPO_ROOT, "tests", "test_x.py"), False), (None, False)]:
        main = Main()
        if path:
            main.__file__ = path
        assert launched_as_script(main) == expected, path


# a process that behaves like a CPU printing every known line: native writes to fd 2 around our own output
NOISY_PROCESS = """
import os, sys
from cli import stderr_filter
stderr_filter.install()
noise = sys.argv[1].encode() + b"\\n"
os.write(2, noise)
print("note: first", file=sys.stderr)
os.write(2, noise)
sys.stderr.write("\\r 50%|#   \\r100%|##|\\n")
os.write(2, b"half a line")
import time; time.sleep(0.2)
os.write(2, b", finished\\n" + noise)
print("out")
if sys.argv[2] == "raise":
    raise RuntimeError("a bug")
if sys.argv[2] == "interrupt":
    raise KeyboardInterrupt
print("error: x: not found", file=sys.stderr)
sys.exit(2)
"""


@pytest.mark.parametrize("ending", ["exit", "raise", "interrupt"])
def test_noise_dropped_and_everything_else_passed_in_order(ending):
    run = subprocess.run([sys.executable, "-c", NOISY_PROCESS, "\n".join(KNOWN_NOISE), ending], cwd=REPO_ROOT,
                         capture_output=True, timeout=60)
    run.stdout, run.stderr = run.stdout.decode(), run.stderr.decode()   # bytes: keep the \r of progress bars
    assert run.stdout == "out\n"
    head = "note: first\n\r 50%|#   \r100%|##|\nhalf a line, finished\n"
    if ending == "exit":
        assert run.returncode == 2 and run.stderr == head + "error: x: not found\n"
    elif ending == "raise":
        assert run.returncode == 1 and run.stderr.startswith(head + "Traceback (most recent call last):\n")
        assert run.stderr.endswith("RuntimeError: a bug\n")
    else:
        assert run.returncode != 0 and run.stderr.startswith(head) and "KeyboardInterrupt" in run.stderr
    assert not any(LIBRARY_LINE.search(line) for line in run.stderr.splitlines())


def run_script(args, **env):
    """``python *args`` in the repository, stderr as the user sees it (no TF_CPP_MIN_LOG_LEVEL from the tests)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL",
                                                                                  "FACEMASK_VERBOSE")}
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(environment, **env))


def library_lines(stderr):
    return [line for line in stderr.splitlines() if LIBRARY_LINE.search(line)]


@pytest.mark.slow
@pytest.mark.parametrize("args, error", [
    (["mAP/compute_mAP.py", "--gt", "missing_gt"], "error: missing_gt: ground-truth folder not found"),
    (["inference.py", "--img_path", SAMPLE_IMAGE, "--model_path", "missing.keras"], "error: missing.keras: model not found"),
    (["train.py", "--epoch", "0"], None),
])
def test_scripts_print_one_error_line_and_no_library_line(args, error, tmp_path):
    run = run_script(args)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    if error:
        assert lines == [error]


@pytest.mark.slow
def test_a_detection_run_prints_no_library_line_unless_verbose(tmp_path):
    output = str(tmp_path / "out.jpg")
    run = run_script(["inference.py", "--img_path", SAMPLE_IMAGE, "--output", output])
    assert run.returncode == 0, run.stderr
    assert library_lines(run.stderr) == [], run.stderr
    assert os.path.isfile(output) and "faces:" in run.stdout
    verbose = run_script(["inference.py", "--img_path", SAMPLE_IMAGE, "--output", output, "--verbose"])
    faces = [line for line in run.stdout.splitlines() if not line.split()[-1].endswith(("ms", output))]
    assert verbose.returncode == 0 and faces and all(line in verbose.stdout for line in faces)


def test_what_was_written_arrives_even_when_the_process_aborts():
    code = ("import os, sys\nfrom cli import stderr_filter\nstderr_filter.install()\n"
            "os.write(2, b'I0000 00:00:1700000000.000000   1 port.cc:153] noise\\nlast words\\n')\nos.abort()\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stderr == "last words\n"
