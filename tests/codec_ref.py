#!/usr/bin/python3
"""codec_ref: core/'s codecs against independent decoders (OpenCV, Pillow, arrays built here).

Usage: codec_ref.py PATH/TO/test_codec   (run by ctest with Debian's /usr/bin/python3)

Every fixture is made at test time: by Pillow, by OpenCV, by ImageMagick, or by the small
PNG writer below (sub-byte gray, 16-bit gray+alpha, tRNS), from random pixels and from
crops of Debian's mate-backgrounds photos. Our pixels come from `test_codec dump`, our
files from `test_codec encode/convert`. Exit 0 all passed, 1 a check failed, 77 skipped.
"""
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import cv2
    import numpy as np
    from PIL import Image, ImageCms, JpegImagePlugin
except ImportError as e:  # pragma: no cover
    print(f"skip: {e} (run with Debian's /usr/bin/python3)")
    sys.exit(77)

TOOL = sys.argv[1]
PHOTO = "/usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg"
failures = []
rng = np.random.default_rng(1234)


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)
    return cond


def tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


def dump(path):
    """Our decode of path as an (h, w, c) array, plus the format name."""
    out = path + ".raw"
    r = tool("dump", path, out)
    if r.returncode:
        raise RuntimeError(f"dump {path}: {r.stderr.strip()}")
    with open(out, "rb") as f:
        head = f.readline().split()
        w, h, c, d = map(int, head[:4])
        data = f.read()
    os.unlink(out)
    arr = np.frombuffer(data, dtype=np.uint8 if d == 8 else np.dtype("=u2"))
    return arr.reshape(h, w, c), head[4].decode()


def probe(path):
    r = tool("probe", path)
    if r.returncode:
        return None
    f, w, h, c, d = r.stdout.split()
    return f, int(w), int(h), int(c), int(d)


def save_raw(arr, path):
    h, w, c = arr.shape
    with open(path, "wb") as f:
        f.write(f"{w} {h} {c} {arr.itemsize * 8}\n".encode())
        f.write(arr.astype(arr.dtype.newbyteorder("=")).tobytes())


def encode(arr, out, *opts):
    raw = out + ".in.raw"
    save_raw(arr, raw)
    r = tool("encode", raw, out, *map(str, opts))
    os.unlink(raw)
    if r.returncode:
        raise RuntimeError(f"encode {out}: {r.stderr.strip()}")


def cv2_ours_layout(a, channels):
    """cv2.imread(UNCHANGED) result in our channel order (RGB[A], gray+alpha)."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 3:
        a = a[:, :, ::-1]
    elif a.shape[2] == 4:
        a = a[:, :, [2, 1, 0, 3]]
    if channels == 2 and a.shape[2] == 4:
        a = a[:, :, [0, 3]]  # OpenCV expands gray+alpha to BGRA
    return a


def pil_array(path, mode):
    with Image.open(path) as im:
        a = np.asarray(im.convert(mode))
    return a[:, :, None] if a.ndim == 2 else a


def same(ours, ref, what, tol=0):
    if not check(ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"):
        return False
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    return check(diff.max(initial=0) <= tol,
                 f"{what}: max diff {diff.max()} (> {tol}) at {np.argwhere(diff > tol)[:3].tolist()}")


def check_probe(path, ours, fmt):
    p = probe(path)
    h, w, c = ours.shape
    depth = ours.itemsize * 8
    check(p == (fmt, w, h, c, depth), f"{os.path.basename(path)}: probe {p} != decode "
          f"{(fmt, w, h, c, depth)}")


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# ---- a minimal PNG writer for what Pillow and OpenCV cannot produce ----

def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def write_png(path, rows, w, h, color_type, bits, extra=()):
    ihdr = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr))
        for t, d in extra:
            f.write(png_chunk(t, d))
        f.write(png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def pack_bits(vals, bits):
    """One row of sub-byte gray samples, most significant bits first."""
    per = 8 // bits
    vals = list(vals) + [0] * (-len(vals) % per)
    out = bytearray()
    for i in range(0, len(vals), per):
        b = 0
        for v in vals[i:i + per]:
            b = (b << bits) | int(v)
        out.append(b)
    return bytes(out)


# ---- a real ICC profile: Display P3 (matrix/TRC, D50-adapted primaries) ----

def s15(v):
    return struct.pack(">i", int(round(v * 65536)))


def make_p3_icc(pad=0):
    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc_txt = b"Display P3\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_txt)) + desc_txt + b"\0" * 8 +
            b"\0\0" + b"\0" + b"\0" * 67)
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0HybridCompute test profile, public domain\0"),
        (b"wtpt", xyz(0.96420, 1.0, 0.82491)),
        (b"rXYZ", xyz(0.515121, 0.241196, -0.001053)),
        (b"gXYZ", xyz(0.291977, 0.692245, 0.041885)),
        (b"bXYZ", xyz(0.157104, 0.066574, 0.784073)),
        (b"rTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"),
    ]
    if pad:  # a private tag that makes the profile span several JPEG APP2 segments
        tags.append((b"zzzz", b"zzzz\0\0\0\0" + bytes(rng.integers(0, 256, pad, dtype=np.uint8))))
    table_len = 4 + 12 * (len(tags) + 2)
    off = 128 + table_len
    entries, blobs = [], b""
    trc_off = None
    for sig, data in tags:
        while (off + len(blobs)) % 4:
            blobs += b"\0"
        entries.append((sig, off + len(blobs), len(data)))
        if sig == b"rTRC":
            trc_off = (off + len(blobs), len(data))
        blobs += data
    entries.append((b"gTRC", *trc_off))
    entries.append((b"bTRC", *trc_off))
    table = struct.pack(">I", len(entries)) + b"".join(
        s + struct.pack(">II", o, n) for s, o, n in entries)
    size = 128 + len(table) + len(blobs)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr" +
              b"RGB XYZ " + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" +
              b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + b"\0" * 4 + s15(0.9642) + s15(1.0) +
              s15(0.82491) + b"hc  " + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + table + blobs


def photo_crop(w, h, x=1200, y=700):
    img = cv2.imread(PHOTO, cv2.IMREAD_COLOR) if os.path.exists(PHOTO) else None
    if img is None:  # no mate-backgrounds: a smooth synthetic picture instead
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                        ((xx + yy) * 127 // max(w + h - 2, 1))], axis=2).astype(np.uint8)
        return img
    return img[y:y + h, x:x + w, ::-1].copy()  # RGB


# ---- the checks ----

def test_png_decode(d):
    w, h = 37, 23
    cases = []
    # sub-byte and 8/16-bit gray, made by hand: the reference is the array itself
    for bits in (1, 2, 4, 8, 16):
        vals = rng.integers(0, 1 << bits, (h, w))
        p = f"{d}/gray{bits}.png"
        if bits < 8:
            rows = [pack_bits(r, bits) for r in vals]
            expect = (vals * (255 // ((1 << bits) - 1))).astype(np.uint8)
        elif bits == 8:
            rows = [bytes(r.astype(np.uint8)) for r in vals]
            expect = vals.astype(np.uint8)
        else:
            rows = [r.astype(">u2").tobytes() for r in vals]
            expect = vals.astype(np.uint16)
        write_png(p, rows, w, h, 0, bits)
        cases.append((p, expect[:, :, None], 1))
    # 16-bit gray+alpha by hand
    ga = rng.integers(0, 65536, (h, w, 2)).astype(np.uint16)
    write_png(f"{d}/ga16.png", [r.astype(">u2").tobytes() for r in ga], w, h, 4, 16)
    cases.append((f"{d}/ga16.png", ga, 2))
    # 16-bit gray and RGB with a tRNS colour key, by hand: the key becomes alpha 0
    g16 = rng.integers(0, 4, (h, w)).astype(np.uint16) * 20000
    write_png(f"{d}/g16t.png", [r.astype(">u2").tobytes() for r in g16], w, h, 0, 16,
              [(b"tRNS", struct.pack(">H", 20000))])
    cases.append((f"{d}/g16t.png",
                  np.dstack([g16, np.where(g16 == 20000, 0, 65535)]).astype(np.uint16), 2))
    c16 = rng.integers(0, 2, (h, w, 3)).astype(np.uint16) * 40000
    key = c16.reshape(-1, 3)[0]
    write_png(f"{d}/rgb16t.png", [r.astype(">u2").tobytes() for r in c16], w, h, 2, 16,
              [(b"tRNS", struct.pack(">HHH", *key))])
    alpha = np.where((c16 == key).all(axis=2), 0, 65535).astype(np.uint16)
    cases.append((f"{d}/rgb16t.png", np.dstack([c16, alpha]), 4))
    # OpenCV-written RGB/RGBA 8/16 and gray
    for c in (3, 4):
        for dt, mx in ((np.uint8, 256), (np.uint16, 65536)):
            a = rng.integers(0, mx, (h, w, c)).astype(dt)
            p = f"{d}/cv{c}_{a.itemsize * 8}.png"
            cv2.imwrite(p, a[:, :, [2, 1, 0, 3][:c]])
            cases.append((p, a, c))
    # Pillow: gray+alpha 8, palette, palette with tRNS, gray with tRNS, RGB with tRNS
    la = rng.integers(0, 256, (h, w, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(f"{d}/la8.png")
    cases.append((f"{d}/la8.png", la, 2))
    rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    pal = Image.fromarray(rgb).quantize(64)
    pal.save(f"{d}/pal.png")
    cases.append((f"{d}/pal.png", pil_array(f"{d}/pal.png", "RGB"), 3))
    pal.save(f"{d}/palt.png", transparency=bytes(range(0, 256, 4)))
    cases.append((f"{d}/palt.png", pil_array(f"{d}/palt.png", "RGBA"), 4))
    g = rng.integers(0, 8, (h, w)).astype(np.uint8) * 32
    Image.fromarray(g, "L").save(f"{d}/grayt.png", transparency=64)
    cases.append((f"{d}/grayt.png", pil_array(f"{d}/grayt.png", "LA"), 2))
    q = (rng.integers(0, 4, (h, w, 3)) * 85).astype(np.uint8)
    Image.fromarray(q, "RGB").save(f"{d}/rgbt.png", transparency=(85, 170, 0))
    cases.append((f"{d}/rgbt.png", pil_array(f"{d}/rgbt.png", "RGBA"), 4))
    # Adam7 interlaced, made by ImageMagick from the OpenCV files
    for src in ("cv3_8", "cv4_16"):
        p = f"{d}/{src}_adam7.png"
        subprocess.run(["convert", f"{d}/{src}.png", "-interlace", "PNG", p], check=True)
        with Image.open(p) as im:
            check(im.info.get("interlace") == 1, f"{p} is not interlaced")
        cases.append((p, None, 3 if src == "cv3_8" else 4))
    for p, expect, c in cases:
        name = os.path.basename(p)
        ours, fmt = dump(p)
        check_probe(p, ours, "png")
        if expect is not None:
            same(ours, expect, f"{name} vs the array it was made from")
        cvref = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if name.startswith(("grayt", "rgbt", "g16t", "rgb16t")):
            continue  # OpenCV drops a gray tRNS key; Pillow's RGBA/LA is the reference
        same(ours, cv2_ours_layout(cvref, c), f"{name} vs cv2.imread")


def test_jpeg_decode(d):
    photo = photo_crop(333, 217)
    cases = []
    im = Image.fromarray(photo)
    im.save(f"{d}/base420.jpg", quality=90, subsampling=2)
    im.save(f"{d}/base444.jpg", quality=90, subsampling=0)
    im.save(f"{d}/base422.jpg", quality=75, subsampling=1)
    im.save(f"{d}/prog.jpg", quality=90, progressive=True)
    im.convert("L").save(f"{d}/gray.jpg", quality=90)
    im.convert("L").save(f"{d}/grayprog.jpg", quality=80, progressive=True)
    cv2.imwrite(f"{d}/cv.jpg", photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cases = ["base420", "base444", "base422", "prog", "gray", "grayprog", "cv"]
    if os.path.exists(PHOTO):
        shutil.copy(PHOTO, f"{d}/elephants.jpg")  # the real 4K progressive q100 file
        cases.append("elephants")
    for n in cases:
        p = f"{d}/{n}.jpg"
        ours, fmt = dump(p)
        check_probe(p, ours, "jpeg")
        ref = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        same(ours, cv2_ours_layout(ref, ours.shape[2]), f"{n}.jpg vs cv2.imread")
    # CMYK (Adobe, inverted): converted like OpenCV does, to within rounding
    im.convert("CMYK").save(f"{d}/cmyk.jpg", quality=95)
    ours, _ = dump(f"{d}/cmyk.jpg")
    check_probe(f"{d}/cmyk.jpg", ours, "jpeg")
    ref = cv2.imread(f"{d}/cmyk.jpg", cv2.IMREAD_COLOR)
    same(ours, ref[:, :, ::-1], "cmyk.jpg vs cv2.imread", tol=2)
    same(ours, pil_array(f"{d}/cmyk.jpg", "RGB"), "cmyk.jpg vs Pillow RGB", tol=2)


def test_truncated(d):
    im = Image.fromarray(photo_crop(400, 300))
    im.save(f"{d}/prog.jpg", quality=92, progressive=True)
    data = open(f"{d}/prog.jpg", "rb").read()
    sos = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    check(len(sos) > 3, "Pillow's progressive file has several scans")
    cuts = [100, sos[0] + 50, sos[1] - 1, sos[1] + 200, sos[len(sos) // 2] + 10,
            sos[-1] + (len(data) - sos[-1]) // 2, len(data) - 20]
    src = [(data, "prog.jpg")]
    if os.path.exists(PHOTO):
        big = open(PHOTO, "rb").read()
        src.append((big, "elephants.jpg"))
        cuts_big = [len(big) // 10, len(big) // 2, len(big) - 1000]
    for buf, name in src:
        for cut in (cuts if name == "prog.jpg" else cuts_big):
            p = f"{d}/cut.jpg"
            open(p, "wb").write(buf[:cut])
            r = tool("dump", p, p + ".raw")
            check(r.returncode == 1 and r.stderr.count("\n") == 1 and "jpeg:" in r.stderr,
                  f"{name} cut at {cut}/{len(buf)}: rc {r.returncode} {r.stderr!r}")
            check(not os.path.exists(p + ".raw"), f"{name} cut at {cut}: output written")


def test_other_decode(d):
    rgb = photo_crop(61, 47)
    rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2]).astype(np.uint8)])
    Image.fromarray(rgb).save(f"{d}/rgb.bmp")
    Image.fromarray(rgb).quantize(100).save(f"{d}/pal.bmp")
    Image.fromarray(rgb).save(f"{d}/rgb.tga")
    Image.fromarray(rgb).save(f"{d}/rle.tga", compression="tga_rle")
    Image.fromarray(rgba, "RGBA").save(f"{d}/rgba.tga")
    Image.fromarray(rgb).convert("L").save(f"{d}/gray.tga")
    Image.fromarray(rgb).quantize(100).save(f"{d}/pal.gif")
    Image.fromarray(rgb).save(f"{d}/rgb.ppm")
    Image.fromarray(rgb).convert("L").save(f"{d}/gray.pgm")
    for n, mode, fmt in (("rgb.bmp", "RGB", "bmp"), ("pal.bmp", "RGB", "bmp"),
                         ("rgb.tga", "RGB", "tga"), ("rle.tga", "RGB", "tga"),
                         ("rgba.tga", "RGBA", "tga"), ("gray.tga", "L", "tga"),
                         ("pal.gif", "RGBA", "gif"), ("rgb.ppm", "RGB", "pnm"),
                         ("gray.pgm", "L", "pnm")):
        p = f"{d}/{n}"
        ours, f = dump(p)
        check(f == fmt, f"{n}: format {f}")
        check_probe(p, ours, fmt)
        same(ours, pil_array(p, mode), f"{n} vs Pillow")
    # PSD composite (ImageMagick), 8 and 16 bit: stb hands out RGBA
    subprocess.run(["convert", f"{d}/rgb.bmp", f"{d}/rgb.psd"], check=True)
    ours, f = dump(f"{d}/rgb.psd")
    check(f == "psd", f"rgb.psd: format {f}")
    check_probe(f"{d}/rgb.psd", ours, "psd")
    same(ours, pil_array(f"{d}/rgb.psd", "RGBA"), "rgb.psd vs Pillow")
    a16 = rng.integers(0, 65536, (29, 31, 3)).astype(np.uint16)
    cv2.imwrite(f"{d}/rgb16.png", a16[:, :, ::-1])
    # stb reads 16-bit PSD only uncompressed (its RLE path is 8-bit only)
    subprocess.run(["convert", f"{d}/rgb16.png", "-depth", "16", "-compress", "None",
                    f"{d}/rgb16.psd"], check=True)
    ours, f = dump(f"{d}/rgb16.psd")
    check_probe(f"{d}/rgb16.psd", ours, "psd")
    same(ours[:, :, :3], a16, "rgb16.psd vs the array it was made from")
    # 16-bit PGM / PPM (big-endian samples), made by hand
    for c, magic in ((1, b"P5"), (3, b"P6")):
        a = rng.integers(0, 65536, (13, 11, c)).astype(np.uint16)
        p = f"{d}/x16_{c}.pnm"
        open(p, "wb").write(magic + b"\n# comment\n11 13\n65535\n" + a.astype(">u2").tobytes())
        ours, f = dump(p)
        check_probe(p, ours, "pnm")
        same(ours, a, f"16-bit {magic.decode()} vs the array it was made from")
    # Radiance HDR written by OpenCV: stb tone-maps to 8 bit with gamma 1/2.2
    hdr = (rng.random((19, 23, 3)) * 1.5).astype(np.float32)
    cv2.imwrite(f"{d}/x.hdr", hdr[:, :, ::-1])
    lin = cv2.imread(f"{d}/x.hdr", cv2.IMREAD_UNCHANGED)[:, :, ::-1].astype(np.float64)
    ref = np.clip(np.floor(np.power(lin, 1 / 2.2) * 255 + 0.5), 0, 255).astype(np.uint8)
    ours, f = dump(f"{d}/x.hdr")
    check(f == "hdr", f"x.hdr: format {f}")
    check_probe(f"{d}/x.hdr", ours, "hdr")
    same(ours, ref, "x.hdr vs float64 tone map of cv2's decode", tol=1)
    # a BMP cut short must fail, not come back zero-filled
    data = open(f"{d}/rgb.bmp", "rb").read()
    open(f"{d}/cut.bmp", "wb").write(data[:len(data) // 2])
    r = tool("dump", f"{d}/cut.bmp", f"{d}/cut.raw")
    check(r.returncode == 1 and "truncated" in r.stderr, f"cut.bmp: {r.stderr!r}")


def test_roundtrips(d):
    w, h = 45, 31
    for c in (1, 2, 3, 4):
        for dt, mx in ((np.uint8, 256), (np.uint16, 65536)):
            a = rng.integers(0, mx, (h, w, c)).astype(dt)
            bits = a.itemsize * 8
            for level in (-1, 0, 9):
                p = f"{d}/rt{c}_{bits}_{level}.png"
                encode(a, p, 0, level)
                same(cv2_ours_layout(cv2.imread(p, cv2.IMREAD_UNCHANGED), c), a,
                     f"our PNG {c}ch {bits}-bit level {level} read by cv2")
            if bits == 8:
                mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
                with Image.open(p) as im:
                    check(im.mode == mode, f"our PNG {c}ch: Pillow mode {im.mode}")
                    same(np.asarray(im).reshape(h, w, c), a, f"our PNG {c}ch read by Pillow")
            # BMP and TGA: 8 bit, gray stays gray, gray+alpha becomes RGBA
            a8 = a if bits == 8 else ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            exp = np.dstack([a8[:, :, 0]] * 3 + [a8[:, :, 1]]) if c == 2 else a8
            mode = {1: "L", 2: "RGBA", 3: "RGB", 4: "RGBA"}[c]
            for ext in ("bmp", "tga"):
                p = f"{d}/rt{c}_{bits}.{ext}"
                encode(a, p)
                same(pil_array(p, mode), exp, f"our {ext} {c}ch {bits}-bit read by Pillow")
                ours, _ = dump(p)
                check(ours.shape[2] in (exp.shape[2], 3), f"our {ext} {c}ch read back by us")
    # JPEG: quality, PSNR against the source, chroma subsampling, alpha and 16-bit dropped
    photo = photo_crop(640, 480, 1500, 900)
    sizes = {}
    for q in (50, 80, 95):
        p = f"{d}/q{q}.jpg"
        encode(photo, p, q)
        sizes[q] = os.path.getsize(p)
        dec = cv2.imread(p, cv2.IMREAD_COLOR)[:, :, ::-1]
        with Image.open(p) as im:
            check(JpegImagePlugin.get_sampling(im) == (0 if q >= 90 else 2),
                  f"q{q}: subsampling {JpegImagePlugin.get_sampling(im)}")
        if q == 95:
            v = psnr(dec, photo)
            print(f"JPEG q95 PSNR {v:.2f} dB, sizes {sizes}")
            check(v > 40, f"q95 PSNR {v:.2f} dB <= 40")
    check(sizes[50] < sizes[80] < sizes[95], f"quality does not change the size: {sizes}")
    encode(photo, f"{d}/default.jpg")
    check(os.path.getsize(f"{d}/default.jpg") == sizes[95], "default quality is not 95")
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    encode(rgba, f"{d}/rgba.jpg")
    dec = cv2.imread(f"{d}/rgba.jpg", cv2.IMREAD_UNCHANGED)
    check(dec.ndim == 3 and dec.shape[2] == 3, "JPEG from RGBA is RGB")
    check(psnr(dec[:, :, ::-1], photo) > 40, "JPEG from RGBA keeps the colours")
    p16 = photo.astype(np.uint16) * 257 + rng.integers(0, 257, photo.shape).astype(np.uint16)
    encode(p16, f"{d}/p16.jpg")
    dec = cv2.imread(f"{d}/p16.jpg", cv2.IMREAD_COLOR)[:, :, ::-1]
    ref = ((p16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    check(psnr(dec, ref) > 40, "16-bit to JPEG")
    g = photo[:, :, 1:2].copy()
    encode(g, f"{d}/g.jpg")
    dec = cv2.imread(f"{d}/g.jpg", cv2.IMREAD_UNCHANGED)
    check(dec.ndim == 2 and psnr(dec, g[:, :, 0]) > 40, "gray JPEG")


def exif_bytes():
    ex = Image.Exif()
    ex[0x010F] = "HybridCompute"     # Make
    ex[0x0110] = "Test Camera"       # Model
    ex[0x0131] = "codec_ref.py"      # Software
    ex[0x0112] = 1                   # Orientation
    return ex.tobytes()


def test_meta(d):
    icc = make_p3_icc()
    prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # lcms must accept it: a real profile
    check("Display P3" in ImageCms.getProfileDescription(prof), "P3 profile description")
    big_icc = make_p3_icc(pad=150000)  # three APP2 segments in a JPEG
    ImageCms.ImageCmsProfile(io.BytesIO(big_icc))
    exif = exif_bytes()
    photo = photo_crop(120, 80)
    im = Image.fromarray(photo)
    for prof_bytes, tag in ((icc, "p3"), (big_icc, "bigicc")):
        im.save(f"{d}/{tag}.jpg", quality=95, icc_profile=prof_bytes, exif=exif)
        im.save(f"{d}/{tag}.png", icc_profile=prof_bytes, exif=exif)
        for src in ("jpg", "png"):
            for dst in ("jpg", "png"):
                out = f"{d}/{tag}-{src}-to.{dst}"
                r = tool("convert", f"{d}/{tag}.{src}", out)
                if not check(r.returncode == 0, f"convert {src}->{dst}: {r.stderr}"):
                    continue
                with Image.open(out) as o:
                    check(o.info.get("icc_profile") == prof_bytes,
                          f"{tag} {src}->{dst}: ICC profile not carried")
                    oe = o.getexif()
                    check(oe.get(0x010F) == "HybridCompute" and oe.get(0x0110) == "Test Camera"
                          and oe.get(0x0131) == "codec_ref.py",
                          f"{tag} {src}->{dst}: EXIF not carried ({dict(oe)})")
                    # the TIFF payload itself, byte for byte
                    check(o.info.get("exif", b"")[-len(exif) + 6:] == exif[6:],
                          f"{tag} {src}->{dst}: EXIF bytes differ")
                # colour unchanged: same pixels (lossless hops exactly, JPEG hops close)
                a = pil_array(out, "RGB")
                s = pil_array(f"{d}/{tag}.{src}", "RGB")
                if dst == "png":
                    same(a, s, f"{tag} {src}->png pixels")
                else:
                    check(psnr(a, s) > 40, f"{tag} {src}->jpg pixels PSNR {psnr(a, s):.1f}")
                # and the profile still maps them to the same sRGB colours
                if tag == "p3" and dst == "png":
                    t = ImageCms.buildTransform(prof, ImageCms.createProfile("sRGB"), "RGB", "RGB")
                    with Image.open(out) as o, Image.open(f"{d}/{tag}.{src}") as si:
                        same(np.asarray(ImageCms.applyTransform(o.convert("RGB"), t)),
                             np.asarray(ImageCms.applyTransform(si.convert("RGB"), t)),
                             f"{src}->png P3 colours in sRGB")


def main():
    d = tempfile.mkdtemp(prefix="codec_ref.")
    try:
        for t in (test_png_decode, test_jpeg_decode, test_truncated, test_other_decode,
                  test_roundtrips, test_meta):
            print(f"-- {t.__name__}", flush=True)
            try:
                t(d)
            except Exception as e:  # a crash of one group is a failure, not an abort
                import traceback
                traceback.print_exc()
                failures.append(f"{t.__name__}: {e}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("codec_ref: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
