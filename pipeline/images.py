"""What download does to an image's bytes besides fetching them: check the header before anything is
decoded (a real image format, under the pixel cap, not cut short), then resize and encode with
img2dataset's Resizer, made thread-friendly (``make_resizer``)."""

from __future__ import annotations

import io
import warnings

# Formats we accept as images (Pillow's names); anything else is not_image whatever its Content-Type.
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"})
# Leading bytes of the image formats: a file that starts like one but does not open is broken, not a non-image.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
# img2dataset Resizer messages → our reasons.
RESIZER_REASONS = {
    "image too small": "too_small",
    "aspect ratio too large": "bad_aspect_ratio",
    "image area too large": "decompression_bomb",
}

def inspect_image(data: bytes, max_pixels: int) -> tuple[int | None, int | None, str | None]:
    """(width, height, reason) from the header only (Pillow's open is lazy): refuse non-images,
    anything over ``max_pixels`` and files cut short, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height, fmt = im.size[0], im.size[1], im.format
    except Image.DecompressionBombError:
        return None, None, "decompression_bomb"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError):
        return None, None, "decode_error" if data.startswith(IMAGE_MAGIC) or data[8:12] == b"WEBP" else "not_image"
    if fmt not in IMAGE_FORMATS:
        return None, None, "not_image"
    if width * height > max_pixels:
        return width, height, "decompression_bomb"
    if width <= 0 or height <= 0 or not is_complete(fmt, data):
        return width, height, "decode_error"
    return width, height, None


def is_complete(fmt: str, data: bytes) -> bool:
    """Cheap end-of-file check: OpenCV decodes a cut JPEG with a grey bottom instead of failing."""
    if fmt in ("JPEG", "MPO"):
        return b"\xff\xd9" in data[-1024:]
    if fmt == "PNG":
        return b"IEND" in data[-64:]
    if fmt == "WEBP":
        return len(data) >= 8 + int.from_bytes(data[4:8], "little")
    return True


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


class ReusedTransforms:
    """The albumentations module as img2dataset's Resizer sees it, except that each transform is
    built once per thread and argument set, then reused.

    The Resizer builds its transforms (LongestMaxSize, PadIfNeeded, SmallestMaxSize, CenterCrop)
    anew for every image, and albumentations validates constructor arguments with inspect and
    pydantic: that took more CPU than decoding, resizing and encoding together (0.75 of 1.44 s for
    600 images, measured). Their arguments depend only on the config and on up- or downscaling, and
    a transform object is meant to be applied to many images; per thread, so none is shared.
    """

    def __init__(self, module):
        import threading

        self.module, self._local = module, threading.local()

    def __getattr__(self, name: str):
        attr = getattr(self.module, name)
        if not isinstance(attr, type):
            return attr

        def build(*args, **kwargs):
            cache = self._local.__dict__.setdefault("transforms", {})
            key = (name, _hashable(args), _hashable(kwargs))
            if key not in cache:
                cache[key] = attr(*args, **kwargs)
            return cache[key]

        return build


def make_resizer(dl):
    """img2dataset's Resizer from a DownloadConfig (png: encode_quality is the 0–9 compression).

    Two things are changed in img2dataset's resizer module, in the processes that run shards:
    - it silences libjpeg warnings by dup2-ing file descriptors 1 and 2 around every image
      (SuppressStdoutStderr): process-wide, so not thread-safe, and an open() of /dev/null per
      image. We resize in the fetch threads (OpenCV releases the GIL), so that is turned off;
    - its albumentations transforms are reused instead of rebuilt per image (ReusedTransforms):
      the same transforms with the same arguments, so the same pixels (a test compares them).
    """
    import contextlib

    import img2dataset.resizer
    from img2dataset.resizer import Resizer

    img2dataset.resizer.SuppressStdoutStderr = contextlib.nullcontext
    if not isinstance(img2dataset.resizer.A, ReusedTransforms):
        img2dataset.resizer.A = ReusedTransforms(img2dataset.resizer.A)

    quality = min(dl.encode_quality, 9) if dl.encode_format == "png" else dl.encode_quality
    return Resizer(
        image_size=dl.image_size, resize_mode=dl.resize_mode, resize_only_if_bigger=dl.resize_only_if_bigger,
        encode_quality=quality, encode_format=dl.encode_format, min_image_size=dl.min_image_size,
        max_image_area=dl.max_pixels, max_aspect_ratio=dl.max_aspect_ratio or float("inf"),
    )
