#!/usr/bin/python3
"""Integration tests of hc-gpu-service over real HTTP on 127.0.0.1:0 (issue 3).

Usage: service_http.py NAME   (NAME: correct, opencv, encodings, badreq, lying, slow,
overload, token, drain). Each test starts its own service with the CPU backend, reads the
port it prints, and kills it at the end, even on failure.

References are independent of the service's code path: tiles are compared with
tests/service_ref (core's scalar hc_bicubic_resize_ref, not the fast path the service runs),
stitched images with OpenCV's cv2.resize(INTER_CUBIC). Requests are built here in Python
from the format in gpu_service/PROTOCOL.md, not with core/wire.c.
"""
import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

BUILD = os.environ.get("HC_BUILD_DIR", "build")
SERVICE = os.path.join(BUILD, "bin", "hc-gpu-service")
REF = os.path.join(BUILD, "tests", "service_ref")
MAGIC_REQ, MAGIC_RES = 0x50554348, 0x53524348
TMP = tempfile.mkdtemp(prefix="hc-service-test-")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


# ---- the service ------------------------------------------------------------------------

class Service:
    def __init__(self, *args):
        self.log = open(os.path.join(TMP, "service-%d.log" % time.monotonic_ns()), "w+")
        self.proc = subprocess.Popen(
            [SERVICE, "--listen", "127.0.0.1:0", "--backend", "cpu"] + list(args),
            stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            fail("service did not print its port: %r; log:\n%s" % (line, self.logtext()))
        self.port = int(line)

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM (the service drains and exits 0, which lets sanitizer builds report),
        SIGKILL if it hangs. A sanitizer report in the log fails the test."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                fail("service did not stop within 20 s of SIGTERM")
        log = self.logtext()
        if "Sanitizer" in log or "runtime error:" in log:
            fail("sanitizer report in the service log:\n" + log[-3000:])

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def healthy(self):
        st, _, body = self.request("GET", "/healthz")
        check(st == 200 and b"ok" in body, "/healthz answered %d %r" % (st, body))

    def metric(self, name):
        st, _, body = self.request("GET", "/metrics")
        check(st == 200, "/metrics answered %d" % st)
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        fail("metric %s missing" % name)


SERVICES = []


def start(*args):
    s = Service(*args)
    SERVICES.append(s)
    return s


# ---- the wire format, written from PROTOCOL.md -----------------------------------------

def tap_base(d, scale):
    """hc_bicubic_map: float32 position of output index d, floor."""
    f = np.float32((d + 0.5) * (1.0 / scale) - 0.5)
    return int(np.floor(f))


def src_span(n, scale, o0, olen):
    a = min(max(tap_base(o0, scale) - 1, 0), n - 1)
    b = min(max(tap_base(o0 + olen - 1, scale) + 2, 0), n - 1)
    return a, b - a + 1


def tile_desc(tid, img_w, img_h, out, scale, ch, depth):
    sx, sw = src_span(img_w, scale, out[0], out[2])
    sy, sh = src_span(img_h, scale, out[1], out[3])
    return dict(id=tid, image_w=img_w, image_h=img_h, out=tuple(out), src=(sx, sy, sw, sh),
                channels=ch, depth=depth, scale=scale, filter=1)


def pack_desc(t):
    return struct.pack("<III4i4iBBBB", t["id"], t["image_w"], t["image_h"], *t["out"],
                       *t["src"], t["channels"], t["depth"], t["scale"], t["filter"])


def message(tiles, pixels, magic=MAGIC_REQ, version=1, count=None):
    head = struct.pack("<IHH", magic, version, len(tiles) if count is None else count)
    return head + b"".join(pack_desc(t) for t in tiles) + b"".join(pixels)


def crop(img, t):
    x, y, w, h = t["src"]
    a = np.ascontiguousarray(img[y:y + h, x:x + w])
    return a.astype("<u2").tobytes() if t["depth"] == 16 else a.tobytes()


def parse_answer(body, tiles):
    magic, version, n = struct.unpack_from("<IHH", body, 0)
    check(magic == MAGIC_RES and version == 1 and n == len(tiles),
          "answer header %x %d %d" % (magic, version, n))
    off = 8
    for t in tiles:
        check(body[off:off + 48] == pack_desc(t), "answer descriptor of tile %d differs" % t["id"])
        off += 48
    outs = []
    for t in tiles:
        _, _, w, h = t["out"]
        dt = np.dtype("<u2") if t["depth"] == 16 else np.uint8
        nb = w * h * t["channels"] * (t["depth"] // 8)
        outs.append(np.frombuffer(body[off:off + nb], dtype=dt).reshape(h, w, t["channels"]))
        off += nb
    check(off == len(body), "answer is %d bytes, descriptors say %d" % (len(body), off))
    return outs


def random_image(rng, w, h, ch, depth):
    hi = 65536 if depth == 16 else 256
    return rng.integers(0, hi, size=(h, w, ch), dtype=np.uint16 if depth == 16 else np.uint8)


def grid(ow, oh, tile):
    for y in range(0, oh, tile):
        for x in range(0, ow, tile):
            yield (x, y, min(tile, ow - x), min(tile, oh - y))


def upscale(svc, tiles, pixels, headers=None):
    st, hdrs, body = svc.request("POST", "/v1/upscale", message(tiles, pixels),
                                 dict({"Content-Type": "application/x-hc-tiles"}, **(headers or {})))
    check(st == 200, "upscale answered %d: %r" % (st, body[:300]))
    return body


# ---- tests ------------------------------------------------------------------------------

def t_correct():
    """Random tiles of odd sizes, every layout, scales 1..8, in batches: byte-equal to the
    answer core's scalar reference computes."""
    svc = start("--jobs", "2")
    rng = np.random.default_rng(1234)
    req_path, exp_path = os.path.join(TMP, "req.bin"), os.path.join(TMP, "exp.bin")
    for batch in range(12):
        tiles, pixels = [], []
        for k in range(int(rng.integers(1, 7))):
            ch, depth = int(rng.integers(1, 5)), int(rng.choice([8, 16]))
            scale = int(rng.integers(1, 9))
            w, h = int(rng.integers(1, 40)), int(rng.integers(1, 40))
            ow, oh = w * scale, h * scale
            tw, th = int(rng.integers(1, ow + 1)), int(rng.integers(1, oh + 1))
            tx, ty = int(rng.integers(0, ow - tw + 1)), int(rng.integers(0, oh - th + 1))
            img = random_image(rng, w, h, ch, depth)
            t = tile_desc(batch * 100 + k, w, h, (tx, ty, tw, th), scale, ch, depth)
            tiles.append(t)
            pixels.append(crop(img, t))
        msg = message(tiles, pixels)
        with open(req_path, "wb") as f:
            f.write(msg)
        subprocess.run([REF, req_path, exp_path], check=True)
        with open(exp_path, "rb") as f:
            expected = f.read()
        got = upscale(svc, tiles, pixels)
        parse_answer(got, tiles)
        check(got == expected, "batch %d: answer differs from the scalar reference" % batch)
    svc.healthy()
    check(svc.metric("hc_tiles_total") > 12, "hc_tiles_total did not count the tiles")


def t_opencv():
    """Whole images tiled, sent as one batch, stitched: equal to cv2.resize INTER_CUBIC."""
    import cv2
    svc = start()
    rng = np.random.default_rng(99)
    cases = [(131, 77, 3, 8, 2, 48), (64, 50, 4, 8, 4, 37), (97, 61, 1, 8, 3, 40),
             (45, 33, 3, 16, 2, 29), (40, 41, 2, 8, 5, 64), (30, 20, 3, 8, 8, 50)]
    for (w, h, ch, depth, scale, tile) in cases:
        img = random_image(rng, w, h, ch, depth)
        if ch == 3 and depth == 8 and scale == 2:
            # a real photo too, where the distribution of values is not uniform noise
            photo = cv2.imread("/usr/share/backgrounds/mate/nature/Garden.jpg")
            if photo is not None:
                img = np.ascontiguousarray(photo[200:200 + h, 300:300 + w])
        ow, oh = w * scale, h * scale
        tiles = [tile_desc(i, w, h, r, scale, ch, depth) for i, r in enumerate(grid(ow, oh, tile))]
        outs = parse_answer(upscale(svc, tiles, [crop(img, t) for t in tiles]), tiles)
        stitched = np.zeros((oh, ow, ch), dtype=img.dtype)
        for t, o in zip(tiles, outs):
            x, y, tw, th = t["out"]
            stitched[y:y + th, x:x + tw] = o
        ref = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_CUBIC)
        ref = ref.reshape(oh, ow, ch)
        diff = np.abs(stitched.astype(np.int64) - ref.astype(np.int64))
        check(diff.max() == 0, "%dx%d ch%d %d-bit x%d tile %d: max diff %d vs OpenCV at %s" %
              (w, h, ch, depth, scale, tile, diff.max(),
               np.unravel_index(np.argmax(diff), diff.shape)))
    svc.healthy()


def t_encodings():
    """lz4 and zstd request bodies (made by the lz4/zstd programs) and answers."""
    import shutil
    svc = start()
    rng = np.random.default_rng(7)
    img = random_image(rng, 50, 30, 3, 8)
    tiles = [tile_desc(i, 50, 30, r, 2, 3, 8) for i, r in enumerate(grid(100, 60, 32))]
    msg = message(tiles, [crop(img, t) for t in tiles])
    plain = upscale(svc, tiles, [crop(img, t) for t in tiles])
    raw_path = os.path.join(TMP, "enc.bin")
    with open(raw_path, "wb") as f:
        f.write(msg)
    for enc, tool in (("lz4", ["lz4", "-q", "-c"]), ("zstd", ["zstd", "-q", "-c"])):
        if not shutil.which(tool[0]):
            fail("%s program missing (scripts/setup installs it)" % tool[0])
        comp = subprocess.run(tool + [raw_path], check=True, stdout=subprocess.PIPE).stdout
        st, hdrs, body = svc.request("POST", "/v1/upscale", comp,
                                     {"Content-Encoding": enc, "Accept-Encoding": enc})
        check(st == 200, "%s request answered %d %r" % (enc, st, body[:200]))
        check(hdrs.get("Content-Encoding") == enc, "%s: answer not encoded: %r" % (enc, hdrs))
        dec = subprocess.run([tool[0], "-q", "-d", "-c"], input=body, check=True,
                             stdout=subprocess.PIPE).stdout
        check(dec == plain, "%s answer differs from the raw answer" % enc)
        # corrupt data is a 400, not a crash
        st, _, body = svc.request("POST", "/v1/upscale", comp[:len(comp) // 2] + b"\0" * 9,
                                  {"Content-Encoding": enc})
        check(st == 400 and b"error" in body, "corrupt %s answered %d" % (enc, st))
    # a bomb: 64 MiB of zeros in a tiny zstd frame, with --max-body 4 MiB
    svc2 = start("--max-body", str(4 << 20))
    bomb = subprocess.run(["zstd", "-q", "-c", "-19"], input=b"\0" * (64 << 20), check=True,
                          stdout=subprocess.PIPE).stdout
    st, _, body = svc2.request("POST", "/v1/upscale", bomb, {"Content-Encoding": "zstd"})
    check(st == 413, "zstd bomb answered %d %r" % (st, body))
    st, _, body = svc.request("POST", "/v1/upscale", msg, {"Content-Encoding": "gzip"})
    check(st == 415, "gzip answered %d" % st)
    svc.healthy()
    svc2.healthy()


def expect(svc, body, status, what, headers=None):
    st, hdrs, resp = svc.request("POST", "/v1/upscale", body, headers)
    check(st == status, "%s: answered %d, expected %d: %r" % (what, st, status, resp[:200]))
    if st != 200:
        check(resp.startswith(b'{"error":"') and b'"detail":"' in resp,
              "%s: not a JSON error: %r" % (what, resp[:200]))
        check(hdrs.get("Content-Type") == "application/json", "%s: content type %r" %
              (what, hdrs.get("Content-Type")))
    return hdrs, resp


def t_badreq():
    """Every malformed request gets its 4xx, and the service keeps serving."""
    svc = start("--max-body", str(1 << 20), "--max-tiles", "8", "--max-tile-pixels", "10000")
    rng = np.random.default_rng(3)
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    good = message([t], [crop(img, t)])
    expect(svc, good, 200, "good request")
    expect(svc, good[:5], 400, "truncated header")
    expect(svc, good[:8 + 20], 400, "truncated descriptor")
    expect(svc, struct.pack("<I", 0x58585858) + good[4:], 400, "wrong magic")
    expect(svc, struct.pack("<I", MAGIC_RES) + good[4:], 400, "answer magic in a request")
    expect(svc, good[:4] + struct.pack("<H", 2) + good[6:], 400, "wrong version")
    expect(svc, good[:-1], 400, "body one byte short")
    expect(svc, good + b"x", 400, "body one byte long")
    expect(svc, good[:6] + struct.pack("<H", 0) + good[8:], 400, "zero tiles")
    expect(svc, good[:6] + struct.pack("<H", 2) + good[8:], 400, "count past the descriptors")
    for field, value, what in (("out", (0, 0, 0, 20), "zero-width tile"),
                               ("out", (0, 0, 40, 0), "zero-height tile"),
                               ("out", (30, 0, 40, 20), "tile outside the output"),
                               ("src", (1, 0, 19, 10), "source rect not the padded rect"),
                               ("channels", 5, "5 channels"), ("channels", 0, "0 channels"),
                               ("depth", 12, "depth 12"), ("filter", 9, "unknown filter"),
                               ("image_w", 0, "zero image width"),
                               ("scale", 0, "scale 0"), ("scale", 99, "scale 99"),
                               ("scale", 9, "scale 9")):
        bad = dict(t)
        bad[field] = value
        _, resp = expect(svc, message([bad], [crop(img, t)]), 400, what)
    _, resp = expect(svc, message([dict(t, scale=99)], [crop(img, t)]), 400, "scale 99")
    check(b"scale" in resp, "scale 99: detail does not name the scale: %r" % resp)
    # 9 tiles with --max-tiles 8
    expect(svc, message([t] * 9, [crop(img, t)] * 9), 413, "too many tiles")
    # a tile of 110x100 output pixels with --max-tile-pixels 10000
    big = tile_desc(2, 55, 50, (0, 0, 110, 100), 2, 1, 8)
    expect(svc, message([big], [crop(random_image(rng, 55, 50, 1, 8), big)]), 422,
           "tile over --max-tile-pixels")
    # body past the limit: decided from Content-Length before the body is sent
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
    s.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20))
    resp = s.recv(4096)
    s.close()
    check(resp.startswith(b"HTTP/1.1 413"), "Content-Length past --max-body: %r" % resp[:100])
    # same, chunked (no Content-Length): cut off while streaming
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
    s.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
    cut = False
    try:
        for _ in range(40):  # 2.5 MiB, past the 1 MiB limit
            s.sendall(chunk)
        resp = s.recv(4096)
        cut = resp == b"" or not resp.startswith(b"HTTP/1.1 200")
    except (ConnectionResetError, BrokenPipeError):
        cut = True
    s.close()
    check(cut, "chunked body past --max-body was not cut off")
    # other endpoints
    st, _, _ = svc.request("GET", "/v1/upscale")
    check(st == 405, "GET /v1/upscale answered %d" % st)
    st, _, _ = svc.request("GET", "/nowhere")
    check(st == 404, "GET /nowhere answered %d" % st)
    st, _, _ = svc.request("DELETE", "/healthz")
    check(st == 405, "DELETE /healthz answered %d" % st)
    # a path that decodes to a newline must not write a line of its own into the log
    st, _, _ = svc.request("GET", "/x%0Ainfo%20http:%20POST%20/v1/upscale%20200%20forged")
    check(st == 404, "GET of a path with %%0A answered %d" % st)
    svc.healthy()
    check(not any(line.startswith("info http: POST /v1/upscale 200 forged")
                  for line in svc.logtext().splitlines()), "a client forged a log line")
    expect(svc, good, 200, "good request after the bad ones")
    check(svc.metric('hc_requests_total{code="400"}') >= 20, "400s not counted")
    check(svc.metric('hc_errors_total{kind="too_large"}') >= 2, "413s not counted")


def raw(svc, data, shut_wr=False, timeout=15):
    """Sends bytes on a fresh connection; returns (answer bytes, seconds until closed)."""
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=timeout)
    t0 = time.monotonic()
    s.sendall(data)
    if shut_wr:
        s.shutdown(socket.SHUT_WR)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return got, time.monotonic() - t0


def two_answers(svc, data, what):
    """Sends two requests on one fresh connection and reads until both answers are in
    (the second, JSON, ends with '}') or the service closes; a reset fails the test."""
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=20)
    got = b""
    try:
        s.sendall(data)
        while got.count(b"HTTP/1.1 ") < 2 or not got.rstrip().endswith(b"}"):
            b = s.recv(65536)
            if not b:
                break
            got += b
    except (ConnectionResetError, BrokenPipeError) as e:
        fail("%s: connection reset (%s) instead of an answer" % (what, e))
    finally:
        s.close()
    return got


def t_lying():
    """Content-Length that lies, both ways: a 4xx or a cut connection, never a hang."""
    svc = start("--conn-timeout", "2", "--request-timeout", "4")
    rng = np.random.default_rng(5)
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    good = message([t], [crop(img, t)])
    head = b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    # claims less than it sends: the claimed bytes are a short message (400); the rest is
    # garbage where the next request should start
    got, secs = raw(svc, head % 100 + good, shut_wr=True)
    check(got.startswith(b"HTTP/1.1 400"), "short Content-Length: %r" % got[:100])
    # claims more than it sends, then closes its side: no answer is possible, no hang
    got, secs = raw(svc, head % (len(good) + 500) + good, shut_wr=True)
    check(secs < 8 and not got.startswith(b"HTTP/1.1 200"),
          "long Content-Length then EOF: %r after %.1fs" % (got[:100], secs))
    # claims more and keeps the connection open: cut by the idle timeout
    got, secs = raw(svc, head % (len(good) + 500) + good)
    check(got == b"" or got.startswith(b"HTTP/1.1 4") or got.startswith(b"HTTP/1.1 5"),
          "long Content-Length, open: %r" % got[:100])
    check(1.5 < secs < 8, "long Content-Length, open: cut after %.1fs (conn-timeout 2)" % secs)
    # a huge claim within no limit: 413 at once
    got, secs = raw(svc, head % (1 << 40), shut_wr=True)
    check(got.startswith(b"HTTP/1.1 413"), "2^40 Content-Length: %r" % got[:100])
    got, secs = raw(svc, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    shut_wr=True)
    check(got.startswith(b"HTTP/1.1 4"), "negative Content-Length: %r" % got[:100])
    # two Content-Lengths that disagree: which one frames the body is ambiguous (a proxy
    # that takes the other one would see a different next request), so 400 (RFC 9112 6.3)
    got, secs = raw(svc, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"Content-Length: 5\r\n\r\n" % len(good) + good, shut_wr=True)
    check(got.startswith(b"HTTP/1.1 400") and b"HTTP/1.1 200" not in got,
          "two different Content-Lengths: %r" % got[:100])
    svc.healthy()
    expect(svc, good, 200, "good request after the lies")


def t_slow():
    """A client sending one byte a second never looks idle; the request timeout cuts it."""
    svc = start("--conn-timeout", "2", "--request-timeout", "3")
    rng = np.random.default_rng(6)
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    good = message([t], [crop(img, t)])
    full = b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(good) + good
    for what, prefix in (("headers", b""), ("body", full[:full.index(b"\r\n\r\n") + 4])):
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=20)
        t0 = time.monotonic()
        s.sendall(prefix)
        sent, cut = len(prefix), False
        while time.monotonic() - t0 < 12:
            try:
                s.sendall(full[sent:sent + 1])
                sent += 1
                s.settimeout(1.0)
                b = s.recv(4096)
                if b == b"" or b.startswith(b"HTTP/1.1 4") or b.startswith(b"HTTP/1.1 5"):
                    cut = True
                    break
                fail("slow %s: unexpected answer %r" % (what, b[:100]))
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                cut = True
                break
        secs = time.monotonic() - t0
        s.close()
        check(cut, "slow %s: not cut off after %.1fs (%d bytes sent)" % (what, secs, sent))
        check(2.5 < secs < 8, "slow %s: cut after %.1fs, request timeout is 3" % (what, secs))
        check(sent < len(full), "slow %s: the whole request went through" % what)
        svc.healthy()
    expect(svc, good, 200, "good request after the slow clients")


def big_job(rng):
    """A batch that keeps one CPU thread busy for a while."""
    img = random_image(rng, 300, 300, 4, 16)
    tiles = [tile_desc(i, 300, 300, r, 8, 4, 16) for i, r in enumerate(grid(2400, 2400, 600))]
    return message(tiles, [crop(img, t) for t in tiles])


def wait_metric(svc, name, value, secs=20):
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        if svc.metric(name) == value:
            return
        time.sleep(0.02)
    fail("%s did not reach %g" % (name, value))


def running_job(svc, body):
    """Posts body from a thread and returns once the service runs it as a job; join() the
    thread returned, then result["first"] is the answer's status."""
    import threading
    result = {}

    def run():
        result["first"] = svc.request("POST", "/v1/upscale", body, timeout=120)[0]

    th = threading.Thread(target=run)
    th.start()
    wait_metric(svc, "hc_jobs_running", 1)
    return th, result


def t_overload():
    """--jobs 1 --queue 0: while one job runs, a second request gets 429 + Retry-After, and
    /healthz and /metrics still answer at once."""
    import threading
    svc = start("--jobs", "1", "--queue", "0", "--cpu-threads", "1")
    rng = np.random.default_rng(8)
    body = big_job(rng)
    th, result = running_job(svc, body)
    t0 = time.monotonic()
    svc.healthy()
    check(time.monotonic() - t0 < 1.0, "/healthz slow while a job runs")
    hdrs, resp = expect(svc, body, 429, "second request while the only worker is busy")
    check(hdrs.get("Retry-After") == "1", "429 without Retry-After: %r" % hdrs)
    th.join()
    check(result.get("first") == 200, "the running job answered %r" % result.get("first"))
    check(svc.metric('hc_requests_total{code="429"}') == 1, "429 not counted")
    # with a queue of 1 the second one waits instead
    svc2 = start("--jobs", "1", "--queue", "1", "--cpu-threads", "1")
    results = []
    ths = [threading.Thread(target=lambda: results.append(
        svc2.request("POST", "/v1/upscale", body, timeout=120)[0])) for _ in range(2)]
    ths[0].start()
    wait_metric(svc2, "hc_jobs_running", 1)
    ths[1].start()
    wait_metric(svc2, "hc_queue_depth", 1)
    expect(svc2, body, 429, "third request with one running and one queued")
    for th in ths:
        th.join()
    check(results == [200, 200], "queued requests answered %r" % results)


def t_memory():
    """--max-memory: while a job holds most of the budget (its answer is 46 MB), a second
    such request gets 429 with the reason, a small one still passes, and once the first is
    answered the budget is free again (hc_memory_bytes back to 0)."""
    budget = 64 << 20
    svc = start("--jobs", "1", "--queue", "4", "--cpu-threads", "1", "--max-memory", str(budget))
    check(svc.metric("hc_memory_limit_bytes") == budget, "hc_memory_limit_bytes")
    rng = np.random.default_rng(12)
    body = big_job(rng)
    th, result = running_job(svc, body)
    held = svc.metric("hc_memory_bytes")
    check(40e6 < held <= budget, "memory held by the running job: %g" % held)
    st, _, resp = svc.request("POST", "/v1/upscale", body, timeout=60)
    check(st == 429 and b"--max-memory" in resp, "second big request: %d %r" % (st, resp[:200]))
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    st, _, _ = svc.request("POST", "/v1/upscale", message([t], [crop(img, t)]), timeout=120)
    check(st == 200, "small request while the budget is mostly taken: %d" % st)
    th.join()
    check(result.get("first") == 200, "the running job answered %r" % result.get("first"))
    wait_metric(svc, "hc_memory_bytes", 0)
    st, _, _ = svc.request("POST", "/v1/upscale", body, timeout=120)
    check(st == 200, "the big request once the budget is free: %d" % st)
    wait_metric(svc, "hc_memory_bytes", 0)
    svc.healthy()
    # a request larger than the whole budget can never fit: 413 (clients split on it)
    small = start("--max-memory", str(8 << 20))
    st, _, resp = small.request("POST", "/v1/upscale", body, timeout=60)
    check(st == 413 and b"whole memory budget" in resp, "request over the budget: %d %r"
          % (st, resp[:200]))
    # ... counting what it holds already: a 2.2 MB body with an 8.7 MB answer against 10 MB
    # on an idle service is 413 too, not a 429 that retrying could never turn into a 200
    ten = start("--max-memory", "10000000")
    big = random_image(rng, 1700, 1700, 3, 8)
    t = tile_desc(1, 1700, 1700, (0, 0, 3400, 3400), 2, 3, 8)
    st, _, resp = ten.request("POST", "/v1/upscale", message([t], [crop(big, t)]), timeout=60)
    check(st == 413 and b"whole memory budget" in resp, "body + answer over the budget: %d %r"
          % (st, resp[:200]))
    wait_metric(ten, "hc_memory_bytes", 0)  # given back when the request completes
    small.healthy()


def t_token():
    svc = None
    tok = os.path.join(TMP, "token")
    with open(tok, "w") as f:
        f.write("s3cret-token-for-tests-0123456789\n")
    svc = start("--token-file", tok)
    rng = np.random.default_rng(9)
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    good = message([t], [crop(img, t)])
    expect(svc, good, 401, "no token")
    expect(svc, good, 401, "wrong token", {"Authorization": "Bearer s3cret-token-for-tests-012345678X"})
    expect(svc, good, 401, "prefix of the token", {"Authorization": "Bearer s3cret"})
    expect(svc, good, 200, "right token",
           {"Authorization": "Bearer s3cret-token-for-tests-0123456789"})
    st, _, _ = svc.request("GET", "/metrics")
    check(st == 401, "/metrics without token answered %d" % st)
    # A refused client that sends its whole body before reading (as nginx does, unbuffered)
    # reads the 401, not a reset, and can go on on the same connection: the service drains
    # the body instead of closing on unread bytes (which made nginx answer 502).
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    big = bytes(8 << 20)
    for i in range(3):
        head = ("POST /v1/upscale HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                "Content-Length: %d\r\n\r\n" % len(big)).encode()
        got = two_answers(svc, head + big + healthz, "refused 8 MiB body")
        check(got.startswith(b"HTTP/1.1 401") and b"HTTP/1.1 200" in got,
              "refused 8 MiB body, then /healthz on the same connection: %r" % got[:300])
    # ... an empty body likewise keeps the connection for the next request
    got = two_answers(svc, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                      + healthz, "empty body")
    check(got.startswith(b"HTTP/1.1 401") and b"HTTP/1.1 200" in got,
          "empty body refused, then /healthz on the same connection: %r" % got[:300])
    # Two Content-Lengths that disagree are refused and the connection closed before the
    # token is looked at: no refusal reads a body by a framing a proxy may not share.
    got, _ = raw(svc, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer no\r\n"
                      b"Content-Length: 5\r\nContent-Length: 44\r\n\r\nhello"
                      b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 400") and got.count(b"HTTP/1.1 ") == 1,
          "disagreeing Content-Lengths with a wrong token: %r" % got[:300])
    svc.healthy()  # probes need no token
    # a public address without a token is refused; with --insecure-public it starts
    p = subprocess.run([SERVICE, "--listen", "0.0.0.0:0", "--backend", "cpu"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    check(p.returncode != 0 and b"token" in p.stderr,
          "public bind without token: rc %d %r" % (p.returncode, p.stderr[-300:]))
    p = subprocess.run([SERVICE, "--help"], stdout=subprocess.PIPE, timeout=20)
    check(p.returncode == 0 and b"--listen" in p.stdout, "--help")
    p = subprocess.run([SERVICE, "--version"], stdout=subprocess.PIPE, timeout=20)
    check(p.returncode == 0 and p.stdout.startswith(b"hc-gpu-service "), "--version")
    p = subprocess.run([SERVICE, "--jobs", "zero"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    check(p.returncode == 2, "bad --jobs value accepted")


def t_drain():
    """SIGTERM while a job runs: the job is answered, then the process exits 0."""
    import threading
    svc = start("--jobs", "1", "--cpu-threads", "1")
    rng = np.random.default_rng(10)
    body = big_job(rng)
    result = {}

    def run():
        st, _, resp = svc.request("POST", "/v1/upscale", body, timeout=120)
        result["status"], result["len"] = st, len(resp)

    th = threading.Thread(target=run)
    th.start()
    wait_metric(svc, "hc_jobs_running", 1)
    svc.proc.send_signal(signal.SIGTERM)
    th.join()
    rc = svc.proc.wait(timeout=60)
    check(result.get("status") == 200, "job in flight during SIGTERM answered %r" % result)
    check(rc == 0, "exit status %d after SIGTERM; log:\n%s" % (rc, svc.logtext()))
    log = svc.logtext()
    check("draining" in log and "POST /v1/upscale 200" in log, "log lacks drain/request lines")


def t_drain_inflight():
    """SIGTERM while an answer is still on its way to a slow reader, and while a body is
    still arriving: both requests are answered in full before the process exits 0."""
    svc = start("--jobs", "1", "--cpu-threads", "1")
    rng = np.random.default_rng(11)
    img = random_image(rng, 600, 600, 3, 8)
    t = tile_desc(1, 600, 600, (0, 0, 1200, 1200), 2, 3, 8)
    body = message([t], [crop(img, t)])
    head = (b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    want = 8 + 48 + 1200 * 1200 * 3

    def connect():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # keeps the answer in the service
        s.settimeout(30)
        s.connect(("127.0.0.1", svc.port))
        return s

    def read_answer(s, got):
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            got += b
        s.close()
        end = got.find(b"\r\n\r\n")
        return got[:12], len(got) - end - 4 if end >= 0 else -1

    reader = connect()
    reader.sendall(head + body)
    first = reader.recv(16)  # the job is done, its answer is being sent
    check(first.startswith(b"HTTP/1.1 200"), "slow reader: %r" % first)
    uploader = connect()
    uploader.sendall(head + body[:len(body) // 2])
    time.sleep(0.3)
    svc.proc.send_signal(signal.SIGTERM)
    time.sleep(2.0)  # longer than the service's own pause after its jobs are done
    uploader.sendall(body[len(body) // 2:])
    status, n = read_answer(uploader, b"")
    check(status == b"HTTP/1.1 200" and n == want,
          "body arriving during SIGTERM: %r, %d of %d answer bytes" % (status, n, want))
    status, n = read_answer(reader, first)
    check(status == b"HTTP/1.1 200" and n == want,
          "answer read slowly during SIGTERM: %r, %d of %d bytes" % (status, n, want))
    rc = svc.proc.wait(timeout=60)
    check(rc == 0, "exit status %d after SIGTERM; log:\n%s" % (rc, svc.logtext()))


def t_drain_refused():
    """SIGTERM while a job runs; then, on a connection opened before, a request arrives whose
    body trickles in: it is refused (503, draining) once its body has been read, and the
    process waits for that answer before it exits 0 (no reset instead of the 503)."""
    svc = start("--jobs", "1", "--cpu-threads", "1")
    rng = np.random.default_rng(13)
    body = big_job(rng)
    late = socket.create_connection(("127.0.0.1", svc.port), timeout=30)
    th, result = running_job(svc, body)
    svc.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()  # the request must arrive once the service drains, not before
    while "draining (up to" not in svc.logtext() and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    time.sleep(0.3)
    n = 1 << 20
    late.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    got = b""
    try:
        for i in range(8):  # ~3 s: past the running job's end and the service's pause
            late.sendall(bytes(n // 8))
            time.sleep(0.4)
        while b"\r\n\r\n" not in got:
            b = late.recv(65536)
            if not b:
                break
            got += b
    except (ConnectionResetError, BrokenPipeError) as e:
        fail("request refused while draining: %s instead of a 503" % e)
    late.close()
    check(got.startswith(b"HTTP/1.1 503"), "request during the drain: %r" % got[:200])
    th.join()
    check(result.get("first") == 200, "the running job answered %r" % result.get("first"))
    rc = svc.proc.wait(timeout=60)
    check(rc == 0, "exit status %d after SIGTERM; log:\n%s" % (rc, svc.logtext()))


def t_keepalive_timeout():
    """The request timeout of a request on a kept-alive connection starts with that request,
    not with the idle wait before it: a body that takes most of --request-timeout after an
    idle time shorter than --conn-timeout is answered."""
    svc = start("--conn-timeout", "3", "--request-timeout", "4")
    rng = np.random.default_rng(12)
    img = random_image(rng, 20, 10, 3, 8)
    t = tile_desc(1, 20, 10, (0, 0, 40, 20), 2, 3, 8)
    good = message([t], [crop(img, t)])
    head = b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(good)
    want = 8 + 48 + 40 * 20 * 3
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=20)

    def answer():
        got = b""
        while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < want:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                b = b""
            if not b:
                break
            got += b
        return got

    s.sendall(head + good)
    got = answer()
    check(got.startswith(b"HTTP/1.1 200"), "first request: %r" % got[:100])
    time.sleep(2.5)  # idle, within --conn-timeout 3
    t0 = time.monotonic()
    try:
        s.sendall(head)
        step = (len(good) + 4) // 5
        for i in range(0, len(good), step):  # the body over 2.5 s, within --request-timeout 4
            time.sleep(0.5)
            s.sendall(good[i:i + step])
        got = answer()
    except (ConnectionResetError, BrokenPipeError) as e:
        got = repr(e).encode()
    secs = time.monotonic() - t0
    s.close()
    check(got.startswith(b"HTTP/1.1 200") and len(got) - got.index(b"\r\n\r\n") - 4 == want,
          "request after an idle wait: %r after %.1fs" % (got[:100], secs))
    svc.healthy()


def t_drain_timeout():
    """SIGTERM with more queued work than --drain-timeout allows: once the timeout has
    passed, jobs that have not started are given up (503), and the process exits after
    the running one, not after the whole queue."""
    import threading
    svc = start("--jobs", "1", "--cpu-threads", "1", "--drain-timeout", "1")
    rng = np.random.default_rng(13)
    img = random_image(rng, 1000, 1000, 1, 8)
    tiles = [tile_desc(i, 1000, 1000, r, 8, 1, 8) for i, r in enumerate(grid(8000, 8000, 4000))]
    body = message(tiles, [crop(img, t) for t in tiles])
    t0 = time.monotonic()
    upscale(svc, tiles, [crop(img, t) for t in tiles])
    job = time.monotonic() - t0  # one job on this machine now, answer included
    n = 24
    results = []

    def run():
        try:
            st, _, _ = svc.request("POST", "/v1/upscale", body, timeout=120)
            results.append(st)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            results.append(repr(e))

    th = [threading.Thread(target=run) for _ in range(n)]
    for x in th:
        x.start()
    t0 = time.monotonic()
    while svc.metric("hc_queue_depth") < n - 2 and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    check(svc.metric("hc_queue_depth") >= n - 2, "the jobs did not queue up")
    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    svc.proc.wait(timeout=120)
    secs = time.monotonic() - t0
    for x in th:
        x.join()
    print("drain_timeout: one job %.2fs, exit %.2fs after SIGTERM with %d queued; answers %r"
          % (job, secs, n - 1, results), file=sys.stderr)
    check(secs < 1 + 2 * job + 1.5,
          "exit %.1fs after SIGTERM with --drain-timeout 1 (one job takes %.2fs): the queue "
          "was worked off" % (secs, job))
    check("drain" in svc.logtext(), "no drain line in the log")


TESTS = {"correct": t_correct, "opencv": t_opencv, "encodings": t_encodings,
         "badreq": t_badreq, "lying": t_lying, "slow": t_slow, "overload": t_overload,
         "token": t_token, "memory": t_memory, "drain": t_drain,
         "drain_inflight": t_drain_inflight, "drain_refused": t_drain_refused,
         "keepalive_timeout": t_keepalive_timeout,
         "drain_timeout": t_drain_timeout}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in TESTS:
        print("usage: service_http.py " + "|".join(TESTS), file=sys.stderr)
        return 2
    if not os.access(SERVICE, os.X_OK):
        print("skip: %s not built" % SERVICE, file=sys.stderr)
        return 77
    try:
        TESTS[sys.argv[1]]()
    finally:
        for s in SERVICES:
            try:
                s.stop()
            except SystemExit:
                for o in SERVICES:  # leave nothing running, then report
                    if o.proc.poll() is None:
                        os.killpg(o.proc.pid, signal.SIGKILL)
                raise
    print("ok: service " + sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
