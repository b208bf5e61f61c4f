#!/usr/bin/python3
"""Pillow's verdicts on PNGs with broken checksums, chunk types and endings.

Run once (needs Python 3 and Pillow 9.4; on Debian: `apt-get install python3-pil`):

    /usr/bin/python3 scripts/make-png-checksum-corpus.py

Bases: every chunk layout the image fixtures have (animated, eXIf, iTXt, PLTE + tRNS, interlaced
palette, plain RGB) plus ancillary-chunks.png, made here, with text, private and time chunks before
and after the image data and the image data split over two IDAT chunks. For every chunk of every
base it makes three variants: one byte of the CRC flipped, one byte of the data flipped (the CRC
left as it was), and the type's first letter flipped in case (critical <-> ancillary, CRC left as
it was); plus each base without its IEND and each base cut inside the IHDR's CRC. Each variant is
opened as the Hugging Face pipeline opens images, `ImageOps.exif_transpose(Image.open(f))
.convert("RGB")`; an exception is a refusal.

Writes test/fixtures/png-checksums/verdicts.json: one record per variant (base, chunk index and
type, what was changed, the sha256 of the variant's bytes, Pillow's verdict and message), which
src/image/png-checksums.test.ts rebuilds from the bases and compares with decodeImage's verdicts.
The tests need neither Python nor Pillow.
"""

import hashlib
import io
import json
import os
import struct
import zlib

import PIL
from PIL import Image, ImageOps

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test/fixtures/images")
OUT = os.path.join(ROOT, "test/fixtures/png-checksums")
BASES_FROM_FIXTURES = [
    "animated.png",
    "exif-rotated-90.png",
    "interlaced-palette-4bit.png",
    "palette-alpha.png",
    "rgb-8bit.png",
    "xmp-orientation-8.png",
]


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ancillary_chunks_png():
    w, h = 12, 8
    raw = b"".join(b"\0" + bytes((x * 20 + y * 7) & 255 for x in range(w * 3)) for y in range(h))
    z = zlib.compress(raw, 9)
    half = len(z) // 2
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
            chunk(b"gAMA", struct.pack(">I", 45455)),
            chunk(b"sRGB", b"\0"),
            chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
            chunk(b"tEXt", b"Comment\0made by make-png-checksum-corpus.py"),
            chunk(b"zTXt", b"Title\0\0" + zlib.compress(b"a compressed title")),
            chunk(b"prVt", b"a private ancillary chunk"),
            chunk(b"IDAT", z[:half]),
            chunk(b"IDAT", z[half:]),
            chunk(b"tEXt", b"Author\0after the image data"),
            chunk(b"tIME", struct.pack(">HBBBBB", 2026, 12, 6, 14, 0, 0)),
            chunk(b"IEND", b""),
        ]
    )


def chunks_of(b):
    """(offset, length, type) of every chunk that fits in the file."""
    out, at = [], 8
    while at + 12 <= len(b):
        (n,) = struct.unpack(">I", b[at : at + 4])
        if at + 12 + n > len(b):
            break
        out.append((at, n, b[at + 4 : at + 8].decode("latin1")))
        at += 12 + n
    return out


def flip(b, offset, mask):
    m = bytearray(b)
    m[offset] ^= mask
    return bytes(m)


def verdict(b):
    try:
        with Image.open(io.BytesIO(b)) as im:
            ImageOps.exif_transpose(im).convert("RGB")
        return "accept", None
    except Exception as e:  # noqa: BLE001 - any exception is Pillow refusing the file
        return "refuse", f"{type(e).__name__}: {e}"


def main():
    os.makedirs(OUT, exist_ok=True)
    bases = {}
    for name in BASES_FROM_FIXTURES:
        with open(os.path.join(FIXTURES, name), "rb") as f:
            bases[name] = f.read()
    bases["ancillary-chunks.png"] = ancillary_chunks_png()
    with open(os.path.join(OUT, "ancillary-chunks.png"), "wb") as f:
        f.write(bases["ancillary-chunks.png"])

    records = []
    for name, b in bases.items():
        assert verdict(b)[0] == "accept", name
        variants = []
        for i, (at, n, kind) in enumerate(chunks_of(b)):
            variants.append((i, kind, "crc", at + 8 + n + 3, 0x01, flip(b, at + 8 + n + 3, 0x01)))
            if n > 0:
                off = at + 8 + n // 2
                variants.append((i, kind, "data", off, 0x01, flip(b, off, 0x01)))
            variants.append((i, kind, "type", at + 4, 0x20, flip(b, at + 4, 0x20)))
        last = chunks_of(b)[-1]
        assert last[2] == "IEND", name
        variants.append((None, None, "no-iend", last[0], None, b[: last[0]]))
        variants.append((0, "IHDR", "cut-in-crc", 8 + 8 + 13 + 2, None, b[: 8 + 8 + 13 + 2]))
        for index, kind, change, offset, mask, v in variants:
            pillow, message = verdict(v)
            records.append(
                {
                    "base": name,
                    "chunk": index,
                    "type": kind,
                    "change": change,
                    "offset": offset,
                    "xor": mask,
                    "sha256": hashlib.sha256(v).hexdigest(),
                    "pillow": pillow,
                    "message": message,
                }
            )
    with open(os.path.join(OUT, "verdicts.json"), "w") as f:
        json.dump({"pillow": PIL.__version__, "variants": records}, f, indent=1)
        f.write("\n")
    refused = sum(r["pillow"] == "refuse" for r in records)
    print(f"{len(records)} variants, Pillow {PIL.__version__} refuses {refused}")


if __name__ == "__main__":
    main()
