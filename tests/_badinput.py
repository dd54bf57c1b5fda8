"""The bad-input corpus: files the tests make themselves, each with its documented outcome.

Every case is ``Case(id, make, expect)``: ``make(folder) -> path`` writes one entry into
``folder`` (no third-party file is ever used), and ``expect`` is either
``Decodes(h, w)`` (the upright full-resolution size) or ``Fails(reason)`` (a phrase the
one-line ImageReadError must contain). Sizes are small so the corpus runs in seconds.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 32  # every decodable case is this size unless it says otherwise

ACTIONS = ("give", "copy", "fix", "check", "raise", "pass", "replace", "use", "send", "upload",
           "downscale", "start the demo")
"""Words of which a message must hold one: every error says what to do."""


@dataclass(frozen=True)
class Decodes:
    h: int
    w: int


@dataclass(frozen=True)
class Fails:
    reason: str


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]
    expect: Decodes | Fails
    regular: bool = True  # a regular file whose bytes can also be decoded from memory


# --------------------------------------------------------------------------- pixel makers


def pattern(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with structure (gradients plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.dstack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256])
    return (img + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def rgb(h: int = H, w: int = W) -> Image.Image:
    return Image.fromarray(pattern(h, w))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares w x h RGB pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def gif_huge_screen(w: int, h: int) -> bytes:
    """A small GIF whose logical screen claims w x h pixels."""
    data = bytearray(encode(rgb(), "GIF"))
    data[6:10] = struct.pack("<HH", w, h)
    return bytes(data)


def noisy_gif(h: int = 64, w: int = 64) -> bytes:
    rng = np.random.default_rng(9)
    return encode(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "GIF")


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(pattern(seed=i)) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer turns 90 degrees clockwise: upright size is W x H swapped
    return encode(rgb(), "JPEG", quality=90, exif=exif)


def bad_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # not a valid orientation: ignored
    return encode(rgb(), "JPEG", quality=90, exif=exif)


def corrupt_png_crc() -> bytes:
    data = bytearray(encode(rgb(), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF  # the IDAT chunk's CRC
    return bytes(data)


def corrupt_png_zlib() -> bytes:
    data = bytearray(encode(Image.fromarray(pattern(64, 64)), "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 10, idat + 60):  # scramble the deflate stream, then fix the CRC
        data[i] ^= 0x5A
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc = zlib.crc32(bytes(data[idat : idat + 4 + length])) & 0xFFFFFFFF
    data[idat + 4 + length : idat + 8 + length] = struct.pack(">I", crc)
    return bytes(data)


def zero_width_png() -> bytes:
    return png_header_only(0, 10)


def png_text_bomb() -> bytes:
    """A valid PNG with a zTXt chunk that inflates to 20 MB (Pillow stops at 1 MB)."""
    png = encode(rgb(), "PNG")
    text = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * (20 << 20), 9))
    return png[:33] + text + png[33:]  # after the 8-byte signature and the 25-byte IHDR


def cut(data: bytes, fraction: float) -> bytes:
    return data[: max(1, int(len(data) * fraction))]


def noisy_png(h: int = 64, w: int = 64) -> bytes:
    """Incompressible pixels, so any cut falls inside the pixel data."""
    rng = np.random.default_rng(7)
    return encode(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "PNG")


def noisy_jpeg(h: int = 64, w: int = 64) -> bytes:
    rng = np.random.default_rng(8)
    return encode(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "JPEG")


# --------------------------------------------------------------------------- entry makers


def write(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


def image(name: str, im: Callable[[], Image.Image], fmt: str, **kwargs: object):
    return write(name, lambda: encode(im(), fmt, **kwargs))


def link(name: str, target: str, make_target: Callable[[Path], Path] | None = None):
    def make(folder: Path) -> Path:
        if make_target is not None:
            make_target(folder)
        path = folder / name
        os.symlink(target, path)
        return path

    return make


def fifo(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        os.mkfifo(path)
        return path

    return make


def unix_socket(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays
        return path

    return make


def directory(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        (path / "inside").mkdir(parents=True)
        return path

    return make


def unreadable(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = write(name, lambda: encode(rgb(), "PNG"))(folder)
        path.chmod(0)
        return path

    return make


def missing(name: str) -> Callable[[Path], Path]:
    return lambda folder: folder / name


LONG = "x" * 246 + ".png"  # 250 characters: most file systems allow 255 bytes
NON_UTF8 = os.fsdecode(b"caf\xe9-latin1.png")

IMAGE_CASES: list[Case] = [
    # decodable: every mode, format and depth the README lists
    Case("png-rgb", image("a.png", rgb, "PNG"), Decodes(H, W)),
    Case("png-gray", image("a.png", lambda: rgb().convert("L"), "PNG"), Decodes(H, W)),
    Case("png-la", image("a.png", lambda: rgb().convert("LA"), "PNG"), Decodes(H, W)),
    Case("png-rgba", image("a.png", lambda: rgb().convert("RGBA"), "PNG"), Decodes(H, W)),
    Case("png-palette", image("a.png", lambda: rgb().convert("P"), "PNG"), Decodes(H, W)),
    Case("png-palette-transparent",
         image("a.png", lambda: rgb().convert("P"), "PNG", transparency=0), Decodes(H, W)),
    Case("png-16bit", image("a.png", lambda: Image.fromarray(
        pattern()[..., 0].astype(np.uint16) * 257), "PNG"), Decodes(H, W)),
    Case("png-1bit", image("a.png", lambda: rgb().convert("1"), "PNG"), Decodes(H, W)),
    Case("tiff-int32", image("a.tif", lambda: Image.fromarray(
        pattern()[..., 0].astype(np.int32) * 100_000), "TIFF"), Decodes(H, W)),
    Case("png-interlaced", image("a.png", rgb, "PNG", interlace=1), Decodes(H, W)),
    Case("png-trailing-garbage", write("a.png", lambda: encode(rgb(), "PNG") + b"junk" * 10),
         Decodes(H, W)),
    Case("jpeg-rgb", image("a.jpg", rgb, "JPEG"), Decodes(H, W)),
    Case("jpeg-gray", image("a.jpg", lambda: rgb().convert("L"), "JPEG"), Decodes(H, W)),
    Case("jpeg-cmyk", image("a.jpg", lambda: rgb().convert("CMYK"), "JPEG"), Decodes(H, W)),
    Case("jpeg-progressive", image("a.jpg", rgb, "JPEG", progressive=True), Decodes(H, W)),
    Case("jpeg-exif-rotated", write("a.jpg", exif_rotated_jpeg), Decodes(W, H)),
    Case("jpeg-exif-invalid-orientation", write("a.jpg", bad_exif_jpeg), Decodes(H, W)),
    Case("jpeg-trailing-garbage", write("a.jpg", lambda: encode(rgb(), "JPEG") + b"\0" * 64),
         Decodes(H, W)),
    Case("bmp", image("a.bmp", rgb, "BMP"), Decodes(H, W)),
    Case("tiff-rgb", image("a.tif", rgb, "TIFF"), Decodes(H, W)),
    Case("tiff-16bit", image("a.tif", lambda: Image.fromarray(
        pattern()[..., 1].astype(np.uint16) * 200), "TIFF"), Decodes(H, W)),
    Case("tiff-float", image("a.tif", lambda: Image.fromarray(
        pattern()[..., 0].astype(np.float32) / 255), "TIFF"), Decodes(H, W)),
    Case("tiff-cmyk", image("a.tif", lambda: rgb().convert("CMYK"), "TIFF"), Decodes(H, W)),
    Case("tiff-multipage", write("a.tif", lambda: animated("TIFF")), Decodes(H, W)),
    Case("gif", image("a.gif", rgb, "GIF"), Decodes(H, W)),
    Case("gif-animated", write("a.gif", lambda: animated("GIF")), Decodes(H, W)),
    Case("webp", image("a.webp", rgb, "WEBP"), Decodes(H, W)),
    Case("webp-lossless-alpha",
         image("a.webp", lambda: rgb().convert("RGBA"), "WEBP", lossless=True), Decodes(H, W)),
    Case("webp-animated", write("a.webp", lambda: animated("WEBP")), Decodes(H, W)),
    Case("ppm", image("a.ppm", rgb, "PPM"), Decodes(H, W)),
    Case("pgm", image("a.pgm", lambda: rgb().convert("L"), "PPM"), Decodes(H, W)),
    Case("pbm", image("a.pbm", lambda: rgb().convert("1"), "PPM"), Decodes(H, W)),
    Case("tiny-1x1-png", image("a.png", lambda: rgb(1, 1), "PNG"), Decodes(1, 1)),
    Case("tiny-3x3-png", image("a.png", lambda: rgb(3, 3), "PNG"), Decodes(3, 3)),
    Case("tiny-1x1-jpeg", image("a.jpg", lambda: rgb(1, 1), "JPEG"), Decodes(1, 1)),
    Case("thin-1x300", image("a.png", lambda: rgb(1, 300), "PNG"), Decodes(1, 300)),
    Case("tall-300x1", image("a.png", lambda: rgb(300, 1), "PNG"), Decodes(300, 1)),
    Case("png-named-jpg", image("a.jpg", rgb, "PNG"), Decodes(H, W)),
    Case("jpeg-named-png", image("a.png", rgb, "JPEG"), Decodes(H, W)),
    Case("png-named-txt", image("a.txt", rgb, "PNG"), Decodes(H, W)),
    Case("no-extension", image("image", rgb, "PNG"), Decodes(H, W)),
    Case("upper-case-suffix", image("A.PNG", rgb, "PNG"), Decodes(H, W)),
    Case("unicode-name", image("фото 写真 é.png", rgb, "PNG"), Decodes(H, W)),
    Case("newline-name", image("two\nlines.png", rgb, "PNG"), Decodes(H, W)),
    Case("tab-and-quotes-name", image("a\t'b\" c.png", rgb, "PNG"), Decodes(H, W)),
    Case("non-utf8-name", image(NON_UTF8, rgb, "PNG"), Decodes(H, W)),
    Case("250-character-name", image(LONG, rgb, "PNG"), Decodes(H, W)),
    Case("dash-name", image("-rf.png", rgb, "PNG"), Decodes(H, W)),
    Case("link-to-png", link("l.png", "t.png", image("t.png", rgb, "PNG")), Decodes(H, W)),
    Case("link-chain", link("l2.png", "l1.png", link("l1.png", "t.png",
                                                     image("t.png", rgb, "PNG"))), Decodes(H, W)),
    # not images, or damaged
    Case("empty-file", write("a.png", b""), Fails("empty")),
    Case("text-file", write("a.jpg", b"this is not an image\n"), Fails("not a recognised")),
    Case("random-bytes", write("a.png", bytes(range(256)) * 4), Fails("not a recognised")),
    Case("html", write("a.png", b"<!doctype html><title>x</title>"), Fails("not a recognised")),
    Case("svg", write("a.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
         Fails("not a recognised")),
    Case("pdf", write("a.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
         Fails("not a recognised")),
    Case("zip", write("a.png", b"PK\x03\x04" + b"\0" * 40), Fails("not a recognised")),
    Case("heic-signature", write("a.jpg", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
         Fails("not a recognised")),
    Case("png-signature-only", write("a.png", b"\x89PNG\r\n\x1a\n"), Fails("not a recognised")),
    Case("jpeg-soi-only", write("a.jpg", b"\xff\xd8"), Fails("not a recognised")),
    Case("png-cut-10", write("a.png", lambda: cut(noisy_png(), 0.1)), Fails("truncated")),
    Case("png-cut-50", write("a.png", lambda: cut(noisy_png(), 0.5)), Fails("truncated")),
    Case("png-cut-90", write("a.png", lambda: cut(noisy_png(), 0.9)), Fails("truncated")),
    Case("jpeg-cut-30", write("a.jpg", lambda: cut(noisy_jpeg(), 0.3)), Fails("truncated")),
    Case("jpeg-cut-70", write("a.jpg", lambda: cut(noisy_jpeg(), 0.7)), Fails("truncated")),
    Case("gif-cut", write("a.gif", lambda: cut(noisy_gif(), 0.5)), Fails("truncated")),
    # an animated GIF cut after its first frame still gives that frame (the first is used)
    Case("gif-animated-cut-late", write("a.gif", lambda: cut(animated("GIF"), 0.9)),
         Decodes(H, W)),
    Case("webp-cut", write("a.webp", lambda: cut(encode(rgb(64, 64), "WEBP"), 0.5)),
         Fails("corrupt")),
    Case("tiff-cut", write("a.tif", lambda: cut(encode(rgb(64, 64), "TIFF"), 0.5)),
         Fails("truncated")),
    # Pillow does not check the CRC of pixel-data chunks: intact pixels with a wrong
    # checksum decode (documented, not a crash)
    Case("png-bad-crc", write("a.png", corrupt_png_crc), Decodes(H, W)),
    Case("png-bad-deflate", write("a.png", corrupt_png_zlib), Fails("corrupt")),
    Case("png-zero-width", write("a.png", zero_width_png), Fails("not a recognised")),
    Case("bomb-png-header", write("a.png", lambda: png_header_only(30000, 30000)),
         Fails("too large")),
    Case("bomb-gif-screen", write("a.gif", lambda: gif_huge_screen(65535, 65535)),
         Fails("too large")),
    Case("png-text-bomb", write("a.png", png_text_bomb), Fails("too large")),
    # not regular files
    Case("directory-named-jpg", directory("d.jpg"), Fails("directory"), regular=False),
    Case("fifo", fifo("q.jpg"), Fails("FIFO"), regular=False),
    Case("socket", unix_socket("s.png"), Fails("socket"), regular=False),
    Case("device", link("null.png", os.devnull), Fails("device"), regular=False),
    Case("link-to-directory", link("d.png", "real", directory("real")), Fails("directory"),
         regular=False),
    Case("broken-link", link("b.png", "nowhere.png"), Fails("broken symbolic link"),
         regular=False),
    Case("link-loop", link("loop.png", "loop.png"), Fails("loop"), regular=False),
    Case("link-loop-pair", link("p1.png", "p2.png", link("p2.png", "p1.png")), Fails("loop"),
         regular=False),
    Case("missing", missing("gone.png"), Fails("does not exist"), regular=False),
    Case("permission-denied", unreadable("locked.png"), Fails("permission denied"),
         regular=False),
]


def case_ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def skip_reason(case: Case) -> str | None:
    """Why a case cannot run on this machine (None when it can)."""
    if case.id == "permission-denied" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root reads files whatever their permissions"
    if case.id == "fifo" and not hasattr(os, "mkfifo"):
        return "no FIFOs on this platform"
    if case.id == "socket" and not hasattr(socket, "AF_UNIX"):
        return "no Unix sockets on this platform"
    if case.id == "device" and not os.path.exists("/dev/null"):
        return "no /dev/null"
    return None


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds``: a hang fails, never blocks CI."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def assert_one_line_error(message: str, *, names: str | None, reason: str) -> None:
    """The corpus's contract for every error message."""
    assert "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message, message
    assert reason in message, f"expected {reason!r} in: {message}"
    if names is not None:
        assert names in message, f"expected the name {names!r} in: {message}"
    assert any(word in message for word in ACTIONS), f"no advice in: {message}"
