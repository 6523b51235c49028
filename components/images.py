"""Image files and bytes to 8-bit BGR arrays: the one image decoder of every script, the server and the data tools
(truncated JPEG / PNG files refused, grey, RGBA and 16-bit images converted)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from components.errors import ProjectError


class ImageError(ProjectError):
    """An image file or body that cannot be used; the message names it and the problem."""


JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
JPEG_SOS = 0xDA
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END_CHUNK = b"IEND"


def _jpeg_is_truncated(data):
    """Whether a JPEG stream (bytes starting with SOI) ends before its end-of-image marker.

    The marker segments are walked up to the first start-of-scan; the entropy-coded data after it cannot
    hold the bytes FF D9 except as the end-of-image marker (0xFF is always stuffed there), so a stream
    without them after the first scan header was cut. Bytes after the marker (camera trailers) are allowed.
    """
    position, size = 2, len(data)
    while True:
        while position + 1 < size and data[position] == 0xFF and data[position + 1] == 0xFF:
            position += 1                                  # fill bytes before a marker
        if position + 4 > size:
            return True                                    # cut inside the headers
        if data[position] != 0xFF:
            return False                                   # not a marker: corrupt, the decoder will say so
        marker = data[position + 1]
        if marker == 0xD9:
            return False                                   # end of image before any scan: the decoder refuses
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == JPEG_SOS:
            return position > size or data.find(JPEG_EOI, position) < 0


def decode_image_file(path: str) -> tuple[np.ndarray, bytes, bool]:
    """Read and decode the image file at ``path``.

    Returns (8-bit BGR image [H, W, 3], the file's bytes, whether the file decoded as 8-bit 3-channel as it
    is, i.e. needed no conversion). Raises ImageError naming the file when it is missing, a folder, empty,
    truncated (a JPEG without its end-of-image marker, a PNG without its IEND chunk: OpenCV would return a
    partly grey picture for some of these) or not decodable.
    """
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a folder, not an image file")
    if not os.path.isfile(path):
        raise ImageError(f"{path}: file not found")
    with open(path, "rb") as handle:
        raw = handle.read()
    image, unchanged = decode_image_bytes(raw, path)
    return image, raw, unchanged


def decode_image_bytes(raw: bytes, source: str) -> tuple[np.ndarray, bool]:
    """Decode the bytes of an image file (any format OpenCV reads) into an 8-bit BGR array [H, W, 3].

    Returns (image, whether it decoded as 8-bit 3-channel as it is). Raises ImageError starting with ``source``
    (a file name, or e.g. "request body") when the bytes are empty, truncated or not a decodable image.
    """
    if not raw:
        raise ImageError(f"{source}: empty file")
    if raw.startswith(JPEG_SOI) and _jpeg_is_truncated(raw):
        raise ImageError(f"{source}: truncated JPEG (the file ends before its end-of-image marker)")
    if raw.startswith(PNG_SIGNATURE) and raw.rfind(PNG_END_CHUNK) < 0:
        raise ImageError(f"{source}: truncated PNG (no IEND chunk)")
    try:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        reason = getattr(error, "err", "") or "OpenCV error"
        if "MAX_IMAGE_PIXELS" in reason:
            reason = "its header declares more pixels than OpenCV's limit, CV_IO_MAX_IMAGE_PIXELS"
        raise ImageError(f"{source}: not a readable image ({reason})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{source}: not a readable image (corrupt or unsupported format)")
    unchanged = image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image, unchanged


def read_image_bgr(path: str) -> np.ndarray:
    """Decode any image file OpenCV reads into an 8-bit BGR array [H, W, 3].

    Grey, RGBA and 16-bit images are converted; any size from 1 x 1 up is accepted. Raises ImageError naming
    the file when it is missing, empty, truncated or not a decodable image (see :func:`decode_image_file`).
    """
    return decode_image_file(path)[0]
