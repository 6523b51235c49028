"""Keep the start-up lines of native libraries (TensorFlow, absl, oneDNN, XNNPACK / LiteRT, onnxruntime) off
the terminal.

Those libraries write from C++ straight to file descriptor 2, whatever Python's logging or
``TF_CPP_MIN_LOG_LEVEL`` say, and which lines appear depends on the CPU (e.g. oneDNN's notice on AMD EPYC).
:func:`install` points descriptor 2 at a pipe that a thread reads: lines that match :data:`NOISE` are dropped,
everything else (tracebacks, our ``error: ...`` lines, progress bars ending in ``\\r``) goes on to the real
stderr unchanged. :func:`restore` (registered with ``atexit``) puts the real stderr back and drains the pipe,
so nothing is lost at exit, on errors or on Ctrl-C. Numerics are untouched: only text is filtered.
Standard library only.
"""
import atexit
import os
import re
import select
import sys
import threading

NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"WARNING: Logging before InitGoogleLogging\(\) is written to STDERR",
    r"[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] ",                        # absl / glog: I0000 ... port.cc:153]
    r"E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] Unable to register cu\w+ factory",   # GPU builds on CPU
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [\w./-]+:\d+\] ",                 # TensorFlow's older format
    r"INFO: (Created|Initialized) TensorFlow Lite",                                # LiteRT / XNNPACK delegate
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[IW]:onnxruntime:",                    # onnxruntime warnings
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
]))

VERBOSE_FLAG = "--verbose"
VERBOSE_ENVIRONMENT = "FACEMASK_VERBOSE"   # set to 1: library lines as they come, as with --verbose

_state = {}


def is_noise(line):
    """Whether ``line`` (text, its terminator included or not) is a known library start-up line."""
    return NOISE.match(line.lstrip("\r")) is not None


def split_segments(buffer):
    """``(complete, rest)``: the segments of ``buffer`` (bytes) that end in ``\\n`` or ``\\r``, each with its
    terminator, and the unterminated rest."""
    segments = re.findall(rb"[^\r\n]*(?:\r\n|\n|\r)", buffer)
    return segments, buffer[sum(len(segment) for segment in segments):]


def filter_segments(segments):
    """The bytes of ``segments`` that are not noise, joined."""
    kept = [s for s in segments if not is_noise(s.decode("utf-8", "replace"))]
    return b"".join(kept)


def _write_all(fd, data):
    while data:
        try:
            written = os.write(fd, data)
        except OSError:
            return
        data = data[written:]


def _pump(read_fd, write_fd, stop):
    """Copy ``read_fd`` to ``write_fd`` without the noise lines, until ``stop`` is set and nothing is left."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.05)
        if not ready:
            if pending:   # an unterminated piece (a prompt, a bar without \r yet): pass it on after a pause
                _write_all(write_fd, filter_segments([pending]))
                pending = b""
            if stop.is_set():
                return
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:   # every writer closed
            _write_all(write_fd, filter_segments([pending]) if pending else b"")
            return
        segments, pending = split_segments(pending + chunk)
        _write_all(write_fd, filter_segments(segments))


def wanted(argv=None, environ=None):
    """Whether to filter: not with ``--verbose`` on the command line or ``FACEMASK_VERBOSE=1``."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    return VERBOSE_FLAG not in argv[1:] and environ.get(VERBOSE_ENVIRONMENT, "") in ("", "0")


def install():
    """Filter descriptor 2 from now on (idempotent); False where it cannot (no descriptor 2)."""
    if _state:
        return True
    try:
        saved = os.dup(2)
    except OSError:
        return False
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stop = threading.Event()
    thread = threading.Thread(target=_pump, args=(read_fd, saved, stop), name="stderr-filter", daemon=True)
    thread.start()
    _state.update(saved=saved, read_fd=read_fd, stop=stop, thread=thread)
    atexit.register(restore)
    return True


def restore():
    """Give descriptor 2 back to the real stderr and pass on what the filter still holds."""
    if not _state:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os.dup2(_state["saved"], 2)
    _state["stop"].set()
    _state["thread"].join(timeout=5)
    _state.clear()
