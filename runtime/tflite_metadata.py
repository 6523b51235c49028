"""TFLite model metadata: the named buffers of a ``.tflite`` file (where this project keeps its model spec), and
the TFLite Model Metadata that MediaPipe Tasks' ``ObjectDetector`` (and the TFLite Task Library) read.

A TFLite model is a flatbuffer (file identifier ``TFL3``) whose ``metadata`` list maps names to buffers. The
standard *TFLite Model Metadata* is the buffer named ``TFLITE_METADATA``: a second flatbuffer (identifier
``M001``, the ``ModelMetadata`` table of TensorFlow Lite Support's ``metadata_schema.fbs``) describing the input
(image, normalisation) and the outputs; files it names (the labels) are stored uncompressed in a zip archive
appended to the model. The tables needed for an object detector are written here with the ``flatbuffers``
builder; field slots follow the schema (a union takes two slots: its type, then its value).
"""
from __future__ import annotations

import io
import struct
import zipfile
from typing import TYPE_CHECKING

import flatbuffers
from flatbuffers import table as fb_table

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

TFLITE_IDENTIFIER = b"TFL3"
METADATA_NAME = "TFLITE_METADATA"          # the buffer MediaPipe / Task Library read
METADATA_IDENTIFIER = b"M001"
METADATA_PARSER_VERSION = "1.2.1"         # the oldest parser that reads every field written here
LABELS_FILE = "labels.txt"

# metadata_schema.fbs enums
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES, _BOUNDING_BOX_PROPERTIES = 1, 2, 3   # ContentProperties
_NORMALIZATION_OPTIONS = 1                                                   # ProcessUnitOptions
_RGB = 1                                                                     # ColorSpaceType
_BOUNDARIES = 1                                                              # BoundingBoxType
_TENSOR_VALUE_LABELS = 3                                                     # AssociatedFileType


class MetadataError(ValueError):
    """Bytes that are not a TFLite flatbuffer (the message says what is wrong)."""


# --- reading ------------------------------------------------------------------------------------------

def _table(buffer, position):
    """The flatbuffer table whose offset is stored at ``position``."""
    return fb_table.Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, position) + position)


def _vector(table, slot):
    """(start, length) of the vector field at ``slot`` of ``table``, or (None, 0) when absent."""
    offset = table.Offset(4 + 2 * slot)
    return (table.Vector(offset), table.VectorLen(offset)) if offset else (None, 0)


def _string(table, slot):
    offset = table.Offset(4 + 2 * slot)
    return table.String(offset + table.Pos).decode("utf-8", "replace") if offset else None


def _tflite_data(model_bytes: bytes) -> bytes:
    """``model_bytes`` as bytes; raises MetadataError unless they hold the TFL3 flatbuffer identifier."""
    data = bytes(model_bytes)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise MetadataError("not a TFLite model (no TFL3 flatbuffer identifier)")
    return data


def read_metadata(model_bytes: bytes) -> dict[str, bytes]:
    """{name: bytes} of the ``metadata`` buffers of a TFLite flatbuffer. Raises MetadataError when the bytes
    are not one (no ``TFL3`` identifier, or offsets out of range)."""
    data = _tflite_data(model_bytes)
    try:
        model = _table(data, 0)
        buffers_start, buffers_count = _vector(model, 4)     # Model.buffers
        metadata_start, metadata_count = _vector(model, 6)   # Model.metadata
        result = {}
        for index in range(metadata_count):
            entry = _table(data, metadata_start + 4 * index)
            name = _string(entry, 0)
            buffer_offset = entry.Offset(6)
            buffer_index = entry.Get(flatbuffers.number_types.Uint32Flags, buffer_offset + entry.Pos) if buffer_offset \
                else 0
            if name is None or buffer_index >= buffers_count:
                continue
            buffer = _table(data, buffers_start + 4 * buffer_index)
            start, length = _vector(buffer, 0)                # Buffer.data
            result[name] = data[start:start + length] if start is not None else b""
        return result
    except (IndexError, ValueError, TypeError, struct.error):   # offsets past the end: a truncated file
        raise MetadataError(f"damaged TFLite model (offsets past the end of its {len(data)} bytes: truncated?)") \
            from None


# --- writing ------------------------------------------------------------------------------------------

class _Writer:
    """Small helpers over ``flatbuffers.Builder``: children are built before the table that holds them."""

    def __init__(self) -> None:
        self.builder = flatbuffers.Builder(1024)

    def string(self, text):
        return self.builder.CreateString(text)

    def offsets(self, items):
        self.builder.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.builder.PrependUOffsetTRelative(item)
        return self.builder.EndVector()

    def numbers(self, values, prepend):
        self.builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            prepend(value)
        return self.builder.EndVector()

    def table(self, slots, fields):
        """A table of ``slots`` slots; ``fields``: (slot, kind, value) with kind 'offset', 'byte', 'uint',
        'int' or 'float' (absent when value is None)."""
        builder = self.builder
        prepend = {"offset": builder.PrependUOffsetTRelativeSlot, "byte": builder.PrependInt8Slot,
                   "uint": builder.PrependUint32Slot, "int": builder.PrependInt32Slot,
                   "float": builder.PrependFloat32Slot}
        builder.StartObject(slots)
        for slot, kind, value in fields:
            if value is not None:
                builder.ForceDefaults(True)
                prepend[kind](slot, value, 0)
                builder.ForceDefaults(False)
        return builder.EndObject()

    def content(self, kind, properties, value_range=None):
        """Content {content_properties (union: type slot 0, value slot 1), range (slot 2)}."""
        return self.table(3, [(0, "byte", kind), (1, "offset", properties), (2, "offset", value_range)])

    def value_range(self, low, high):
        return self.table(2, [(0, "int", low), (1, "int", high)])

    def tensor(self, name, description, content=None, process_units=None, stats=None, files=None):
        """TensorMetadata {name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5,
        associated_files 6}."""
        fields = [(0, "offset", self.string(name)), (1, "offset", self.string(description)),
                  (3, "offset", content), (4, "offset", process_units), (5, "offset", stats),
                  (6, "offset", files)]
        return self.table(7, fields)


def object_detector_metadata(name: str, description: str, version: str, labels: Sequence[str],
                             input_size: Sequence[int], mean: float = 127.5, std: float = 127.5,
                             box_index: Sequence[int] = (1, 0, 3, 2)) -> bytes:
    """The ``TFLITE_METADATA`` flatbuffer (bytes, identifier ``M001``) of an SSD detector whose model has
    one float32 image input [1, h, w, 3] (RGB, ``(pixel - mean) / std``) and the four outputs of
    ``TFLite_Detection_PostProcess`` in their order: locations [1, N, 4] (``box_index``: the positions of
    left, top, right, bottom, normalised to the input: (1, 0, 3, 2) for (ymin, xmin, ymax, xmax)), categories
    [1, N] (indices into ``labels``, the file :data:`LABELS_FILE`), scores [1, N], number of detections [1]."""
    writer = _Writer()
    height, width = (int(side) for side in input_size)
    # input: ImageProperties {color_space 0, default_size 1}, ImageSize {width 0, height 1}
    size = writer.table(2, [(0, "uint", width), (1, "uint", height)])
    image = writer.table(2, [(0, "byte", _RGB), (1, "offset", size)])
    image_content = writer.content(_IMAGE_PROPERTIES, image)
    # NormalizationOptions {mean 0, std 1}; ProcessUnit {options (union: type 0, value 1)}
    normalization = writer.table(2, [(0, "offset", writer.numbers([float(mean)], writer.builder.PrependFloat32)),
                                     (1, "offset", writer.numbers([float(std)], writer.builder.PrependFloat32))])
    units = writer.offsets([writer.table(2, [(0, "byte", _NORMALIZATION_OPTIONS), (1, "offset", normalization)])])
    # Stats {max 0, min 1}: the input range the normalisation gives
    stats = writer.table(2, [(0, "offset", writer.numbers([(255.0 - mean) / std], writer.builder.PrependFloat32)),
                             (1, "offset", writer.numbers([(0.0 - mean) / std], writer.builder.PrependFloat32))])
    input_tensor = writer.tensor("image", f"Input image, RGB, resized to {width}x{height} (width x height), "
                                          f"normalised as (pixel - {mean:g}) / {std:g}.", image_content, units, stats)
    # outputs. BoundingBoxProperties {index 0, type 1, coordinate_type 2 (RATIO = 0, the default)}
    box_properties = writer.table(3, [(0, "offset", writer.numbers([int(i) for i in box_index],
                                                                   writer.builder.PrependUint32)),
                                      (1, "byte", _BOUNDARIES)])
    location = writer.tensor("location", "The locations of the detected boxes: ymin, xmin, ymax, xmax, "
                                         "normalised to the input image.",
                             writer.content(_BOUNDING_BOX_PROPERTIES, box_properties, writer.value_range(2, 2)))
    # AssociatedFile {name 0, description 1, type 2, locale 3, version 4}
    labels_file = writer.table(5, [(0, "offset", writer.string(LABELS_FILE)),
                                   (1, "offset", writer.string("Labels of the categories the model detects.")),
                                   (2, "byte", _TENSOR_VALUE_LABELS)])
    category = writer.tensor("category", f"The categories of the detected boxes (0: {labels[0]}, ...).",
                             writer.content(_FEATURE_PROPERTIES, writer.table(0, []), writer.value_range(2, 2)),
                             files=writer.offsets([labels_file]))
    score = writer.tensor("score", "The scores of the detected boxes (class probabilities).",
                          writer.content(_FEATURE_PROPERTIES, writer.table(0, []), writer.value_range(2, 2)))
    count = writer.tensor("number of detections", "The number of the detected boxes.")
    # TensorGroup {name 0, tensor_names 1}
    group = writer.table(2, [(0, "offset", writer.string("detection_result")),
                             (1, "offset", writer.offsets([writer.string(text)
                                                           for text in ("location", "category", "score")]))])
    # SubGraphMetadata {name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3,
    # associated_files 4, input_process_units 5, output_process_units 6, input_tensor_groups 7,
    # output_tensor_groups 8, custom_metadata 9}
    subgraph = writer.table(10, [(2, "offset", writer.offsets([input_tensor])),
                                 (3, "offset", writer.offsets([location, category, score, count])),
                                 (8, "offset", writer.offsets([group]))])
    # ModelMetadata {name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7}
    root = writer.table(8, [(0, "offset", writer.string(name)), (1, "offset", writer.string(description)),
                            (2, "offset", writer.string(version)), (3, "offset", writer.offsets([subgraph])),
                            (7, "offset", writer.string(METADATA_PARSER_VERSION))])
    writer.builder.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(writer.builder.Output())


def labels_text(labels: Iterable[str]) -> bytes:
    """The labels file: one class name a line."""
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


def model_flatbuffer(model_bytes: bytes) -> bytes:
    """The TFLite flatbuffer alone: ``model_bytes`` without an appended zip archive of associated files."""
    data = bytes(model_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
        if infos:
            return data[:min(info.header_offset for info in infos)]
    except zipfile.BadZipFile:
        pass
    return data


def with_metadata(model_bytes: bytes, entries: Mapping[str, bytes],
                  associated_files: Mapping[str, bytes] | None = None) -> bytes:
    """``model_bytes`` (a TFLite flatbuffer, with or without an appended archive) with the ``metadata``
    buffers ``entries`` ({name: bytes}) set (replacing those of the same name, keeping the others) and, when
    given, ``associated_files`` ({name: bytes}) appended uncompressed in a zip archive (as the TFLite metadata
    tools store them). Needs TensorFlow's TFLite schema (``tensorflow.lite.tools.flatbuffer_utils``)."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_flatbuffer(model_bytes)))
    existing = {}
    for item in model.metadata or []:
        name = item.name.decode() if isinstance(item.name, bytes) else item.name
        existing[name] = item
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(data), np.uint8)
        if name in existing:
            model.buffers[existing[name].buffer] = buffer
            continue
        model.buffers.append(buffer)
        item = schema.MetadataT()
        item.name = name.encode()
        item.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), item]
    output = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    if associated_files:
        output.seek(0, io.SEEK_END)
        with zipfile.ZipFile(output, "a", compression=zipfile.ZIP_STORED) as archive:
            for name, data in associated_files.items():
                archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), bytes(data))
    return output.getvalue()


def associated_files(model_bytes: bytes) -> dict[str, bytes]:
    """{name: bytes} of the zip archive appended to a TFLite model ({} when there is none)."""
    data = bytes(model_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def output_count(model_bytes: bytes) -> int:
    """The number of outputs of the main subgraph of a TFLite flatbuffer."""
    data = _tflite_data(model_bytes)
    try:
        model = _table(data, 0)
        subgraphs_start, subgraphs_count = _vector(model, 2)   # Model.subgraphs
        if not subgraphs_count:
            return 0
        return _vector(_table(data, subgraphs_start), 2)[1]   # SubGraph.outputs
    except (IndexError, ValueError, TypeError, struct.error):
        raise MetadataError(f"damaged TFLite model (offsets past the end of its {len(data)} bytes: truncated?)") \
            from None
