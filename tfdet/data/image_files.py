"""Image files as the data readers see them before TensorFlow decodes them: the format from the first
bytes, the (height, width) from the header, and whether TensorFlow can decode the file.

The header size is what TensorFlow's decoders produce (the stored size: EXIF orientation is ignored by
both). Reading it costs one small read per file, so the readers can compare every image's size with
its annotation file at start-up; a full decode (`decode_problem`) is much slower.
"""

import re
import struct

FORMATS = "PNG/JPEG/GIF/BMP"
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"))
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SCAN_LIMIT = 1 << 24  # give up looking for the frame header after 16 MiB of metadata


def sniff(path):
    """(problem, size) of an image file without decoding it: problem is None or why the file is no
    readable image ("file not found", "empty file", "not a PNG/JPEG/GIF/BMP file", "cannot be read: ...");
    size is the (height, width) its header declares, or None where the header does not say (then the
    file is not judged: only a decode can tell)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
            if kind is None:
                return ("empty file" if not head else f"not a {FORMATS} file"), None
            try:
                return None, _SIZE_READERS[kind](head, f)
            except struct.error:  # a header shorter than its format's
                return None, None
    except FileNotFoundError:
        return "file not found", None
    except OSError as e:
        return f"cannot be read: {e.strerror or e}", None


def decode_problem(path):
    """None if TensorFlow decodes the file as an RGB image, else the first line of its error."""
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError) as e:
        message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", e.message.splitlines()[0])
        return f"cannot be decoded ({message})"
    return None


def _png_size(head, f):
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def _gif_size(head, f):
    width, height = struct.unpack("<HH", head[6:10])
    return height, width


def _bmp_size(head, f):
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", head[18:22])
    elif dib >= 40:
        width, height = struct.unpack("<ii", head[18:26])
    else:
        return None
    return abs(height), width


def _jpeg_size(head, f):
    """The frame header's size: walk the marker segments from the start of the file to the first SOFn,
    reading 4 KiB where the walk is (a large EXIF segment is skipped by seeking past it)."""
    data, base, pos = head, 0, 2  # data holds the file's bytes [base, base + len(data))
    while pos < _JPEG_SCAN_LIMIT:
        if pos + 9 > base + len(data):
            f.seek(pos)
            data, base = f.read(4096), pos
            if len(data) < 9:
                return None
        i = pos - base
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        elif marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return height, width
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        else:
            pos += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


_SIZE_READERS = {"png": _png_size, "jpeg": _jpeg_size, "gif": _gif_size, "bmp": _bmp_size}
