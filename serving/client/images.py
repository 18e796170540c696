"""Local image files, decoded with Pillow and fitted to what the model takes.

Nothing is resized or converted unless asked (`resize`): an image whose size
or channel count differs from the model's is refused with an InputError that
says what it is and what the model takes.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np

from serving.client.errors import InputError, first_line
from serving.client.metadata import ENCODED_SIGNATURE

# Formats `tf.io.decode_image` (the serving_encoded signature) reads, as Pillow names them.
# MPO is a JPEG with more pictures after its first (CIPA's Multi-Picture Format:
# phones' HDR and portrait shots); it starts as a plain JPEG, whose first
# picture decode_image reads, as Pillow's first frame is for serving_default.
SERVER_DECODABLE = ("PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP")
# Pillow modes of 8-bit images, by channel count.
_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def check_image(path: str) -> None:
  """InputError for a missing, unreadable or non-image file, or a decompression bomb, from its
  header alone (Pillow decodes no pixels until asked). The command line runs it on every file
  before it asks the server anything: a bad file is named as such, exit code 2, even when the
  server is down. Pixels that are corrupt behind a sound header fail later, in `open_image`.
  """
  open_image(path, decode=False).close()


def open_image(path: str, decode: bool = True):
  """Decodes `path` with Pillow; InputError for a missing, unreadable or non-image file.

  Images over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS,
  ~89 M pixels) are refused too: Pillow only warns below twice that, but a
  classifier of small images has no use for one, and decoding it could take
  gigabytes.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if os.path.isdir(path):
    raise InputError(f"{path} is a directory, not an image file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      image = Image.open(path)  # reads the header; refuses a bomb by its size
      if decode:
        image.load()
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    pixels = re.search(r"\((\d+) pixels\)", str(e))  # Pillow's message names the count
    raise InputError(
        f"{path} has {pixels.group(1) + ' pixels' if pixels else 'too many pixels'}, more than "
        f"the {Image.MAX_IMAGE_PIXELS} Pillow decodes safely (a decompression bomb?): give a "
        "smaller image") from e
  except UnidentifiedImageError as e:
    raise InputError(f"{path} is not an image (Pillow cannot decode it): give image files "
                     "such as PNG or JPEG") from e
  except OSError as e:
    raise InputError(f"{path} cannot be read ({e.strerror or first_line(e)}): check the file") from e
  except Exception as e:  # pylint: disable=broad-except
    # Pillow's decoders report corrupt data as SyntaxError, ValueError,
    # struct.error, EOFError, ...: whatever it is, the file is at fault.
    raise InputError(f"{path} is a corrupt image ({type(e).__name__}: {first_line(e)})") from e
  return image


def _describe(image) -> str:
  channels = _MODES.get(image.mode)
  return (f"{image.width}x{image.height} pixels with "
          + (f"{channels} channel{'s' if channels > 1 else ''} ({image.mode})" if channels
             else f"mode {image.mode}"))


def _expected(shape: tuple[int, int, int], model: str) -> str:
  h, w, c = shape
  return f"model {model!r} takes {w}x{h} pixels with {c} channel{'s' if c > 1 else ''} (uint8 [batch, {h}, {w}, {c}])"


def fit(image, path: str, shape: tuple[int, int, int], model: str, resize: bool,
        check_channels: bool = True):
  """Returns `image` as the model's size and mode, converting only if `resize`."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  h, w, c = shape
  if image.mode == "1":  # 1-bit: the same pixels as 8-bit grey, not a conversion
    image = image.convert("L")
  elif image.mode == "P":  # a palette is an encoding of RGB(A), not a channel count
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  target_mode = {1: "L", 3: "RGB"}.get(c)
  wrong_mode = check_channels and image.mode != target_mode
  wrong_size = image.size != (w, h)
  if not (wrong_mode or wrong_size):
    return image
  if not resize:
    raise InputError(f"{path} is {_describe(image)}, but {_expected(shape, model)}: pass "
                     "--resize to convert it")
  if wrong_mode:
    if target_mode is None:
      raise InputError(f"{path}: cannot convert to {c} channels; {_expected(shape, model)}")
    image = image.convert(target_mode)
  if wrong_size:
    # Antialiased: shrinking a photo to 32x32 without low-pass filtering aliases.
    image = image.resize((w, h), Image.Resampling.LANCZOS)
  return image


def load_pixels(path: str, shape: tuple[int, int, int], model: str, resize: bool) -> np.ndarray:
  """A file as uint8 [H, W, C] for serving_default; InputError if it does not fit."""
  image = fit(open_image(path), path, shape, model, resize)
  pixels = np.asarray(image, dtype=np.uint8)
  return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def load_encoded(path: str, shape: tuple[int, int, int], model: str, resize: bool) -> bytes:
  """A file's bytes for serving_encoded, checked for size (and re-encoded if `resize`)."""
  image = open_image(path)
  if image.format not in SERVER_DECODABLE and not resize:
    raise InputError(f"{path} is {image.format or 'an unknown format'}, which the model's "
                     f"{ENCODED_SIGNATURE} signature cannot decode: give PNG, JPEG, GIF, BMP "
                     "or WebP, pass --resize to re-encode it, or drop --encoded")
  # The server converts channels itself (decode_image(channels=C)); only the
  # size must already match.
  fitted = fit(image, path, shape, model, resize, check_channels=False)
  if fitted is image and image.format in SERVER_DECODABLE:
    try:
      with open(path, "rb") as f:
        return f.read()
    except OSError as e:  # replaced or unreadable since it was decoded
      raise InputError(f"{path} cannot be read ({e.strerror or first_line(e)})") from e
  if fitted.mode not in _MODES:  # CMYK, 16-bit, ...: PNG takes 8-bit L/LA/RGB/RGBA
    fitted = fitted.convert("RGB")
  buffer = io.BytesIO()
  fitted.save(buffer, format="PNG")  # lossless, so resizing is the only change
  return buffer.getvalue()
