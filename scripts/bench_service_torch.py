#!/usr/bin/env python3
"""The peer of the CUDA kernel in scripts/bench-service: torch.nn.functional.interpolate
(mode='bicubic', align_corners=False) on a W x H RGB u8 image (interleaved, as the service
gets it), including the u8 -> float -> u8 conversions and layout changes, timed with CUDA
events (median of ITERS runs). Also reports interpolate alone."""
import statistics
import sys

import torch
import torch.nn.functional as F


def timed(fn, iters):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def main():
    w, h, ch, s = (int(v) for v in sys.argv[1:5])
    iters = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    img = torch.randint(0, 256, (h, w, ch), dtype=torch.uint8, device="cuda")

    def full():
        x = img.permute(2, 0, 1).unsqueeze(0).float()
        y = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8).squeeze(0).permute(1, 2, 0).contiguous()

    xf = img.permute(2, 0, 1).unsqueeze(0).float().contiguous()

    def interp():
        return F.interpolate(xf, scale_factor=s, mode="bicubic", align_corners=False)

    t_full, t_interp = timed(full, iters), timed(interp, iters)
    nbytes = w * h * ch * (1 + s * s)
    print("torch %s on %s: u8->float->interpolate->u8 %.4f ms (%.1f GB/s of u8 in+out); "
          "interpolate alone (float in/out) %.4f ms" %
          (torch.__version__, torch.cuda.get_device_name(0), t_full, nbytes / t_full / 1e6,
           t_interp))


if __name__ == "__main__":
    main()
