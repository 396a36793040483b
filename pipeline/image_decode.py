"""Shard images decoded for the model, on the CPU or the device: PIL (the exact path), torchvision's
libjpeg-turbo or nvjpeg for batches of JPEGs (PIL for what they refuse), which JPEGs may skip the
loader workers' PIL (``jpeg_for_device``), and the open_clip transform split into its PIL part
(the workers') and its tensor part (``DeviceNormalize``, batched on the device). Used by the
input pipeline (``pipeline.shard_data``), eval and the GPU feed."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch

# ------------------------------------------------------------------------------------- decoding


def decode_image(data: bytes, transform: Callable | None = None, rgb_first: bool = False):
    """An image's bytes through PIL → uint8 RGB [3, H, W] array, or the tensor a whole transform
    makes; raises on any image PIL cannot read (the caller counts one ``decode_error``).

    ``transform`` (a PIL transform) runs on the image as opened, as open_clip's own eval does;
    ``rgb_first`` converts to RGB before it, as the webdataset "pilrgb" decoding open_clip's
    trainer uses does (the two differ for palette, greyscale and alpha images).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        image = im.convert("RGB") if rgb_first else im
        out = transform(image) if transform is not None else image.convert("RGB")
        if not isinstance(out, Image.Image):
            return out
        return np.ascontiguousarray(np.asarray(out.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def decode_jpegs(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 RGB [3, H, W] images on ``device`` (torchvision: libjpeg-turbo on the CPU, nvjpeg on a
    GPU), in one batched call; what that decoder refuses is retried image by image and then with
    PIL, as the exact path would; None only where no decoder reads it (the caller counts the drop)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs:
        return []
    try:
        return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for b in blobs:
            try:
                out.append(decode_jpeg(b, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                try:
                    out.append(torch.from_numpy(decode_image(b.numpy().tobytes())).to(device))
                except Exception:  # noqa: BLE001 - an image no decoder reads is one dropped sample
                    out.append(None)
        return out


def decode_full(data: bytes) -> np.ndarray:
    """uint8 RGB [3, H, W] array at full size (resized later on the device); raises on any bad image.

    The JPEGs `jpeg_for_device` admits go to torchvision's libjpeg-turbo, the same library as PIL's
    and the same pixels (a test checks) but faster; other images go to PIL.
    """
    if jpeg_for_device(data) is None:
        return decode_image(data)
    image = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], torch.device("cpu"))[0]
    if image is None:
        raise ValueError("no decoder reads this JPEG")
    return image.numpy()


def is_complete_jpeg(data: bytes) -> bool:
    """JPEG with its end-of-image marker: safe to hand to the GPU decoder (which would silently
    accept a truncated file that PIL, and so the exact CPU path, rejects)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


# Frame-header (SOFn) markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits per sample) from a JPEG's frame header, None without one
    before the first scan. Walks the marker segments (a few bytes each): far cheaper than PIL's
    Image.open, which matters at the rate a GPU consumes images."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                return None
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return width, height, data[i + 9], data[i + 4]
        if marker in (0xD9, 0xDA):  # end of image or a scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def jpeg_for_device(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG the device may decode as it is; None for what the CPU path must
    decode and judge itself: not a complete JPEG, no readable frame header, not 8-bit greyscale or
    3-component colour (CMYK/YCCK), or past PIL's decompression-bomb limit (so one huge image cannot
    exhaust GPU memory; the CPU path then drops it as PIL does). The one rule for scoring and training."""
    from PIL import Image

    if not is_complete_jpeg(data):
        return None
    header = jpeg_size(data)
    if header is None:
        return None
    width, height, components, bits = header
    limit = Image.MAX_IMAGE_PIXELS
    if width == 0 or height == 0 or components not in (1, 3) or bits != 8 or (limit and width * height > 2 * limit):
        return None
    return width, height


def pack_blobs(blobs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte strings → (one uint8 tensor, offsets): one shared-memory buffer between processes."""
    offsets = torch.tensor(np.cumsum([0] + [len(b) for b in blobs]), dtype=torch.int64)
    return torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8), offsets


def unpack_blobs(packed: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    raw, offsets = packed
    bounds = offsets.tolist()
    return [raw[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]


# ---------------------------------------------------------------------------- the transform split


class DeviceNormalize:
    """ToTensor's /255 + Normalize for a batch of images in 0..255 (uint8, or float from a resize),
    on the batch's device, with torchvision's arithmetic. May reuse a float batch's memory."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device not in self._on:  # made once per device, not copied to it per batch
            self._on[images.device] = tuple(torch.tensor(v, device=images.device).view(-1, 1, 1)
                                            for v in (self.mean, self.std))
        mean, std = self._on[images.device]
        return images.float().div_(255).sub_(mean).div_(std)


def split_preprocess(preprocess) -> tuple[Callable, DeviceNormalize] | None:
    """Split an open_clip transform before its ToTensor + Normalize: ``(pil_part, normalize)``, or
    None for a transform of another shape (then the workers run all of it).

    The workers run the PIL part (resize, crop, RGB) and send uint8 images, 4× fewer bytes than
    floats between processes and to the GPU; ``normalize`` does the last two steps on the device.
    """
    from torchvision import transforms as T

    ts = list(getattr(preprocess, "transforms", []))
    if len(ts) < 2 or not isinstance(ts[-2], T.ToTensor) or not isinstance(ts[-1], T.Normalize):
        return None
    return T.Compose(ts[:-2]), DeviceNormalize(ts[-1].mean, ts[-1].std)
