#!/usr/bin/python3
"""Generate the image-path test fixtures and their Pillow reference outputs.

Run once (needs Python 3, Pillow, numpy, avifenc, jpegtran; on Debian:
`apt-get install python3-pil python3-numpy libavif-bin libjpeg-turbo-progs`):

    /usr/bin/python3 scripts/make-image-fixtures.py

Writes test/fixtures/images/: tiny image files named by what they test, `<name>.rgb.gz` with the
RGB bytes Pillow produces for `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`, and
expected.json (sizes, resize samples, normalisation table). The tests need neither Python nor Pillow.

The BeitImageProcessor steps are replicated from transformers' source: PIL `Image.resize((w, h),
resample)` with reducing_gap None, `image.astype(float64) * rescale_factor` cast to float32, then
`(image - mean) / std` in float32 with mean/std as float32 arrays.
"""

import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "images")
os.makedirs(OUT, exist_ok=True)
expected = {"pillow": Image.__version__, "images": {}, "resize": [], "normalize": {}, "pixel_values": {}}


def photo(w, h, seed=1):
    """A natural-ish picture: smooth gradients, soft blobs, hard-edged shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 90 + 100 * x / max(w - 1, 1)
    img[..., 1] = 60 + 140 * y / max(h - 1, 1)
    img[..., 2] = 120 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, max(w, h) / 3)
        col = rng.uniform(0, 255, 3)
        m = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - m) + col * m
    for _ in range(4):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0 : y0 + h // 5, x0 : x0 + w // 6] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def write_gz(name, data):
    """Deterministic gzip (no timestamp, no name) so reruns give identical files."""
    with open(os.path.join(OUT, name), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as f:
        f.write(data)


def reference_rgb(path):
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def record(name, path_bytes=None, refusal=None, note=None, rotate=True):
    path = os.path.join(OUT, name)
    entry = {}
    if refusal:
        entry["refusal"] = refusal
    else:
        with Image.open(path) as im:
            entry["pillowMode"] = im.mode
            rgb = (ImageOps.exif_transpose(im) if rotate else im).convert("RGB")
        with Image.open(path) as im:
            raw = im.convert("RGB")
        a = np.asarray(rgb)
        entry.update({"width": rgb.width, "height": rgb.height, "sha256": hashlib.sha256(a.tobytes()).hexdigest()})
        entry["rawWidth"], entry["rawHeight"] = raw.width, raw.height
        write_gz(name + ".rgb.gz", a.tobytes())
    if note:
        entry["note"] = note
    expected["images"][name] = entry


def save(im, name, **kw):
    im.save(os.path.join(OUT, name), **kw)


# --- a minimal PNG writer for what Pillow cannot save (interlaced, 16-bit RGB, low bit depths) -------
def png_bytes(rows, width, height, bit_depth, color_type, interlace=False, plte=None, trns=None, extra=()):
    """rows: list of bytes per row (already packed for bit_depth). Filter type 0 throughout."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp_bits = channels * bit_depth

    def chunk(t, data):
        c = struct.pack(">I", len(data)) + t + data
        return c + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    def unpack_row(r):
        # Return per-pixel bit strings so we can re-pack subsets for Adam7.
        bits = "".join(f"{b:08b}" for b in r)
        return [bits[i * bpp_bits : (i + 1) * bpp_bits] for i in range(width)]

    def pack(pixels):
        bits = "".join(pixels)
        bits += "0" * (-len(bits) % 8)
        return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))

    raw = b""
    if not interlace:
        for r in rows:
            raw += b"\0" + r
    else:
        px = [unpack_row(r) for r in rows]
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            for y in range(y0, height, dy):
                sub = [px[y][x] for x in range(x0, width, dx)]
                if sub:
                    raw += b"\0" + pack(sub)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for t, d in extra:
        out += chunk(t, d)
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return out


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def exif_with_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


base = photo(233, 157)
small = photo(40, 28, seed=2)
tiny = photo(17, 11, seed=3)

# --- JPEG ------------------------------------------------------------------------------------------
save(base, "photo-odd-size.jpeg", quality=90)
record("photo-odd-size.jpeg")
save(small, "baseline-444.jpeg", quality=92, subsampling=0)
record("baseline-444.jpeg")
save(small, "progressive.jpeg", quality=85, progressive=True)
record("progressive.jpeg")
save(small.convert("L"), "grayscale.jpeg", quality=90)
record("grayscale.jpeg")
# Progressive JPEGs go through the TypeScript decoder: every chroma layout it handles, odd sizes,
# 1-pixel-wide and -high images (edge cases of fancy upsampling), grayscale, restart markers.
odd = photo(61, 45, seed=5)
for sub, label in [(2, "420"), (1, "422"), (0, "444")]:
    save(odd, f"progressive-{label}-odd-size.jpeg", quality=87, progressive=True, subsampling=sub)
    record(f"progressive-{label}-odd-size.jpeg")
save(photo(12, 9, seed=6).crop((0, 0, 1, 9)), "progressive-420-1x9.jpeg", quality=90, progressive=True, subsampling=2)
record("progressive-420-1x9.jpeg")
save(photo(9, 12, seed=7).crop((0, 0, 9, 1)), "progressive-420-9x1.jpeg", quality=90, progressive=True, subsampling=2)
record("progressive-420-9x1.jpeg")
save(odd.convert("L"), "progressive-grayscale.jpeg", quality=90, progressive=True)
record("progressive-grayscale.jpeg")
with tempfile.TemporaryDirectory() as d:
    src = os.path.join(d, "src.jpeg")
    odd.save(src, quality=88, progressive=True, subsampling=2)
    out = os.path.join(OUT, "progressive-restart-markers.jpeg")
    subprocess.run(["jpegtran", "-progressive", "-restart", "2B", "-outfile", out, src], check=True)
record("progressive-restart-markers.jpeg")
cmyk = small.convert("CMYK")
save(cmyk, "cmyk.jpeg", quality=90)
record("cmyk.jpeg", note="Adobe CMYK (transform 0); Pillow reads it as CMYK;I then converts")
save(cmyk, "cmyk-progressive.jpeg", quality=90, progressive=True)
record("cmyk-progressive.jpeg")
# Adobe YCCK: the same file with the APP14 transform byte set to 2, so libjpeg (in Pillow) applies its
# YCCK -> CMYK conversion to the stored samples. Pillow cannot write YCCK itself.
data = bytearray(open(os.path.join(OUT, "cmyk.jpeg"), "rb").read())
app14 = data.find(b"Adobe")
assert app14 > 0 and data[app14 + 11] == 0
data[app14 + 11] = 2
write("ycck.jpeg", bytes(data))
record("ycck.jpeg", note="Adobe transform 2 (YCCK)")
# Restart markers every 3 MCUs, added losslessly by jpegtran (libjpeg-turbo-progs).
base_cmyk = photo(61, 45, seed=4).convert("CMYK")
with tempfile.TemporaryDirectory() as d:
    src = os.path.join(d, "src.jpeg")
    base_cmyk.save(src, quality=88)
    subprocess.run(["jpegtran", "-restart", "3B", "-outfile", os.path.join(OUT, "cmyk-restart-markers.jpeg"), src], check=True)
record("cmyk-restart-markers.jpeg")
for o in range(1, 9):
    save(tiny, f"exif-orientation-{o}.jpeg", quality=95, subsampling=0, exif=exif_with_orientation(o))
    record(f"exif-orientation-{o}.jpeg")

# --- PNG -------------------------------------------------------------------------------------------
save(small, "rgb-8bit.png")
record("rgb-8bit.png")
rgba = small.copy()
rgba.putalpha(Image.fromarray((np.arange(40 * 28).reshape(28, 40) % 256).astype(np.uint8)))
save(rgba, "rgba-alpha-dropped.png")
record("rgba-alpha-dropped.png")
save(small.convert("L"), "grayscale-8bit.png")
record("grayscale-8bit.png")
la = small.convert("L")
la.putalpha(128)
save(la, "grayscale-alpha.png")
record("grayscale-alpha.png")
save(small.convert("P", palette=Image.ADAPTIVE, colors=16), "palette.png")
record("palette.png")
pal = small.convert("P", palette=Image.ADAPTIVE, colors=8)
save(pal, "palette-alpha.png", transparency=bytes([0, 64, 128, 255, 255, 0, 10, 200]))
record("palette-alpha.png")
save(tiny, "exif-rotated-90.png", exif=exif_with_orientation(6))
record("exif-rotated-90.png")
# No EXIF, orientation only in XMP: Pillow's getexif() falls back to tiff:Orientation in PNG XMP.
xmp_info = PngImagePlugin.PngInfo()
xmp_info.add_itxt(
    "XML:com.adobe.xmp",
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>',
)
save(tiny, "xmp-orientation-8.png", pnginfo=xmp_info)
record("xmp-orientation-8.png", note="orientation from XMP only (Pillow's fallback)")

g16 = (np.arange(23 * 9).reshape(9, 23) * 317 % 65536).astype(np.uint16)
g16[0, :6] = [0, 1, 254, 255, 256, 65535]
write("grayscale-16bit.png", png_bytes([r.astype(">u2").tobytes() for r in g16], 23, 9, 16, 0))
record("grayscale-16bit.png", note="Pillow opens it as 'I' and convert('RGB') clips to 0..255")
rgb16 = (np.arange(13 * 7 * 3).reshape(7, 13, 3) * 2741 % 65536).astype(np.uint16)
write("rgb-16bit.png", png_bytes([r.astype(">u2").tobytes() for r in rgb16], 13, 7, 16, 2))
record("rgb-16bit.png", note="Pillow keeps the high byte of each sample")
g2 = (np.arange(19 * 5).reshape(5, 19) % 4).astype(np.uint8)
write(
    "grayscale-2bit.png",
    png_bytes([bytes(int("".join(f"{v:02b}" for v in r[i : i + 4]).ljust(8, "0"), 2) for i in range(0, 19, 4)) for r in g2], 19, 5, 2, 0),
)
record("grayscale-2bit.png")
inter = np.asarray(small)
write("interlaced.png", png_bytes([r.tobytes() for r in inter], 40, 28, 8, 2, interlace=True))
record("interlaced.png")
# Interlaced 4-bit palette: exercises Adam7 with sub-byte pixels.
p4 = (np.arange(21 * 13).reshape(13, 21) * 7 % 16).astype(np.uint8)
plte = bytes((i * 16 + k * 5) % 256 for i in range(16) for k in range(3))
write(
    "interlaced-palette-4bit.png",
    png_bytes(
        [bytes(int("".join(f"{v:04b}" for v in r[i : i + 2]).ljust(8, "0"), 2) for i in range(0, 21, 2)) for r in p4],
        21,
        13,
        4,
        3,
        interlace=True,
        plte=plte,
    ),
)
record("interlaced-palette-4bit.png")
# Indices past a 3-entry PLTE.
pb = (np.arange(16 * 3).reshape(3, 16) % 16).astype(np.uint8)
write(
    "palette-index-beyond-plte.png",
    png_bytes(
        [bytes(int("".join(f"{v:04b}" for v in r[i : i + 2]), 2) for i in range(0, 16, 2)) for r in pb],
        16,
        3,
        4,
        3,
        plte=bytes([200, 10, 10, 10, 200, 10, 10, 10, 200]),
    ),
)
record("palette-index-beyond-plte.png", note="indices past the PLTE map to the grey ramp")
# Animated PNG (acTL): the default image (IDAT) is decoded.
frames = [small, small.transpose(Image.FLIP_LEFT_RIGHT)]
frames[0].save(os.path.join(OUT, "animated.png"), save_all=True, append_images=frames[1:], duration=100)
record("animated.png", note="APNG: first frame, which is the default image")

# --- WebP ------------------------------------------------------------------------------------------
save(small, "lossy.webp", quality=80)
record("lossy.webp")
save(rgba, "lossless-alpha.webp", lossless=True)
record("lossless-alpha.webp")
save(rgba, "lossy-alpha.webp", quality=80)
record("lossy-alpha.webp")
save(tiny, "exif-rotated-180.webp", lossless=True, exif=exif_with_orientation(3))
record("exif-rotated-180.webp")
frames[0].save(os.path.join(OUT, "animated.webp"), save_all=True, append_images=frames[1:], duration=100)
record("animated.webp", note="first frame, as Pillow's WebPAnimDecoder gives it")
aframes = [rgba, rgba.transpose(Image.FLIP_TOP_BOTTOM)]
aframes[0].save(os.path.join(OUT, "animated-alpha.webp"), save_all=True, append_images=aframes[1:], duration=100, quality=80)
record("animated-alpha.webp", note="first frame with an ALPH chunk")

# --- GIF -------------------------------------------------------------------------------------------
gif_frames = [small.convert("P", palette=Image.ADAPTIVE, colors=32), small.rotate(180).convert("P", palette=Image.ADAPTIVE, colors=32)]
gif_frames[0].save(os.path.join(OUT, "first-frame.gif"), save_all=True, append_images=gif_frames[1:], duration=100)
record("first-frame.gif", note="animated, interlaced by Pillow's writer; first frame only")
tiny.convert("P", palette=Image.ADAPTIVE, colors=5).save(os.path.join(OUT, "not-interlaced.gif"), interlace=False)
record("not-interlaced.gif")


def gif_bytes(screen_w, screen_h, x, y, w, h, indices, global_pal=None, local_pal=None, transparent=None, min_code=None):
    """A GIF with one frame, LZW with a clear code before every symbol (valid, simple, uncompressed)."""
    out = b"GIF89a" + struct.pack("<HH", screen_w, screen_h)
    if global_pal:
        n = len(global_pal) // 3
        out += bytes([0x80 | ((n.bit_length() - 2) & 7), 0, 0]) + global_pal
    else:
        out += bytes([0, 0, 0])
    if transparent is not None:
        out += bytes([0x21, 0xF9, 4, 1, 0, 0, transparent, 0])
    flags = 0
    if local_pal:
        n = len(local_pal) // 3
        flags = 0x80 | ((n.bit_length() - 2) & 7)
    out += b"\x2c" + struct.pack("<HHHH", x, y, w, h) + bytes([flags]) + (local_pal or b"")
    m = min_code or 8
    size = m + 1
    clear, eoi = 1 << m, (1 << m) + 1
    bits, nbits, data = 0, 0, bytearray()
    for code in [c for v in indices for c in (clear, v)] + [eoi]:
        bits |= code << nbits
        nbits += size
        while nbits >= 8:
            data.append(bits & 255)
            bits >>= 8
            nbits -= 8
    if nbits:
        data.append(bits & 255)
    out += bytes([m])
    for i in range(0, len(data), 255):
        blk = data[i : i + 255]
        out += bytes([len(blk)]) + bytes(blk)
    return out + b"\0;"


pal4 = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0])
write("frame-offset-transparent.gif", gif_bytes(9, 7, 2, 1, 5, 4, [i % 4 for i in range(20)], global_pal=pal4, transparent=3, min_code=2))
record("frame-offset-transparent.gif", note="frame smaller than the screen; outside pixels take the transparent index")
write("frame-larger-than-screen.gif", gif_bytes(4, 3, 1, 1, 6, 5, [i % 4 for i in range(30)], local_pal=pal4, min_code=2))
record("frame-larger-than-screen.gif", note="Pillow grows the canvas to hold the first frame")
write("index-beyond-palette.gif", gif_bytes(6, 2, 0, 0, 6, 2, [0, 1, 2, 3, 7, 200, 5, 4, 3, 2, 1, 0], global_pal=pal4[:6], min_code=8))
record("index-beyond-palette.gif", note="indices past the colour table map to the grey ramp")

# --- AVIF (Pillow 9.4 has no AVIF: the reference is the lossless source) ------------------------------
with tempfile.TemporaryDirectory() as d:
    src = os.path.join(d, "src.png")
    small.save(src)
    dst = os.path.join(OUT, "lossless.avif")
    subprocess.run(["avifenc", "--lossless", "-s", "10", src, dst], check=True, capture_output=True)
    write_gz("lossless.avif.rgb.gz", np.asarray(small).tobytes())
    expected["images"]["lossless.avif"] = {
        "width": 40,
        "height": 28,
        "rawWidth": 40,
        "rawHeight": 28,
        "note": "reference is the PNG it was encoded from (avifenc --lossless); Pillow 9.4 cannot read AVIF",
    }


# --- resize: Pillow on a pattern both sides can generate ---------------------------------------------
def pattern(w, h):
    """Same formula as patternImage() in src/image/resample.test.ts (uint32 arithmetic)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint64)
    out = np.zeros((h, w, 3), np.uint8)
    for c in range(3):
        hsh = ((x * 73856093) ^ (y * 19349663) ^ np.uint64(c * 83492791)) & np.uint64(0xFFFFFFFF)
        smooth = (x * 3 + y * 2 + np.uint64(c * 60)) // 2
        out[..., c] = ((smooth + (hsh >> np.uint64(27))) & np.uint64(255)).astype(np.uint8)
    return Image.fromarray(out, "RGB")


NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
cases = [
    (640, 480, 224, 224, 2),
    (301, 199, 224, 224, 2),
    (97, 61, 224, 224, 2),
    (1, 50, 224, 224, 2),
    (50, 1, 224, 224, 2),
    (1, 1, 224, 224, 2),
    (230, 224, 224, 224, 2),
    (224, 300, 224, 224, 2),
    (224, 224, 224, 224, 2),
    (301, 199, 37, 23, 2),
    (2000, 1500, 224, 224, 2),
    (301, 199, 224, 224, 3),
    (301, 199, 224, 224, 1),
    (301, 199, 224, 224, 4),
    (301, 199, 224, 224, 5),
    (301, 199, 224, 224, 0),
    (97, 61, 224, 224, 3),
    (97, 61, 224, 224, 0),
]
for sw, sh, dw, dh, rs in cases:
    out = np.asarray(pattern(sw, sh).resize((dw, dh), resample=rs)).reshape(-1)
    step = 1 if out.size <= 4096 else 151
    expected["resize"].append(
        {
            "src": [sw, sh],
            "dst": [dw, dh],
            "resample": rs,
            "filter": NAMES[rs],
            "sha256": hashlib.sha256(out.tobytes()).hexdigest(),
            "step": step,
            "samples": out[::step].tolist(),
        }
    )

# --- normalisation: transformers' rescale (float64 then float32) and normalize (float32) --------------
for label, mean, std in [("beit", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]), ("imagenet", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]:
    v = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
    x = (v.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    expected["normalize"][label] = {"mean": mean, "std": std, "values": [[float(f) for f in x[0, :, c]] for c in range(3)]}


# --- end to end pixel_values for the BEiT checkpoint ------------------------------------------------
def beit_pixel_values(path, exif=True):
    with Image.open(path) as im:
        rgb = (ImageOps.exif_transpose(im) if exif else im).convert("RGB")
    a = np.asarray(rgb.resize((224, 224), resample=2))
    x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array([0.5] * 3, dtype=np.float32)) / np.array([0.5] * 3, dtype=np.float32)
    return x.transpose(2, 0, 1).copy()


for name in ["photo-odd-size.jpeg", "rgb-8bit.png", "lossless-alpha.webp", "first-frame.gif", "exif-orientation-6.jpeg"]:
    pv = beit_pixel_values(os.path.join(OUT, name))
    flat = pv.reshape(-1)
    expected["pixel_values"][name] = {
        "sha256": hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest(),
        "step": 401,
        "samples": [float(f) for f in flat[::401]],
    }

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, separators=(",", ":"))
sizes = sorted((os.path.getsize(os.path.join(OUT, n)), n) for n in os.listdir(OUT))
print(f"wrote {len(sizes)} files, {sum(s for s, _ in sizes)} bytes; largest: {sizes[-3:]}", file=sys.stderr)
