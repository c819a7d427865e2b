#!/usr/bin/python3
"""End-to-end tests of the `hc` command against independent references.

Images are read and written with PIL and resized with OpenCV (Debian's python3-opencv), so
neither our decoder nor our encoder nor our resize is in the reference path. Run by ctest as
`hc_test.py NAME`; every test is runnable by name. Exit 77 = skipped.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile

try:
    import cv2
    import numpy as np
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"skip: needs /usr/bin/python3 with cv2, numpy, PIL ({e})", file=sys.stderr)
    sys.exit(77)

BUILD = os.environ.get("HC_BUILD_DIR", "build")
HC = os.path.join(BUILD, "bin", "hc")
MATE = "/usr/share/backgrounds/mate"
TMP = None


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def hc(*args, check=True):
    p = subprocess.run([HC, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        fail(f"hc {' '.join(map(str, args))} exited {p.returncode}: {p.stderr.strip()}")
    return p


def save_png(arr, path):
    """Writes arr (H,W[,C], uint8 or uint16) with PIL, channels in RGB(A) order."""
    if arr.dtype == np.uint16:
        if arr.ndim == 2:
            Image.fromarray(arr.astype(np.uint16), mode="I;16").save(path)
            return
        # PIL cannot write 16-bit colour PNGs: OpenCV can (BGR order), and it is not our code.
        out = arr.copy()
        if arr.shape[2] >= 3:
            out[..., :3] = arr[..., 2::-1]
        cv2.imwrite(path, out)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[1 if arr.ndim == 2 else arr.shape[2]]
    Image.fromarray(arr, mode=mode).save(path)


def load_png(path):
    """Reads a PNG to an array in RGB(A) order without our decoder."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 6):
        # PIL silently reduces 16-bit colour PNGs to 8 bits: read those with OpenCV.
        a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if a is None or a.dtype != np.uint16:
            fail(f"cannot read 16-bit {path}")
        a = a.copy()
        a[..., :3] = a[..., 2::-1]
        return a
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I"):
        return np.array(im).astype(np.uint16)
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return np.array(im)
    a = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # 16-bit colour
    if a is None:
        fail(f"cannot read {path}")
    if a.ndim == 3 and a.shape[2] >= 3:
        a = a.copy()
        a[..., :3] = a[..., 2::-1]
    return a


def cv_resize(arr, scale):
    h, w = arr.shape[:2]
    out = cv2.resize(arr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    if arr.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing 1-channel axis
        out = out[..., None]
    return out


def compare(ours, ref, scale, what):
    if ours.shape != ref.shape:
        fail(f"{what}: shape {ours.shape} != reference {ref.shape}")
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    same = float(np.mean(diff == 0))
    if scale in (2, 4) or scale == 1:
        if diff.max() != 0:
            idx = np.unravel_index(np.argmax(diff), diff.shape)
            fail(f"{what}: x{scale} differs from OpenCV at {idx}: ours {ours[idx]} cv2 {ref[idx]} "
                 f"({(1 - same) * 100:.4f}% of samples differ)")
    else:
        if diff.max() > 1 or same < 0.999:
            fail(f"{what}: x{scale} max diff {diff.max()}, identical {same * 100:.4f}% "
                 "(need <= 1 and >= 99.9%)")
    print(f"ok {what} x{scale}: max diff {diff.max()}, identical {same * 100:.4f}%")


def random_image(rng, h, w, ch, depth):
    hi = 256 if depth == 8 else 65536
    dtype = np.uint8 if depth == 8 else np.uint16
    shape = (h, w) if ch == 1 else (h, w, ch)
    a = rng.integers(0, hi, size=shape, dtype=np.int64).astype(dtype)
    # Smooth regions and hard edges as well as noise: saturation and rounding get exercised.
    a[: h // 3] = (hi - 1) if depth == 8 else (hi - 1)
    a[h // 3: h // 2, : w // 2] = 0
    return a


def t_opencv_random():
    """Random images of odd sizes, every channel layout, 8 and 16 bit, x2 x3 x4."""
    rng = np.random.default_rng(1234)
    sizes = [(1, 1), (1, 7), (5, 1), (3, 3), (17, 13), (61, 37), (127, 201)]
    for depth in (8, 16):
        for ch in (1, 2, 3, 4):
            if depth == 16 and ch == 2:
                continue  # neither PIL nor OpenCV writes 16-bit gray+alpha PNG
            for (h, w) in sizes:
                src = random_image(rng, h, w, ch, depth)
                inp = os.path.join(TMP, f"r_{depth}_{ch}_{h}x{w}.png")
                save_png(src, inp)
                for scale in (2, 3, 4):
                    out = os.path.join(TMP, f"o_{depth}_{ch}_{h}x{w}_{scale}.png")
                    hc("upscale", inp, out, "--scale", scale, "-q")
                    ours = load_png(out)
                    ref = cv_resize(src, scale)
                    if ours.ndim == 3 and ref.ndim == 2:
                        ref = ref[..., None]
                    if ref.ndim == 3 and ours.ndim == 2:
                        ours = ours[..., None]
                    compare(ours, ref, scale, f"random {h}x{w} {ch}ch {depth}-bit")


def mate_photo(name):
    path = os.path.join(MATE, name)
    if not os.path.exists(path):
        print(f"skip: {path} missing (apt-get install mate-backgrounds)", file=sys.stderr)
        sys.exit(77)
    return path


def t_opencv_photos():
    """Real photos (mate-backgrounds), decoded by PIL into PNG so nothing lossy sits between."""
    for name, crop, scales in (("nature/Storm.jpg", None, (2,)),
                               ("abstract/Elephants_3840x2160.jpg", (1000, 600, 1600, 1000), (2, 3, 4)),
                               ("nature/Storm.jpg", (0, 0, 640, 400), (4,))):
        path = os.path.join(MATE, name)
        if not os.path.exists(path):
            cands = sorted(os.listdir(os.path.join(MATE, "nature"))) if os.path.isdir(
                os.path.join(MATE, "nature")) else []
            if not cands:
                mate_photo(name)
            path = os.path.join(MATE, "nature", cands[0])
        im = Image.open(path).convert("RGB")
        if crop:
            im = im.crop(crop)
        src = np.array(im)
        inp = os.path.join(TMP, "photo.png")
        im.save(inp)
        for scale in scales:
            out = os.path.join(TMP, f"photo_x{scale}.png")
            hc("upscale", inp, out, "--scale", scale, "-q")
            compare(load_png(out), cv_resize(src, scale), scale,
                    f"{os.path.basename(path)} {src.shape[1]}x{src.shape[0]}")
            os.unlink(out)


def t_tiled_equals_untiled():
    """--tile N (1..512, smaller than the halo, wider than the image) == untiled, bytes."""
    rng = np.random.default_rng(99)
    cases = [(37, 23, 3), (9, 70, 1), (130, 97, 4)]
    tiles = [1, 2, 3, 4, 5, 7, 16, 17, 31, 64, 100, 255, 256, 511, 512]
    for (h, w, ch) in cases:
        src = random_image(rng, h, w, ch, 8)
        inp = os.path.join(TMP, f"t_{h}x{w}.png")
        save_png(src, inp)
        for scale in (2, 3):
            ref_path = os.path.join(TMP, f"t_ref_{scale}.png")
            hc("upscale", inp, ref_path, "--scale", scale, "-q")
            ref = load_png(ref_path)
            for t in tiles:
                if h * w > 5000 and t < 4:
                    continue  # thousands of 1-pixel tiles: covered by the small images
                out = os.path.join(TMP, f"t_{t}.png")
                hc("upscale", inp, out, "--scale", scale, "--tile", t, "-q")
                ours = load_png(out)
                if not np.array_equal(ours, ref):
                    fail(f"{h}x{w} {ch}ch x{scale}: --tile {t} differs from untiled")
            print(f"ok tiled == untiled for {h}x{w} {ch}ch x{scale} over {len(tiles)} tile sizes")


def t_big_tile():
    """A tile larger than the image costs the image, not tile x tile pixels: --tile 65536 on a
    small image runs under a 1 GB address-space limit (a 65536^2 RGB tile would be 12 GB)."""
    import resource
    rng = np.random.default_rng(17)
    src = random_image(rng, 23, 31, 3, 8)
    inp = os.path.join(TMP, "small.png")
    save_png(src, inp)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    # AddressSanitizer reserves terabytes of address space up front: no limit there, so an
    # ASan build checks only the result (the plain build is the one that catches the bug).
    cache = os.path.join(BUILD, "CMakeCache.txt")
    if os.path.exists(cache) and "HC_ASAN:BOOL=ON" in open(cache).read():
        limit = None

    for scale in (2, 8):
        out = os.path.join(TMP, f"big_tile_{scale}.png")
        p = subprocess.run([HC, "upscale", inp, out, "--scale", str(scale), "--tile", "65536", "-q"],
                           capture_output=True, text=True, timeout=60, preexec_fn=limit)
        if p.returncode != 0:
            fail(f"--tile 65536 x{scale} on a 31x23 image: exit {p.returncode}: {p.stderr.strip()}")
        compare(load_png(out), cv_resize(src, scale), scale, f"--tile 65536 x{scale}")


def t_too_many_tiles():
    """A 10000x10000 image at x8 in 1-pixel tiles is 6.4e9 tiles: more than tile numbers hold
    (int in the manifest, uint32 on the wire). split and upscale refuse it at once, exit 1."""
    inp = os.path.join(TMP, "huge.png")
    Image.new("L", (10000, 10000)).save(inp, compress_level=1)
    for args in (["split", inp, os.path.join(TMP, "tiles"), "--scale", "8", "--tile", "1"],
                 ["upscale", inp, os.path.join(TMP, "out.png"), "--scale", "8", "--tile", "1",
                  "-q"]):
        try:
            p = subprocess.run([HC, *args], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            fail(f"hc {args[0]} with 6.4e9 tiles was not refused (still running after 30 s)")
        if p.returncode != 1 or "tiles" not in p.stderr or len(p.stderr.strip().splitlines()) != 1:
            fail(f"hc {args[0]} with 6.4e9 tiles: exit {p.returncode}, stderr {p.stderr!r}")
        print(f"ok {args[0]}: {p.stderr.strip()}")
    if os.path.exists(os.path.join(TMP, "out.png")):
        fail("upscale left a file at OUT")


def t_threads():
    """--threads N bounds the CPU threads of the in-process path, tiled or not, and so does
    the CPU affinity mask: counted from /proc while the job runs (the job's own thread and
    the writer thread, plus N - 1)."""
    import time
    if (os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"):
        print("skip: needs 2 CPUs and /proc (with one CPU there is nothing to bound)",
              file=sys.stderr)
        sys.exit(77)
    rng = np.random.default_rng(31)
    inp = os.path.join(TMP, "thr.png")
    save_png(random_image(rng, 500, 700, 3, 8), inp)
    # Without --threads, "all CPUs" means the CPUs this process may run on: one under
    # taskset -c 0 (as OpenCV and libvips count them), not every CPU of the machine.
    cases = [([HC], ["--threads", "1"]), ([HC], ["--threads", "1", "--tile", "64"])]
    if shutil.which("taskset"):
        cases += [(["taskset", "-c", "0", HC], []), (["taskset", "-c", "0", HC], ["--tile", "64"])]
    for prefix, extra in cases:
        out = os.path.join(TMP, "thr_out.bmp")
        p = subprocess.Popen([*prefix, "upscale", inp, out, "--scale", "4", "-q", *extra],
                             stderr=subprocess.PIPE, text=True)
        most = 0
        while p.poll() is None:
            try:
                most = max(most, len(os.listdir(f"/proc/{p.pid}/task")))
            except FileNotFoundError:
                break
            time.sleep(0.0005)
        err = p.communicate()[1]
        what = " ".join(prefix[:-1] + extra)
        if p.returncode != 0:
            fail(f"{what}: exit {p.returncode}: {err.strip()}")
        if most > 2:
            fail(f"{what}: {most} threads seen (want at most 2: the job's and the writer's)")
        print(f"ok {what}: at most {most} threads")


def t_split_stitch():
    """The three-step workflow: split here, upscale every tile elsewhere (OpenCV), stitch."""
    rng = np.random.default_rng(7)
    for (h, w, ch, tile) in ((83, 121, 3, 64), (40, 33, 1, 16), (50, 50, 4, 100)):
        src = random_image(rng, h, w, ch, 8)
        inp = os.path.join(TMP, "s.png")
        save_png(src, inp)
        d = os.path.join(TMP, f"split_{h}")
        hc("split", inp, d, "--scale", 2, "--tile", tile)
        os.makedirs(os.path.join(d, "upscaled"), exist_ok=True)
        n = 0
        for f in sorted(os.listdir(d)):
            if f.startswith("tile-") and f.endswith(".png"):
                t = load_png(os.path.join(d, f))
                save_png(cv_resize(t, 2) if t.ndim == 3 else cv_resize(t, 2).reshape(
                    t.shape[0] * 2, t.shape[1] * 2), os.path.join(d, "upscaled", f))
                n += 1
        if n == 0:
            fail("split wrote no tiles")
        out = os.path.join(TMP, "stitched.png")
        hc("stitch", d, out)
        ours = load_png(out)
        ref = cv_resize(src, 2)
        if ref.ndim == 3 and ref.shape[2] == 1:
            ref = ref[..., 0]
        compare(ours, ref, 2, f"split/stitch {h}x{w} {ch}ch tile {tile} ({n} tiles)")
        # A missing tile is an error that names it, and leaves nothing at OUT.
        victim = sorted(os.listdir(os.path.join(d, "upscaled")))[0]
        os.unlink(os.path.join(d, "upscaled", victim))
        os.unlink(out)
        p = hc("stitch", d, out, check=False)
        if p.returncode != 1 or victim not in p.stderr or os.path.exists(out):
            fail(f"stitch with a missing tile: exit {p.returncode}, stderr {p.stderr!r}")


def t_split_reuse_dir():
    """split into a folder that holds an earlier tileset: nothing of the old one leaks into
    the new stitch (its ICC profile, its upscaled tiles)."""
    from PIL import ImageCms
    rng = np.random.default_rng(12)
    a, b = random_image(rng, 30, 40, 3, 8), random_image(rng, 30, 40, 3, 8)
    ina, inb = os.path.join(TMP, "a.jpg"), os.path.join(TMP, "b.png")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(a).save(ina, quality=95, icc_profile=icc)
    save_png(b, inb)
    d = os.path.join(TMP, "reuse")

    def upscale_tiles():
        os.makedirs(os.path.join(d, "upscaled"), exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("tile-"):
                save_png(cv_resize(load_png(os.path.join(d, f)), 2), os.path.join(d, "upscaled", f))

    hc("split", ina, d, "--scale", 2, "--tile", 16)
    upscale_tiles()
    hc("stitch", d, os.path.join(TMP, "a_out.png"))
    # An input that is itself one of the folder's tile files is refused, and stays intact.
    for victim in (os.path.join(d, "tile-00001.png"), os.path.join(d, "upscaled", "tile-00002.png")):
        before = open(victim, "rb").read()
        p = hc("split", victim, d, "--scale", 2, "--tile", 16, check=False)
        if p.returncode != 1 or open(victim, "rb").read() != before:
            fail(f"split of {victim} into its own folder: exit {p.returncode}, input "
                 f"{'intact' if open(victim, 'rb').read() == before else 'destroyed'}")
    hc("split", inb, d, "--scale", 2, "--tile", 16)
    out = os.path.join(TMP, "b_out.png")
    p = hc("stitch", d, out, check=False)
    if p.returncode != 1 or os.path.exists(out):
        fail(f"stitch after a new split, before its tiles were upscaled: exit {p.returncode} "
             "(the previous image's upscaled tiles were used)")
    upscale_tiles()
    hc("stitch", d, out)
    if Image.open(out).info.get("icc_profile"):
        fail("the new tileset's output carries the previous input's ICC profile")
    compare(load_png(out), cv_resize(b, 2), 2, "split into a reused folder")


def t_stitch_bad_manifest():
    """A manifest edited by hand or by a broken tool: every bad record gives exit 1 and one
    line, no crash (run under -DHC_UBSAN=ON too: rectangles at INT_MAX must not overflow)."""
    rng = np.random.default_rng(8)
    src = random_image(rng, 20, 30, 3, 8)
    inp = os.path.join(TMP, "m.png")
    save_png(src, inp)
    d = os.path.join(TMP, "split_m")
    hc("split", inp, d, "--scale", 2, "--tile", 16)
    os.makedirs(os.path.join(d, "upscaled"))
    for f in os.listdir(d):
        if f.startswith("tile-"):
            save_png(cv_resize(load_png(os.path.join(d, f)), 2), os.path.join(d, "upscaled", f))
    man = os.path.join(d, "manifest.txt")
    good = open(man).read().splitlines()
    first = good.index("tiles %d" % (len(good) - 5)) + 1
    big = 2147483647
    bad_records = [f"0 {big} 0 2 2 0 0 4 4", f"0 0 {big} 2 2 0 0 4 4", f"0 0 0 {big} 2 0 0 4 4",
                   f"0 -5 0 16 16 0 0 11 11", f"0 0 0 0 0 0 0 0 0", f"0 {big - 1} {big - 1} {big} {big} 0 0 4 4"]
    out = os.path.join(TMP, "m_out.png")
    for rec in bad_records:
        lines = list(good)
        lines[first] = rec
        with open(man, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = hc("stitch", d, out, check=False)
        err = p.stderr.strip().splitlines()
        if (p.returncode != 1 or len(err) != 1 or not err[0].startswith("hc: ") or
                "outside" not in err[0] or os.path.exists(out)):
            fail(f"stitch with record {rec!r}: exit {p.returncode}, stderr {p.stderr!r}")
        print(f"ok record {rec!r}: {p.stderr.strip()}")


def peak_rss_kb(cmd):
    """Runs cmd under GNU time; returns (returncode, stderr without time's line, peak KB)."""
    p = subprocess.run(["/usr/bin/time", "-f", "HC_MAXRSS %M", *cmd], capture_output=True,
                       text=True, timeout=120)
    lines = p.stderr.splitlines()
    rss = [int(l.split()[1]) for l in lines if l.startswith("HC_MAXRSS")]
    rest = [l for l in lines if not l.startswith("HC_MAXRSS") and not l.startswith("Command exited")]
    return p.returncode, rest, rss[0] if rss else -1


def t_bad_input():
    """Truncated JPEG, corrupt PNG, zero bytes, text, bomb headers: exit 1, one line, no OUT."""
    if not os.path.exists("/usr/bin/time"):
        print("skip: needs GNU time (apt-get install time)", file=sys.stderr)
        sys.exit(77)
    rng = np.random.default_rng(5)
    good = os.path.join(TMP, "good.jpg")
    Image.fromarray(random_image(rng, 300, 400, 3, 8)).save(good, quality=90, progressive=True)
    data = open(good, "rb").read()
    pngp = os.path.join(TMP, "good.png")
    save_png(random_image(rng, 64, 64, 3, 8), pngp)
    png = open(pngp, "rb").read()

    cases = {
        "truncated.jpg": data[: len(data) // 2],
        "truncated-header.jpg": data[:200],
        "corrupt.png": png[:60] + bytes(b ^ 0x5A for b in png[60:120]) + png[120:],
        "truncated.png": png[: len(png) - 40],
        "empty.png": b"",
        "text.jpg": b"this is not an image at all\n" * 10,
    }
    # A JPEG header claiming 65000x65000 (JPEG's 16-bit fields stop short of 100000), then a
    # scan with no data.
    sof = (b"\xff\xd8" + b"\xff\xc0\x00\x11\x08" +
           (65000).to_bytes(2, "big") + (65000).to_bytes(2, "big") +
           b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01" + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00" +
           b"\x00" * 64)
    cases["bomb.jpg"] = sof
    # A PNG IHDR claiming 100000x100000, correct CRC, then nothing useful.
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    cases["bomb.png"] = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk +
                         struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 100)
    for name, blob in cases.items():
        inp = os.path.join(TMP, name)
        with open(inp, "wb") as f:
            f.write(blob)
        for out_name in ("out.png", "out.jpg"):
            out = os.path.join(TMP, out_name)
            rc, err, rss = peak_rss_kb([HC, "upscale", inp, out, "-q"])
            if rc != 1:
                fail(f"{name} -> {out_name}: exit {rc}, expected 1 (stderr {err})")
            if len(err) != 1 or not err[0].startswith("hc: ") or len(err[0]) < 12:
                fail(f"{name}: expected one clear line on stderr, got {err}")
            if os.path.exists(out) or any(f.startswith(".out") for f in os.listdir(TMP)):
                fail(f"{name}: something was left at {out}")
            if rss > 64 * 1024:
                fail(f"{name}: peak RSS {rss} KB, expected bounded (< 64 MB)")
            print(f"ok {name} -> {out_name}: exit 1, '{err[0]}', peak {rss} KB")


def t_usage():
    """Usage errors exit 2; --help and --version exit 0."""
    for args in (["upscale"], ["upscale", "a.png"], ["upscale", "a.png", "b.png", "--scale", "0"],
                 ["upscale", "a.png", "b.png", "--scale", "9"], ["upscale", "a", "b", "--bogus"],
                 ["frobnicate"], [], ["upscale", "a", "b", "--filter", "lanczos"],
                 ["upscale", "a", "b", "--quality", "101"],
                 # OUT's extension is the output format: one we cannot write is refused (as
                 # cv2.imwrite and vips do), never written as some other format.
                 ["upscale", "a.png", "b.gif"], ["upscale", "a.png", "b"],
                 ["upscale", "a.png", "b.webp"], ["stitch", "d", "o.tiff"],
                 # more service URLs than hc keeps: refused, not silently cut
                 ["upscale", "a.png", "b.png", "--service",
                  ",".join(f"http://127.0.0.1:{9000 + i}" for i in range(17))]):
        p = hc(*args, check=False)
        if p.returncode != 2:
            fail(f"hc {args}: exit {p.returncode}, expected 2")
    for args in (["--help"], ["--version"], ["upscale", "--help"]):
        p = hc(*args, check=False)
        if p.returncode != 0 or not p.stdout:
            fail(f"hc {args}: exit {p.returncode}")
    p = hc("upscale", os.path.join(TMP, "does-not-exist.png"), os.path.join(TMP, "x.png"),
           check=False)
    if p.returncode != 1 or "does-not-exist" not in p.stderr:
        fail(f"missing input: exit {p.returncode}, stderr {p.stderr!r}")
    print("ok usage")


def t_formats_and_meta():
    """OUT's extension picks the format; ICC and EXIF carry over (checked with PIL)."""
    rng = np.random.default_rng(3)
    src = random_image(rng, 40, 60, 3, 8)
    icc = None
    for cand in ("/usr/share/color/icc/colord/DisplayP3.icc", "/usr/share/color/icc/colord/AdobeRGB1998.icc",
                 "/usr/share/color/icc/sRGB.icc", "/usr/share/color/icc/colord/sRGB.icc"):
        if os.path.exists(cand):
            icc = open(cand, "rb").read()
            break
    if icc is None:
        from PIL import ImageCms
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "HybridCompute test camera"
    exif[0x0110] = "Model 3"
    inp = os.path.join(TMP, "meta.jpg")
    Image.fromarray(src).save(inp, quality=95, icc_profile=icc, exif=exif.tobytes())
    for ext, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".bmp", "BMP"),
                     (".tga", "TGA")):
        out = os.path.join(TMP, "meta_out" + ext)
        hc("upscale", inp, out, "-q")
        im = Image.open(out)
        if im.format != fmt or im.size != (120, 80):
            fail(f"{ext}: got {im.format} {im.size}")
        if fmt in ("PNG", "JPEG"):
            if im.info.get("icc_profile") != icc:
                fail(f"{ext}: ICC profile not carried over")
            got = im.getexif()
            if got.get(0x010F) != "HybridCompute test camera" or got.get(0x0110) != "Model 3":
                fail(f"{ext}: EXIF not carried over ({dict(got)})")
        print(f"ok {ext} -> {fmt}{' with ICC and EXIF' if fmt in ('PNG', 'JPEG') else ''}")
    # Quality changes the JPEG.
    a, b = os.path.join(TMP, "q50.jpg"), os.path.join(TMP, "q95.jpg")
    hc("upscale", inp, a, "--quality", 50, "-q")
    hc("upscale", inp, b, "-q")
    if not os.path.getsize(a) < os.path.getsize(b):
        fail("--quality 50 did not give a smaller JPEG than the default 95")
    print("ok quality")


def t_interrupt():
    """SIGINT in the middle of a job: exit 130, nothing at OUT, no temporary file left."""
    rng = np.random.default_rng(11)
    inp = os.path.join(TMP, "big.png")
    save_png(random_image(rng, 1500, 2000, 3, 8), inp)
    outdir = os.path.join(TMP, "out")
    os.makedirs(outdir)
    out = os.path.join(outdir, "big_x4.png")
    import signal
    import time
    p = subprocess.Popen([HC, "upscale", inp, out, "--scale", "4", "-q"], stderr=subprocess.PIPE,
                         text=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    if p.returncode == 0:
        print("skip: the job finished before the signal (machine too fast)", file=sys.stderr)
        sys.exit(77)
    if p.returncode != 130 or os.listdir(outdir):
        fail(f"interrupted job: exit {p.returncode}, left {os.listdir(outdir)}, stderr {err!r}")
    print(f"ok interrupted: exit 130, '{err.strip()}'")


def start_service(*extra):
    """A real hc-gpu-service on 127.0.0.1:0 (CPU backend); returns (process, base URL)."""
    svc = os.path.join(BUILD, "bin", "hc-gpu-service")
    if not os.access(svc, os.X_OK):
        fail(f"{svc} not built")
    p = subprocess.Popen([svc, "--listen", "127.0.0.1:0", "--backend", "cpu", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    port = line.rsplit(":", 1)[-1]
    if not port.isdigit():
        p.kill()
        fail(f"service printed {line!r}, not a port")
    return p, f"http://127.0.0.1:{port}"


def t_service():
    """--service: same bytes as in-process, every layout; a dead service fails cleanly."""
    rng = np.random.default_rng(21)
    svc, url = start_service()
    try:
        for ch in (1, 2, 3, 4):
            for depth in (8, 16):
                if depth == 16 and ch == 2:
                    continue
                src = random_image(rng, 97, 131, ch, depth)
                inp = os.path.join(TMP, f"svc_{ch}_{depth}.png")
                save_png(src, inp)
                for scale, tile in ((2, 64), (3, 50), (4, 256)):
                    local = os.path.join(TMP, "local.png")
                    remote = os.path.join(TMP, "remote.png")
                    hc("upscale", inp, local, "--scale", scale, "-q")
                    hc("upscale", inp, remote, "--scale", scale, "--tile", tile, "--service", url,
                       "-q")
                    if open(local, "rb").read() != open(remote, "rb").read():
                        fail(f"--service {ch}ch {depth}-bit x{scale} tile {tile}: bytes differ "
                             "from the in-process run")
                    ours = load_png(remote)
                    ref = cv_resize(src, scale)
                    if ours.ndim == 2 and ref.ndim == 3:
                        ref = ref[..., 0]
                    compare(ours, ref, scale, f"--service {ch}ch {depth}-bit tile {tile}")
    finally:
        svc.kill()
        svc.wait()
    # Nothing listens there any more: exit 1 with a reason, nothing written.
    out = os.path.join(TMP, "dead.png")
    p = hc("upscale", inp, out, "--service", url, "-q", check=False)
    if p.returncode != 1 or os.path.exists(out) or len(p.stderr.strip().splitlines()) != 1:
        fail(f"dead service: exit {p.returncode}, stderr {p.stderr!r}")
    print(f"ok dead service: {p.stderr.strip()}")


def free_port():
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def metric(url, name, token=None):
    import urllib.request
    req = urllib.request.Request(url + "/metrics")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    upstream hc_gpu {{
        server {a};
        server {b};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 256m;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 300s;
        proxy_next_upstream error timeout http_429 http_503 non_idempotent;
        location / {{
            proxy_pass http://hc_gpu;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def t_nginx():
    """A real nginx balancing two token-protected services, configured as gpu_service/README.md
    shows (upstream with keepalive, unbuffered bodies, next-upstream on 429/503)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        print("skip: nginx missing (apt-get install nginx-light)", file=sys.stderr)
        sys.exit(77)
    token = os.path.join(TMP, "token")
    with open(token, "w") as f:
        f.write("s3cret-token-for-the-test\n")
    os.chmod(token, 0o600)
    procs = []
    try:
        a, url_a = start_service("--token-file", token)
        procs.append(a)
        b, url_b = start_service("--token-file", token)
        procs.append(b)
        import time
        import urllib.request
        # free_port() can race another test for the port: when nginx cannot bind (it exits),
        # try again on another one.
        for attempt in range(5):
            port = free_port()
            conf = os.path.join(TMP, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=TMP, a=url_a[len("http://"):],
                                          b=url_b[len("http://"):], port=port))
            ng = subprocess.Popen([nginx, "-c", conf, "-p", TMP], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            procs.append(ng)
            up = False
            for _ in range(200):
                if ng.poll() is not None:
                    break
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    up = True
                    break
                except Exception:
                    time.sleep(0.05)
            if up:
                break
        else:
            fail("nginx did not come up: " + open(os.path.join(TMP, "nginx-error.log")).read())
        rng = np.random.default_rng(8)
        src = random_image(rng, 300, 420, 3, 8)
        inp = os.path.join(TMP, "ng.png")
        save_png(src, inp)
        local, remote = os.path.join(TMP, "ng_local.png"), os.path.join(TMP, "ng_remote.png")
        hc("upscale", inp, local, "-q")
        hc("upscale", inp, remote, "--tile", 64, "--service", f"http://127.0.0.1:{port}",
           "--token-file", token, "-q")
        if open(local, "rb").read() != open(remote, "rb").read():
            fail("through nginx: bytes differ from the in-process run; nginx log: " +
                 open(os.path.join(TMP, "nginx-error.log")).read())
        secret = open(token).read().strip()
        ta, tb = metric(url_a, "hc_tiles_total", secret), metric(url_b, "hc_tiles_total", secret)
        if ta <= 0 or tb <= 0:
            fail(f"nginx did not spread the work: service A {ta} tiles, B {tb}")
        # Without the token the services refuse, through nginx too: exit 1, a clear reason.
        p = hc("upscale", inp, remote + ".x.png", "--service", f"http://127.0.0.1:{port}", "-q",
               check=False)
        if p.returncode != 1 or "401" not in p.stderr:
            fail(f"no token through nginx: exit {p.returncode}, {p.stderr!r}")
        print(f"ok nginx balanced {int(ta)} + {int(tb)} tiles over two services, same bytes; "
              "401 without the token")
    finally:
        for pr in procs:
            pr.kill()
            pr.wait()


TESTS = {
    "nginx": t_nginx,
    "service": t_service,
    "interrupt": t_interrupt,
    "opencv_random": t_opencv_random,
    "opencv_photos": t_opencv_photos,
    "tiled_equals_untiled": t_tiled_equals_untiled,
    "split_stitch": t_split_stitch,
    "big_tile": t_big_tile,
    "too_many_tiles": t_too_many_tiles,
    "stitch_bad_manifest": t_stitch_bad_manifest,
    "split_reuse_dir": t_split_reuse_dir,
    "threads": t_threads,
    "bad_input": t_bad_input,
    "usage": t_usage,
    "formats_and_meta": t_formats_and_meta,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TESTS:
        print(f"usage: hc_test.py {{{','.join(TESTS)}}}", file=sys.stderr)
        sys.exit(2)
    if not os.access(HC, os.X_OK):
        fail(f"{HC} not built")
    TMP = tempfile.mkdtemp(prefix="hc-test-")
    try:
        TESTS[sys.argv[1]]()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
