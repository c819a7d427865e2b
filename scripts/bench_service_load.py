#!/usr/bin/env python3
"""Load client of scripts/bench-service: PROCS processes, each with one keep-alive HTTP
connection, post the same request (BATCH tiles of TILE x TILE output pixels, RGB u8, x SCALE,
random pixels) to POST /v1/upscale for SECONDS, and report tiles per second. Standard
library only (runs with any python3)."""
import argparse
import http.client
import multiprocessing
import os
import struct
import time


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def span(n, s, o0, olen):
    base = lambda d: int(f32((d + 0.5) * (1.0 / s) - 0.5) // 1)
    a = min(max(base(o0) - 1, 0), n - 1)
    b = min(max(base(o0 + olen - 1) + 2, 0), n - 1)
    return a, b - a + 1


def build(tile, scale, batch, ch):
    img_w = img_h = tile * 8 // scale  # tiles from the inside of a larger image
    descs, pix = [], []
    for i in range(batch):
        ox, oy = (i % 4 + 2) * tile, (i // 4 % 4 + 2) * tile
        ox, oy = ox % (img_w * scale - tile), oy % (img_h * scale - tile)
        sx, sw = span(img_w, scale, ox, tile)
        sy, sh = span(img_h, scale, oy, tile)
        descs.append(struct.pack("<III4i4iBBBB", i, img_w, img_h, ox, oy, tile, tile,
                                 sx, sy, sw, sh, ch, 8, scale, 1))
        pix.append(os.urandom(sw * sh * ch))
    return struct.pack("<IHH", 0x50554348, 1, batch) + b"".join(descs) + b"".join(pix)


def worker(args, body, q):
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
    n = nbytes = errors = 0
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end:
        c.request("POST", "/v1/upscale", body, {"Content-Type": "application/x-hc-tiles"})
        r = c.getresponse()
        data = r.read()
        if r.status == 200:
            n += 1
            nbytes += len(data)
        else:
            errors += 1
    q.put((n, nbytes, errors))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--label", default="")
    args = p.parse_args()
    body = build(args.tile, args.scale, args.batch, args.channels)
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=worker, args=(args, body, q)) for _ in range(args.procs)]
    t0 = time.monotonic()
    for x in ps:
        x.start()
    res = [q.get() for _ in ps]
    for x in ps:
        x.join()
    secs = time.monotonic() - t0
    reqs = sum(r[0] for r in res)
    print("%s: %d clients, %d tiles of %dx%d RGB u8 x%d per request: %.1f tiles/s, "
          "%.1f requests/s, %.1f MB/s answered, %d errors, %.1f s" %
          (args.label, args.procs, args.batch, args.tile, args.tile, args.scale,
           reqs * args.batch / secs, reqs / secs, sum(r[1] for r in res) / secs / 1e6,
           sum(r[2] for r in res), secs))


if __name__ == "__main__":
    main()
