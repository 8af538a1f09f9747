"""Images of any PIL mode as the ``[H, W, 3] uint8`` RGB arrays the models take.

PIL's own ``convert("RGB")`` clips 16-bit grayscale (every value above 255 becomes white);
here high bit depths are scaled to 8 bits the way PIL reads 16-bit colour PNGs (the high
byte; PNG's 16-bit grayscale, modes ``I;16`` and ``I``), so a 16-bit copy of an image gives
the same array as the 8-bit one. Grayscale is repeated over the three channels, palettes are looked up (transparent ones through RGBA, as PIL
asks), alpha is dropped (the colour values are kept, not blended), CMYK and YCbCr are
converted. Floating-point and 32-bit integer images (no fixed range) are refused.
"""
import os

import numpy as np
from PIL import Image

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image, name: str = "image") -> np.ndarray:
    """``image`` as ``[H, W, 3] uint8`` RGB (module docstring); ``name`` is for errors."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        if mode == "I" and image.format != "PNG":  # PNG's mode I is 16-bit; elsewhere 32-bit
            raise ValueError(f"{name}: a 32-bit integer image (mode I) has no fixed range to scale to "
                             f"8 bits; save it as an 8- or 16-bit image")
        values = np.asarray(image)
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError(f"{name}: a floating-point image (mode F) has no fixed range to scale to 8 bits; "
                         f"save it as an 8- or 16-bit image")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError as e:  # a mode PIL cannot convert (e.g. LAB)
            raise ValueError(f"{name}: cannot convert a mode {mode} image to RGB ({e})") from None
    return np.asarray(image)


def read_image(path) -> np.ndarray:
    """The image file at ``path`` as ``[H, W, 3] uint8`` RGB (:func:`to_rgb`); ``ValueError``
    naming the file if it is not an image PIL can read."""
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            return to_rgb(im, repr(path))
    except (Image.UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path!r} is not an image that can be read: {e}") from None
    except (OSError, SyntaxError) as e:  # truncated or corrupt data (PIL raises both)
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise ValueError(f"{path!r}: the image data is corrupt or cut short ({e})") from None
