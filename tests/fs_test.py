#!/usr/bin/python3
"""fs_test.py CASE: integration tests of hcfs on a real FUSE mount (see tests/fs.cmake).

Every case mounts hcfs in a fresh temporary directory and unmounts it whatever happens
(fs_lib). References: `hc upscale` of the same input (same parameters, no FUSE involved),
OpenCV's cv2.resize INTER_CUBIC for pixels, Pillow and ImageMagick as readers, the service's
/metrics counters (hc_tiles_total, hc_bytes_in_total) for "how many jobs / requests".
"""
import errno
import hashlib
import os
import signal
import stat
import struct
import subprocess
import threading
import time
import zlib

from fs_lib import (HC, Mount, Service, check, fail, hc_upscale, log, make_image,
                    read_with_timeout, run_cases, tmpdir)

ENOATTR = 61  # Linux ENODATA


def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]


def expect_errno(fn, want, what):
    try:
        fn()
    except OSError as e:
        check(e.errno in want, "%s: errno %d (%s), wanted %s" % (what, e.errno, e.strerror, want))
        return
    fail("%s: succeeded, wanted errno %s" % (what, want))


# --------------------------------------------------------------------------- input/

def case_passthrough():
    w = tmpdir("pass")
    m = Mount(w, "noprefetch")
    i = m.input
    # create (O_EXCL), write, read, fsync
    p = os.path.join(i, "a.bin")
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.write(fd, b"hello world" * 1000)
    os.fsync(fd)
    os.close(fd)
    expect_errno(lambda: os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY), (17,), "O_EXCL twice")
    check(open(p, "rb").read() == b"hello world" * 1000, "read back")
    check(open(os.path.join(m.data, "a.bin"), "rb").read() == b"hello world" * 1000,
          "the data directory holds the bytes")
    # pwrite in the middle, truncate (path and fd)
    with open(p, "r+b") as f:
        f.seek(5)
        f.write(b"_")
        f.truncate(100)
    check(open(p, "rb").read() == (b"hello_world" + b"hello world" * 9)[:100], "pwrite+ftruncate")
    os.truncate(p, 10)
    check(os.stat(p).st_size == 10, "truncate(path)")
    # chmod, utimens
    os.chmod(p, 0o600)
    check(stat.S_IMODE(os.stat(p).st_mode) == 0o600, "chmod")
    os.utime(p, ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(p)
    check(st.st_mtime_ns == 2_000_000_456, "utimens mtime %d" % st.st_mtime_ns)
    # subfolders, rename, unlink, rmdir
    os.makedirs(os.path.join(i, "d1", "d2"))
    q = os.path.join(i, "d1", "d2", "b.bin")
    os.rename(p, q)
    check(not os.path.exists(p) and open(q, "rb").read() == b"hello_worl", "rename into a subfolder")
    check(sorted(os.listdir(os.path.join(i, "d1"))) == ["d2"], "listing of a subfolder")
    expect_errno(lambda: os.rmdir(os.path.join(i, "d1", "d2")), (39,), "rmdir of a non-empty dir")
    os.unlink(q)
    os.rmdir(os.path.join(i, "d1", "d2"))
    os.rmdir(os.path.join(i, "d1"))
    check(os.listdir(i) == [], "empty again: %s" % os.listdir(i))
    # statfs
    sv = os.statvfs(i)
    check(sv.f_blocks > 0 and sv.f_bsize > 0, "statfs")
    # xattrs, including names Linux keeps only under user. (com.apple.*), and ENODATA
    x = os.path.join(i, "x.txt")
    open(x, "w").write("x")
    os.setxattr(x, "user.note", b"v1")
    os.setxattr(x, "com.apple.quarantine", b"0081;5f000000;Safari;")
    check(os.getxattr(x, "user.note") == b"v1", "user xattr")
    check(os.getxattr(x, "com.apple.quarantine") == b"0081;5f000000;Safari;", "com.apple xattr")
    names = set(os.listxattr(x))
    check({"user.note", "com.apple.quarantine"} <= names, "listxattr %s" % names)
    expect_errno(lambda: os.getxattr(x, "user.missing"), (ENOATTR,), "missing xattr")
    os.removexattr(x, "com.apple.quarantine")
    expect_errno(lambda: os.getxattr(x, "com.apple.quarantine"), (ENOATTR,), "removed xattr")
    # an unlinked file stays readable through its open descriptor
    with open(x, "rb") as f:
        os.unlink(x)
        check(f.read() == b"x", "read after unlink")
    # nothing can be made beside input/ and upscaled/
    expect_errno(lambda: os.mkdir(os.path.join(m.root, "other")), (13, 1), "mkdir in the root")
    check(sorted(os.listdir(m.root)) == ["input", "upscaled"], "root listing")
    check(m.jobs_run() == 0, "no job ran")
    check(m.unmount() == 0, "clean exit")


# --------------------------------------------------------------------------- upscaled/

def passthrough_expected():
    """Whether hcfs must get FUSE passthrough here: built with libfuse >= 3.16, running as
    root, on a kernel whose configuration says CONFIG_FUSE_PASSTHROUGH=y."""
    import gzip
    import re

    import fs_lib
    r = subprocess.run([fs_lib.HCFS, "--version"], capture_output=True, text=True)
    v = re.search(r"libfuse (\d+)\.(\d+)", r.stdout + r.stderr)
    if not v or (int(v.group(1)), int(v.group(2))) < (3, 16) or os.geteuid() != 0:
        return False
    # registering a backing file needs CAP_SYS_ADMIN (bit 21), which a container may drop
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:") and not int(line.split()[1], 16) & (1 << 21):
            return False
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return "CONFIG_FUSE_PASSTHROUGH=y" in f.read()
    except OSError:
        return False  # configuration unknown


def case_kernel_passthrough():
    """FUSE passthrough (where the kernel and libfuse offer it and hcfs may use it): a done
    output is read by the kernel from the cache file, every open of one path shares one
    backing file, and a new version of an output waits for the old version's last reader:
    the old reader gets the whole old output, the new one the whole new output. Where
    passthrough is not offered or refused, the same reads must go through hcfs instead."""
    w = tmpdir("kpt")
    v1 = make_image(os.path.join(w, "v1.png"), 240, 180, 91)
    v2 = make_image(os.path.join(w, "v2.png"), 200, 160, 92)
    ref1 = hc_upscale(v1, os.path.join(w, "ref1.png"))
    ref2 = hc_upscale(v2, os.path.join(w, "ref2.png"))
    m = Mount(w, "noprefetch")  # the default timeout: a waiting open must not give up early
    lg = m.log()
    on = "FUSE passthrough on" in lg
    log("passthrough: %s" % ("on" if on else "off: " + lg.strip().splitlines()[-1]))
    if passthrough_expected():
        check(on, "hcfs (libfuse >= 3.16, root, a kernel with FUSE passthrough) did not get "
              "passthrough:\n%s" % lg)
    x = os.path.join(m.up, "x.png")
    subprocess.run(["cp", v1, os.path.join(m.input, "x.png")], check=True)
    rc, data, err = read_with_timeout(x, 60)
    check(rc == 0 and data == ref1, "first read: rc %d, %d bytes vs %d %s" %
          (rc, len(data), len(ref1), err))
    if on and "passthrough refused" in m.log():
        check(not passthrough_expected(), "passthrough refused:\n%s" % m.log())
        on = False  # offered, but this process may not use it: reads go through hcfs
        log("passthrough refused: the rest runs without it")
    if on:
        # The kernel reads the cache file itself: with hcfs stopped and the FUSE file's
        # pages dropped, a read still completes (through hcfs it would wait for SIGCONT).
        fd = os.open(x, os.O_RDONLY)
        done = {}

        def stopped_read():
            done["data"] = os.pread(fd, len(ref1) + 1, 0)

        os.kill(m.proc.pid, signal.SIGSTOP)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            t = threading.Thread(target=stopped_read)
            t.start()
            t.join(5)
            check(not t.is_alive(), "a read with hcfs stopped did not finish: not passthrough")
        finally:
            os.kill(m.proc.pid, signal.SIGCONT)
        t.join(30)
        os.close(fd)
        check(done.get("data") == ref1, "the read with hcfs stopped got v1")
    # the output evicted and made again while a reader holds it: same cache key, same
    # bytes, so the new open shares the old registration instead of waiting for the reader
    held = os.open(x, os.O_RDONLY)
    outs = [os.path.join(dp, f) for dp, _, fn in os.walk(os.path.join(m.cache, "out"))
            for f in fn if f.endswith(".png")]
    check(len(outs) == 1, "one cached output: %s" % outs)
    os.remove(outs[0])
    t0 = time.time()
    rc, data, err = read_with_timeout(x, 60)
    check(rc == 0 and data == ref1, "read after eviction: rc %d %s" % (rc, err))
    check(time.time() - t0 < 20, "the recomputed output did not wait for the old reader")
    check(os.pread(held, len(ref1) + 1, 0) == ref1, "the old reader still reads v1")
    os.close(held)
    # several opens at once share the backing file (a second one would be refused: EBUSY)
    fds = [os.open(x, os.O_RDONLY) for _ in range(4)]
    for fd in fds:
        check(os.pread(fd, len(ref1) + 1, 0) == ref1, "concurrent open reads v1")
    for fd in fds[1:]:
        os.close(fd)
    old = fds[0]
    # a new version while one reader keeps the old one open
    tmp = os.path.join(m.input, ".x.tmp")
    subprocess.run(["cp", v2, tmp], check=True)
    os.rename(tmp, os.path.join(m.input, "x.png"))
    result = {}

    def reader():
        result["r"] = read_with_timeout(x, 60)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(1.5)
    if on:
        check(t.is_alive(), "the new version's open waits while the old one is open")
    check(os.pread(old, len(ref1) + 1, 0) == ref1, "the old reader still reads all of v1")
    os.close(old)
    t.join(90)
    check(not t.is_alive(), "the new version's reader finished after the old one closed")
    rc, data, err = result["r"]
    check(rc == 0 and data == ref2, "new version: rc %d, %d bytes vs %d %s" %
          (rc, len(data), len(ref2), err))
    rc, data, err = read_with_timeout(x, 60)
    check(rc == 0 and data == ref2, "read again: rc %d" % rc)
    if on:
        # A process that holds the older version and opens the newer one would wait for
        # itself: EBUSY after 2 s instead of the mount's timeout (60 s).
        held = os.open(x, os.O_RDONLY)
        subprocess.run(["cp", v1, tmp], check=True)
        os.rename(tmp, os.path.join(m.input, "x.png"))
        t0 = time.time()
        try:
            os.close(os.open(x, os.O_RDONLY))
            got = 0
        except OSError as e:
            got = e.errno
        took = time.time() - t0
        check(got == errno.EBUSY and took < 15,
              "the holder's own open: errno %s after %.1f s" % (got, took))
        os.close(held)
        rc, data, err = read_with_timeout(x, 60)
        check(rc == 0 and data == ref1, "after the holder closed: v1 again, rc %d" % rc)
        # After the last close the registration lingers a moment (2 s), so that the next
        # open of the file takes it as it is: hcfs still holds the cache file (the
        # handle's own descriptor goes when the kernel's RELEASE, sent in the background,
        # has been handled)...
        deadline = time.time() + 1
        while held_outputs(m) > 1 and time.time() < deadline:
            time.sleep(0.02)
        check(held_outputs(m) == 1, "the closed output's registration lingers: %d held"
              % held_outputs(m))
        st0 = m.stat()
        rc, data, err = read_with_timeout(x, 60)
        st1 = m.stat()
        check(rc == 0 and data == ref1, "read again while it lingers: rc %d" % rc)
        check(st1["passthrough_reused"] == st0["passthrough_reused"] + 1 and
              st1["passthrough_registered"] == st0["passthrough_registered"],
              "the open took the lingering registration: %s -> %s" % (st0, st1))
        # ...and a new version opened meanwhile gets its own bytes at once, never the
        # lingering old ones, and without waiting for the linger to end
        subprocess.run(["cp", v2, tmp], check=True)
        os.rename(tmp, os.path.join(m.input, "x.png"))
        rc, data, err = read_with_timeout(x, 60)
        check(rc == 0 and data == ref2, "a new version after a lingering old one: rc %d, "
              "%d bytes vs %d %s" % (rc, len(data), len(ref2), err))
        # then the reaper gives the registration and the cache file back
        deadline = time.time() + 20
        while held_outputs(m) and time.time() < deadline:
            time.sleep(0.1)
        check(held_outputs(m) == 0, "hcfs still holds %d cache files 20 s after the last "
              "close" % held_outputs(m))
        # a pass over many files keeps only the 64 most recent registrations lingering
        many = [make_image(os.path.join(w, "s%02d.png" % i), 24, 16, 200 + i)
                for i in range(70)]
        subprocess.run(["cp"] + many + [m.input], check=True)
        # all open first (each job takes its time), then closed together: 70 start to linger
        fds = [os.open(os.path.join(m.up, os.path.basename(p)), os.O_RDONLY) for p in many]
        for fd in fds:
            os.close(fd)
        deadline = time.time() + 1
        while held_outputs(m) > 64 and time.time() < deadline:
            time.sleep(0.02)
        st = m.stat()
        check(st["passthrough_lingering"] == 64 and held_outputs(m) == 64,
              "after 70 files: %d lingering, %d cache files held" %
              (st["passthrough_lingering"], held_outputs(m)))
    check(m.unmount() == 0, "clean exit")


def held_outputs(m):
    """How many output files of m's cache hcfs holds open (from /proc/PID/fd)."""
    out = os.path.realpath(os.path.join(m.cache, "out")) + "/"
    fd_dir = "/proc/%d/fd" % m.proc.pid
    n = 0
    for f in os.listdir(fd_dir):
        try:
            n += os.readlink(os.path.join(fd_dir, f)).startswith(out)
        except OSError:
            pass
    return n


def optional_tool(prog, what):
    """Whether prog (a command; None: already known missing) can run. A program missing is
    a failure in CI (scripts/setup installs them all) and a logged skip of that part
    elsewhere (the GPU machine has no ImageMagick or OpenCV)."""
    import shutil
    if prog and shutil.which(prog):
        return True
    check(not os.environ.get("CI"), "%s missing in CI" % what)
    log("%s not installed: that part is skipped here" % what)
    return False


def case_readers():
    """cp, cat, Python (PIL) and ImageMagick read upscaled/ on first access and get the
    bytes of `hc upscale`; pixels equal OpenCV's INTER_CUBIC."""
    w = tmpdir("readers")
    src = os.path.join(w, "src")
    os.makedirs(src)
    names = ["p1.png", "p2.png", "p3.png", "j1.jpg", "g1.png"]
    make_image(os.path.join(src, "p1.png"), 200, 150, 1)
    make_image(os.path.join(src, "p2.png"), 173, 91, 2, "RGBA")
    make_image(os.path.join(src, "p3.png"), 64, 200, 3)
    make_image(os.path.join(src, "j1.jpg"), 200, 150, 4)
    make_image(os.path.join(src, "g1.png"), 120, 80, 5, "L")
    refs = {n: hc_upscale(os.path.join(src, n), os.path.join(w, "ref-" + n)) for n in names}

    m = Mount(w, "noprefetch")
    for n in names:
        subprocess.run(["cp", os.path.join(src, n), m.input + "/"], check=True)
    os.makedirs(os.path.join(m.input, "sub"))
    subprocess.run(["cp", os.path.join(src, "p1.png"), os.path.join(m.input, "sub", "deep.png")],
                   check=True)
    open(os.path.join(m.input, "notes.txt"), "w").write("not an image")
    subprocess.run(["cp", os.path.join(src, "p1.png"), os.path.join(m.input, "._p1.png")], check=True)
    subprocess.run(["cp", os.path.join(src, "p1.png"), os.path.join(m.input, ".DS_Store")], check=True)

    # Listing, stat and xattrs never start work and never decode.
    listed = sorted(os.listdir(m.up))
    check(listed == sorted(names + ["sub"]), "upscaled/ lists %s" % listed)
    check(os.listdir(os.path.join(m.up, "sub")) == ["deep.png"], "subfolder mirrored")
    subprocess.run(["ls", "-lR", m.up], check=True, stdout=subprocess.DEVNULL)
    for n in names:
        st = os.stat(os.path.join(m.up, n))
        check(st.st_size > 0 and stat.S_IMODE(st.st_mode) & 0o222 == 0, "stat of %s" % n)
        check(m.state(n) == "none", "state before any open: %s" % m.state(n))
    expect_errno(lambda: os.stat(os.path.join(m.up, "notes.txt")), (2,), "non-image hidden")
    expect_errno(lambda: os.stat(os.path.join(m.up, "._p1.png")), (2,), "AppleDouble hidden")
    check(m.jobs_run() == 0, "listing started %d jobs" % m.jobs_run())

    # Read-only: every write-type call is EROFS.
    u = os.path.join(m.up, "p1.png")
    expect_errno(lambda: open(u, "r+b"), (30,), "open for writing")
    expect_errno(lambda: os.open(os.path.join(m.up, "new.png"), os.O_CREAT | os.O_WRONLY),
                 (30,), "create")
    expect_errno(lambda: os.unlink(u), (30,), "unlink")
    expect_errno(lambda: os.mkdir(os.path.join(m.up, "dir")), (30,), "mkdir")
    expect_errno(lambda: os.chmod(u, 0o777), (30,), "chmod")
    expect_errno(lambda: os.rename(u, os.path.join(m.up, "q.png")), (30,), "rename")
    expect_errno(lambda: os.setxattr(u, "user.x", b"1"), (30,), "setxattr")
    expect_errno(lambda: os.truncate(u, 0), (30,), "truncate")
    check(m.jobs_run() == 0, "refused calls started jobs")

    # cp: first access; fstat after open is exact.
    out = os.path.join(w, "cp-p1.png")
    subprocess.run(["cp", u, out], check=True)
    check(open(out, "rb").read() == refs["p1.png"], "cp p1.png differs from hc upscale")
    # cat
    rc, data, err = read_with_timeout(os.path.join(m.up, "p2.png"))
    check(rc == 0 and data == refs["p2.png"], "cat p2.png: rc %d %s" % (rc, err))
    # Python: open, fstat, read; then Pillow decodes the mount's file directly
    from PIL import Image
    import numpy as np
    try:
        import cv2
    except ImportError:
        cv2 = None
        optional_tool(None, "OpenCV (python3-opencv)")
    with open(os.path.join(m.up, "p3.png"), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read()
    check(data == refs["p3.png"] and size == len(data), "python read p3.png (fstat %d, %d bytes)"
          % (size, len(data)))
    check(os.stat(os.path.join(m.up, "p3.png")).st_size == len(data), "stat exact once done")
    im = np.asarray(Image.open(os.path.join(m.up, "j1.jpg")).convert("RGB"))
    ref_im = np.asarray(Image.open(os.path.join(w, "ref-j1.jpg")).convert("RGB"))
    check(im.shape == (300, 400, 3) and (im == ref_im).all(), "PIL j1.jpg")
    # ImageMagick: stream the raw pixels of a file nobody has opened yet
    magick = optional_tool("stream", "ImageMagick")
    if magick:
        raw = os.path.join(w, "g1.gray")
        r = subprocess.run(["stream", "-map", "i", "-storage-type", "char",
                            os.path.join(m.up, "g1.png"), raw], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0, "stream: %s" % r.stderr)
        ref_g = np.asarray(Image.open(os.path.join(w, "ref-g1.png")))
        got_g = np.frombuffer(open(raw, "rb").read(), np.uint8).reshape(ref_g.shape)
        check((got_g == ref_g).all(), "ImageMagick stream g1.png pixels")
        r = subprocess.run(["identify", "-format", "%w %h", os.path.join(m.up, "sub", "deep.png")],
                           capture_output=True, text=True, timeout=60)
        check(r.stdout.strip() == "400 300", "identify deep.png: %r %s" % (r.stdout, r.stderr))
    # Pixels against OpenCV (independent of hc): PNG in, PNG out, x2 is exact.
    if cv2:
        s = cv2.imread(os.path.join(src, "p1.png"), cv2.IMREAD_UNCHANGED)
        cvref = cv2.resize(s, (400, 300), interpolation=cv2.INTER_CUBIC)
        got = cv2.imread(u, cv2.IMREAD_UNCHANGED)
        check(got is not None and (got == cvref).all(), "p1.png differs from cv2 INTER_CUBIC")
    check(m.state("p1.png") == "done", "state done")
    check(os.getxattr(u, "user.hc.progress").decode().startswith("100%"), "progress 100%")
    expect_errno(lambda: os.getxattr(u, "user.hc.error"), (ENOATTR,), "no error xattr")
    # sub/deep.png has the bytes of p1.png: same cache key, answered from the cache (only
    # ImageMagick reads g1.png and sub/deep.png)
    s = m.stat()
    check(s["jobs_run"] == (5 if magick else 4) and s["cache_hits"] == (1 if magick else 0),
          "one job per distinct input: %s" % s)
    check(m.unmount() == 0, "clean exit")


def case_exact_size():
    """-o exact_size: plain stat (before anything opened the file) gives the exact size."""
    w = tmpdir("exact")
    make_image(os.path.join(w, "e.jpg"), 200, 150, 7)
    ref = hc_upscale(os.path.join(w, "e.jpg"), os.path.join(w, "ref.jpg"))
    m = Mount(w, "noprefetch,exact_size")
    subprocess.run(["cp", os.path.join(w, "e.jpg"), m.input + "/"], check=True)
    st = os.stat(os.path.join(m.up, "e.jpg"))
    check(st.st_size == len(ref), "exact_size stat %d != %d" % (st.st_size, len(ref)))
    out = subprocess.run(["ls", "-l", m.up], capture_output=True, text=True).stdout
    check(str(len(ref)) in out, "ls -l shows the exact size: %s" % out)
    # rsync trusts sizes up front: with exact_size it copies the right bytes
    if subprocess.run(["which", "rsync"], capture_output=True).returncode == 0:
        subprocess.run(["rsync", "-a", m.up + "/", os.path.join(w, "rs") + "/"], check=True)
        check(open(os.path.join(w, "rs", "e.jpg"), "rb").read() == ref, "rsync copy")
    check(m.unmount() == 0, "clean exit")


def case_cache():
    """Second read from the cache (no new job), cache survives remount, a changed input
    gives a new output."""
    w = tmpdir("cache")
    make_image(os.path.join(w, "c.png"), 200, 150, 11)
    make_image(os.path.join(w, "c2.png"), 160, 120, 12)
    ref1 = hc_upscale(os.path.join(w, "c.png"), os.path.join(w, "ref1.png"))
    ref2 = hc_upscale(os.path.join(w, "c2.png"), os.path.join(w, "ref2.png"))
    m = Mount(w, "noprefetch")
    subprocess.run(["cp", os.path.join(w, "c.png"), os.path.join(m.input, "c.png")], check=True)
    u = os.path.join(m.up, "c.png")
    check(open(u, "rb").read() == ref1, "first read")
    check(open(u, "rb").read() == ref1, "second read")
    check(m.jobs_run() == 1, "second read ran a job: %d" % m.jobs_run())
    check(m.unmount() == 0, "clean exit")

    m = Mount(w, "noprefetch")
    # Remembered across mounts: state and exact size before anything opens the file
    check(m.state("c.png") == "done", "state after remount: %s" % m.state("c.png"))
    check(os.stat(os.path.join(m.up, "c.png")).st_size == len(ref1), "exact size after remount")
    check(m.stat()["jobs_queued"] == 0, "stat after remount queued a job")
    check(open(os.path.join(m.up, "c.png"), "rb").read() == ref1, "read after remount")
    s = m.stat()
    check(s["jobs_run"] == 0 and s["cache_hits"] == 1, "after remount: %s" % s)
    # change the input (in place, same name): a new output
    subprocess.run(["cp", os.path.join(w, "c2.png"), os.path.join(m.input, "c.png")], check=True)
    got = open(os.path.join(m.up, "c.png"), "rb").read()
    check(got == ref2 and got != ref1, "changed input gave the old output")
    check(m.jobs_run() == 1, "changed input: one new job, got %d" % m.jobs_run())
    st = os.stat(os.path.join(m.up, "c.png"))
    check(st.st_size == len(ref2), "size follows the new output")
    check(m.unmount() == 0, "clean exit")


def case_evicted():
    """An output evicted from the cache (cache_max, least recently used) is made again on
    the next open, with the same bytes; nothing is served from a file that is gone."""
    w = tmpdir("evict")
    src = make_image(os.path.join(w, "v.png"), 200, 150, 13)
    src2 = make_image(os.path.join(w, "w.png"), 180, 120, 14)
    ref = hc_upscale(src, os.path.join(w, "ref.png"))
    ref2 = hc_upscale(src2, os.path.join(w, "ref2.png"))
    m = Mount(w, "noprefetch,cache_max=1K")
    subprocess.run(["cp", src, src2, m.input + "/"], check=True)
    check(open(os.path.join(m.up, "v.png"), "rb").read() == ref, "first read")
    # the cache keeps the most recently used entry whatever its size: a second one evicts v
    check(open(os.path.join(m.up, "w.png"), "rb").read() == ref2, "second file")
    end = time.time() + 30
    while m.stat()["cache_evicted"] < 1 and time.time() < end:
        time.sleep(0.2)
    s = m.stat()
    check(s["cache_evicted"] >= 1 and s["cache_entries"] <= 1, "not evicted: %s" % s)
    # an evicted output is not "done": opening it runs the job again
    check(m.state("v.png") == "none", "state of an evicted output: %s" % m.state("v.png"))
    check(open(os.path.join(m.up, "v.png"), "rb").read() == ref, "read after eviction")
    check(m.jobs_run() == 3, "eviction: %d runs, want 3" % m.jobs_run())
    check(m.unmount() == 0, "clean exit")


def case_tiny_cache():
    """A cache smaller than the outputs in flight (cache_max=1K, 12 files read at once): an
    output is pinned from the moment its job knows the key until the readers waiting for it
    have it open, and while any reader has it open, so every reader gets the bytes of
    `hc upscale` with the exact size from fstat(), no job runs twice, and nothing fails with
    EIO. Once all are closed, eviction brings the cache back to its bound."""
    w = tmpdir("tiny")
    n = 12
    srcs = [make_image(os.path.join(w, "t%02d.png" % i), 150 + i, 110, 500 + i) for i in range(n)]
    refs = {os.path.basename(p): hc_upscale(p, os.path.join(w, "ref%02d.png" % i))
            for i, p in enumerate(srcs)}
    m = Mount(w, "noprefetch,cache_max=1K")
    subprocess.run(["cp"] + srcs + [m.input], check=True)
    got, held = {}, []

    def reader(name):
        try:
            fd = os.open(os.path.join(m.up, name), os.O_RDONLY)
            size = os.fstat(fd).st_size
            data = b""
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                data += b
            got[name] = (size, data)
            held.append(fd)  # kept open: the output must stay while it is
        except OSError as e:
            got[name] = e

    ts = [threading.Thread(target=reader, args=(name,)) for name in refs]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    for name, ref in refs.items():
        r = got.get(name)
        check(not isinstance(r, Exception) and r is not None, "%s: %r" % (name, r))
        check(r[1] == ref and r[0] == len(ref), "%s: fstat %d, %d bytes read, want %d" %
              (name, r[0], len(r[1]), len(ref)))
    check(m.jobs_run() == n, "jobs run: %d, want %d" % (m.jobs_run(), n))
    # open outputs are in use: not evicted, stat says done with the exact size
    time.sleep(0.5)
    for name, ref in refs.items():
        check(m.state(name) == "done", "%s while open: %s" % (name, m.state(name)))
        check(os.stat(os.path.join(m.up, name)).st_size == len(ref), "%s: stat size" % name)
    for fd in held:
        os.close(fd)
    end = time.time() + 30
    while m.stat()["cache_entries"] > 1 and time.time() < end:
        time.sleep(0.2)
    check(m.stat()["cache_entries"] <= 1, "after the last close: %s" % m.stat())
    check(m.unmount() == 0, "clean exit")


def case_versions():
    """A job queued (prefetch) for an old version of a file never publishes output for the
    new one: overwrite a file while its job waits in the queue, read it, get the new
    version's output. The only worker is held by a job on a stopped service (SIGSTOP), so
    the order of events does not depend on the machine's speed."""
    w = tmpdir("versions")
    svc = Service(w)
    blocker = make_image(os.path.join(w, "b.png"), 200, 150, 60)
    v1 = make_image(os.path.join(w, "v1.png"), 200, 150, 61)
    v2 = make_image(os.path.join(w, "v2.png"), 190, 140, 62)
    ref2 = hc_upscale(v2, os.path.join(w, "ref2.png"))
    m = Mount(w, "jobs=1,timeout=60,service=%s" % svc.url)  # prefetch on, one worker
    os.killpg(svc.proc.pid, signal.SIGSTOP)
    try:
        subprocess.run(["cp", blocker, os.path.join(m.input, "b.png")], check=True)
        m.wait_state("b.png", ("running",), 30)  # the only worker waits for the service
        subprocess.run(["cp", v1, os.path.join(m.input, "x.png")], check=True)
        time.sleep(0.2)
        check(m.state("x.png") == "pending", "v1 queued: %s" % m.state("x.png"))
        subprocess.run(["cp", v2, os.path.join(m.input, "x.png")], check=True)  # in place
        time.sleep(0.2)
        check(m.state("x.png") == "pending", "v2 queued: %s" % m.state("x.png"))
        check(m.stat()["jobs_run"] == 1, "only the blocker ran: %s" % m.stat())
    finally:
        os.killpg(svc.proc.pid, signal.SIGCONT)
    rc, data, err = read_with_timeout(os.path.join(m.up, "x.png"), 120)
    check(rc == 0 and data == ref2, "read after overwrite: rc %d, %d bytes vs %d %s" %
          (rc, len(data), len(ref2), err))
    check(os.stat(os.path.join(m.up, "x.png")).st_size == len(ref2), "size of the new output")
    m.wait_state("b.png", ("done",), 120)
    s = m.stat()
    # b.png and x.png (v2) ran; v1's queued job was dropped when v2 replaced it
    check(s["jobs_run"] == 2 and s["failed"] == 0, "runs: %s" % s)
    check(m.unmount() == 0, "clean exit")


def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)


def case_bad_files():
    """Truncated, corrupt, empty, not-an-image and decompression-bomb files never crash or
    hang the mount: they are not listed, or fail with EIO and user.hc.error."""
    w = tmpdir("bad")
    good = make_image(os.path.join(w, "good.png"), 200, 150, 21)
    jpg = make_image(os.path.join(w, "j.jpg"), 200, 150, 22)
    ref = hc_upscale(good, os.path.join(w, "ref.png"))
    jb = open(jpg, "rb").read()
    pb = open(good, "rb").read()
    bad = {
        "truncated.jpg": jb[: len(jb) // 2],
        "truncated.png": pb[: len(pb) // 2],
        "header-only.jpg": jb[:200],
        "corrupt.png": pb[:60] + bytes(b ^ 0x5A for b in pb[60:200]) + pb[200:],
        "corrupt.jpg": jb[:300] + b"\xff" * 500 + jb[800:],
        "empty.png": b"",
        "text.jpg": b"this is not an image\n" * 10,
        "bomb.png": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                    + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""),
        "bomb-wide.png": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2000000000, 1, 8, 0, 0, 0, 0))
                         + png_chunk(b"IEND", b""),
    }
    m = Mount(w, "")  # prefetch on: bad files are also queued as they are written
    for n, b in bad.items():
        with open(os.path.join(m.input, n), "wb") as f:
            f.write(b)
    subprocess.run(["cp", good, os.path.join(m.input, "good.png")], check=True)
    listed = set(os.listdir(m.up))
    check("good.png" in listed, "good.png listed")
    for n in ("empty.png", "text.jpg"):
        check(n not in listed, "%s listed" % n)
    for n in bad:
        p = os.path.join(m.up, n)
        if n not in listed:
            expect_errno(lambda: os.stat(p), (2,), "stat of unlisted %s" % n)
            continue
        rc, data, err = read_with_timeout(p, 60)
        if rc == 0:
            # Something a decoder accepted (a lenient JPEG decoder may): then it must be what
            # hc upscale makes of the same bytes.
            src = os.path.join(w, "in-" + n)
            open(src, "wb").write(b)
            r = subprocess.run([HC, "upscale", src, os.path.join(w, "out-" + n)],
                               capture_output=True)
            check(r.returncode == 0 and open(os.path.join(w, "out-" + n), "rb").read() == data,
                  "%s read through the mount but hc upscale disagrees" % n)
            log("%s: decoded (lenient decoder), matches hc upscale" % n)
            continue
        check("Input/output error" in err, "%s: %s" % (n, err))
        e = os.getxattr(p, "user.hc.error").decode()
        check(len(e) > 5, "%s: user.hc.error empty" % n)
        check(m.state(n) == "failed", "%s state %s" % (n, m.state(n)))
        log("%s: EIO, user.hc.error = %s" % (n, e))
    check(m.proc.poll() is None, "hcfs died")
    rc, data, err = read_with_timeout(os.path.join(m.up, "good.png"))
    check(rc == 0 and data == ref, "good.png after the bad ones")
    check(m.unmount() == 0, "clean exit")


def case_finder():
    """Finder's copy sequence on input/: create O_EXCL, quarantine, FinderInfo brokMACS while
    writing, write, utimens, chmod, FinderInfo cleared, rename. The job starts only after."""
    w = tmpdir("finder")
    src = make_image(os.path.join(w, "f.jpg"), 200, 150, 31)
    ref = hc_upscale(src, os.path.join(w, "ref.jpg"))
    data = open(src, "rb").read()
    m = Mount(w, "")  # prefetch on
    tmpname = os.path.join(m.input, "f copy.jpg")
    final = os.path.join(m.input, "f.jpg")
    fd = os.open(tmpname, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.setxattr(tmpname, "com.apple.quarantine", b"0083;65a1b2c3;Finder;")
    os.setxattr(tmpname, "com.apple.FinderInfo", b"brokMACS" + b"\0" * 24)
    for k in range(0, len(data), 4096):
        os.write(fd, data[k:k + 4096])
        if k == 4096:
            os.fsync(fd)
    os.close(fd)  # release after write: brokMACS, so no job
    os.utime(tmpname, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.chmod(tmpname, 0o644)
    time.sleep(0.3)
    s = m.stat()
    check(s["jobs_queued"] == 0 and s["jobs_run"] == 0, "a job started during the copy: %s" % s)
    check(m.state("f copy.jpg") == "none", "state during copy %s" % m.state("f copy.jpg"))
    os.setxattr(tmpname, "com.apple.FinderInfo", b"\0" * 32)
    os.rename(tmpname, final)
    check(os.getxattr(final, "com.apple.quarantine") == b"0083;65a1b2c3;Finder;", "quarantine kept")
    m.wait_state("f.jpg", ("done",), 60)
    s = m.stat()
    check(s["jobs_run"] == 1, "exactly one pipeline run for the copied file: %s" % s)
    check(open(os.path.join(m.up, "f.jpg"), "rb").read() == ref, "output of the Finder copy")
    check(os.stat(final).st_mtime_ns == 1_600_000_000_000_000_000, "utimens kept")
    # rsync's way: write a dot-file, rename it into place; one job, for the final name
    before = m.stat()
    src2 = make_image(os.path.join(w, "r.png"), 150, 100, 32)
    ref2 = hc_upscale(src2, os.path.join(w, "ref-r.png"))
    tmp = os.path.join(m.input, ".r.png.Xy12Ab")
    with open(tmp, "wb") as f:
        f.write(open(src2, "rb").read())
    time.sleep(0.2)
    check(m.stat()["jobs_queued"] == before["jobs_queued"], "a job was queued for a temp name")
    os.rename(tmp, os.path.join(m.input, "r.png"))
    m.wait_state("r.png", ("done",), 60)
    s = m.stat()
    check(s["jobs_queued"] == before["jobs_queued"] + 1 and s["failed"] == 0, "rsync-like: %s" % s)
    got = open(os.path.join(m.up, "r.png"), "rb").read()
    check(got == ref2, "rsync-like output: %d bytes vs %d; %s" % (len(got), len(ref2), m.log()))
    check(m.unmount() == 0, "clean exit")


def case_replaced():
    """A queued job whose input is replaced by a FIFO (renamed over it) before the job
    starts must not block its worker: the job ends, and unmount exits at once. The only
    worker is held by a job on a stopped service (SIGSTOP) while the file is replaced."""
    w = tmpdir("replaced")
    svc = Service(w)
    blocker = make_image(os.path.join(w, "b.png"), 200, 150, 63)
    v1 = make_image(os.path.join(w, "v1.png"), 200, 150, 64)
    m = Mount(w, "jobs=1,timeout=60,service=%s" % svc.url)  # prefetch on, one worker
    os.killpg(svc.proc.pid, signal.SIGSTOP)
    try:
        subprocess.run(["cp", blocker, os.path.join(m.input, "b.png")], check=True)
        m.wait_state("b.png", ("running",), 30)
        subprocess.run(["cp", v1, os.path.join(m.input, "x.png")], check=True)
        m.wait_state("x.png", ("pending",), 10)
        os.mkfifo(os.path.join(m.data, ".x.fifo"))
        os.rename(os.path.join(m.input, ".x.fifo"), os.path.join(m.input, "x.png"))
    finally:
        os.killpg(svc.proc.pid, signal.SIGCONT)
    m.wait_state("b.png", ("done",), 60)
    end = time.time() + 10
    while m.stat()["running"] > 0 and time.time() < end:
        time.sleep(0.05)
    check(m.stat()["running"] == 0, "a worker is stuck on the replaced input: %s" % m.stat())
    check(m.unmount(timeout=10) == 0, "clean exit")


def case_rewritten():
    """A reader waiting for a running job whose input is rewritten in place meanwhile gets
    the new version's output, not EIO: the old job's output is discarded (it may mix
    versions), and the reader waits for the version the file now has. The job is held on a
    stopped service (SIGSTOP) while the file is rewritten."""
    w = tmpdir("rewritten")
    svc = Service(w)
    v1 = make_image(os.path.join(w, "v1.png"), 200, 150, 65)
    v2 = make_image(os.path.join(w, "v2.png"), 190, 140, 66)
    ref2 = hc_upscale(v2, os.path.join(w, "ref2.png"))
    m = Mount(w, "noprefetch,timeout=60,service=%s" % svc.url)
    subprocess.run(["cp", v1, os.path.join(m.input, "x.png")], check=True)
    os.killpg(svc.proc.pid, signal.SIGSTOP)
    try:
        reader = subprocess.Popen(["cat", os.path.join(m.up, "x.png")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        m.wait_state("x.png", ("running",), 30)
        subprocess.run(["cp", v2, os.path.join(m.input, "x.png")], check=True)  # in place
    finally:
        os.killpg(svc.proc.pid, signal.SIGCONT)
    try:
        data, err = reader.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        reader.kill()
        fail("the reader hung")
    check(reader.returncode == 0 and data == ref2,
          "reader during an in-place rewrite: rc %d, %d bytes vs %d: %s" %
          (reader.returncode, len(data), len(ref2), err.decode(errors="replace")))
    check(m.unmount() == 0, "clean exit")


# --------------------------------------------------------------------------- crashes, signals

def big_input(w, name="big.png"):
    """An input whose job takes seconds on this machine (PNG of noise: deflate is slow)."""
    import numpy as np
    from PIL import Image
    p = os.path.join(w, name)
    a = np.random.RandomState(5).randint(0, 256, size=(900, 1200, 3), dtype=np.uint8)
    Image.fromarray(a).save(p, compress_level=1)
    return p


def wait_running(m, rel, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if m.state(rel) == "running":
                pr = os.getxattr(os.path.join(m.up, rel), "user.hc.progress").decode()
                if not pr.startswith("0%"):
                    return pr
        except OSError:
            pass
        time.sleep(0.02)
    fail("%s never got running: %s" % (rel, m.state(rel)))


def cache_outputs(m):
    out = []
    for dp, dn, fn in os.walk(m.cache):
        for f in fn:
            if not f.startswith("index.db"):
                out.append(os.path.relpath(os.path.join(dp, f), m.cache))
    return sorted(out)


def case_kill9():
    """kill -9 of hcfs in the middle of a job, mount again: nothing partial is served, the
    job runs again and gives the bytes of hc upscale."""
    w = tmpdir("kill9")
    src = big_input(w)
    m = Mount(w, "noprefetch,scale=4")
    subprocess.run(["cp", src, os.path.join(m.input, "big.png")], check=True)
    reader = subprocess.Popen(["cat", os.path.join(m.up, "big.png")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    pr = wait_running(m, "big.png")
    log("killing hcfs at %s" % pr)
    os.killpg(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=10)
    reader.wait(timeout=20)
    subprocess.run(["fusermount3", "-uz", m.root])
    time.sleep(0.2)
    leftovers = cache_outputs(m)
    log("cache after kill -9: %s" % leftovers)

    ref = hc_upscale(src, os.path.join(w, "ref.png"), "--scale", "4")
    m2 = Mount(w, "noprefetch,scale=4")
    # Recovery at start-up removed what the killed job left: nothing under out/ yet.
    left = [f for f in cache_outputs(m2) if f.startswith("out")]
    check(left == [], "unfinished outputs served after restart: %s" % left)
    check(m2.state("big.png") == "none", "state after restart %s" % m2.state("big.png"))
    rc, data, err = read_with_timeout(os.path.join(m2.up, "big.png"), 240)
    check(rc == 0 and data == ref, "after kill -9: rc %d, %d bytes vs %d (%s)" %
          (rc, len(data), len(ref), err))
    check(m2.jobs_run() == 1, "the job ran again")
    check(m2.unmount() == 0, "clean exit")


def case_signals():
    """A waiting reader can be interrupted (the job goes on); 40 waiting readers do not
    starve the mount; SIGTERM mid-job unmounts cleanly with no job left writing and no
    temporary file left in the cache; SIGINT and fusermount3 -u end in status 0 too.
    Part one holds the job on a stopped service (SIGSTOP), so it is running for as long as
    the test needs on any machine; part two cancels an in-process job."""
    import fs_lib
    w = tmpdir("sig")
    svc = Service(w)
    src = make_image(os.path.join(w, "s.png"), 200, 150, 81)
    m = Mount(w, "noprefetch,timeout=60,service=%s" % svc.url)
    subprocess.run(["cp", src, os.path.join(m.input, "s.png")], check=True)
    os.killpg(svc.proc.pid, signal.SIGSTOP)
    reader = subprocess.Popen(["cat", os.path.join(m.up, "s.png")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    m.wait_state("s.png", ("running",), 30)
    t0 = time.time()
    reader.send_signal(signal.SIGINT)
    try:
        reader.wait(timeout=5)
    except subprocess.TimeoutExpired:
        fail("a reader waiting in open() did not stop on SIGINT")
    log("reader interrupted after %.2f s" % (time.time() - t0))
    check(m.state("s.png") == "running", "the job goes on for others")
    # 40 readers waiting in open() (libfuse's default of 10 workers would starve the mount):
    # the mount still answers at once.
    waiting = [subprocess.Popen(["cat", os.path.join(m.up, "s.png")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(40)]
    end = time.time() + 10
    while m.stat()["waiting"] < 40 and time.time() < end:
        time.sleep(0.05)
    check(m.stat()["waiting"] >= 40, "readers waiting: %s" % m.stat())
    t0 = time.time()
    os.listdir(m.input)
    open(os.path.join(m.input, "during.txt"), "w").write("x")
    check(time.time() - t0 < 2, "the mount starved with 40 waiting readers")
    for p in waiting:
        p.kill()
    for p in waiting:
        p.wait(timeout=10)
    # SIGTERM to hcfs while the job waits for the (stopped) service
    t0 = time.time()
    os.kill(m.proc.pid, signal.SIGTERM)
    try:
        rc = m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        fail("hcfs did not exit within 20 s of SIGTERM:\n%s\n%s" % (m.log(), fs_lib.stacks(m.proc.pid)))
    log("hcfs exited %d after %.2f s" % (rc, time.time() - t0))
    os.killpg(svc.proc.pid, signal.SIGCONT)
    check(rc == 0, "exit status %d after SIGTERM:\n%s" % (rc, m.log()))
    check(not os.path.ismount(m.root), "still mounted after SIGTERM")
    left = [f for f in cache_outputs(m) if f.startswith("out")]
    check(left == [], "files left in the cache after SIGTERM: %s" % left)

    # An in-process job cancelled by SIGTERM
    big = big_input(w)
    m = Mount(w, "noprefetch,scale=4", name="mnt-b")
    subprocess.run(["cp", big, os.path.join(m.input, "big.png")], check=True)
    reader = subprocess.Popen(["cat", os.path.join(m.up, "big.png")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    wait_running(m, "big.png")
    os.kill(m.proc.pid, signal.SIGTERM)
    try:
        rc = m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        fail("hcfs did not exit within 20 s of SIGTERM:\n%s\n%s" % (m.log(), fs_lib.stacks(m.proc.pid)))
    reader.wait(timeout=20)
    check(rc == 0 and not os.path.ismount(m.root), "SIGTERM mid-job: %d\n%s" % (rc, m.log()))
    left = [f for f in cache_outputs(m) if f.startswith("out")]
    check(left == [], "files left in the cache after SIGTERM mid-job: %s" % left)
    # SIGINT on an idle mount, and fusermount3 -u, also end with status 0
    m2 = Mount(w, "noprefetch", name="mnt-c")
    os.kill(m2.proc.pid, signal.SIGINT)
    check(m2.proc.wait(timeout=20) == 0 and not os.path.ismount(m2.root), "SIGINT")
    m3 = Mount(w, "noprefetch", name="mnt-d")
    check(m3.unmount() == 0, "fusermount3 -u")


def case_sigterm_reading():
    """SIGTERM while a program reads upscaled/x (pages in flight) and a job for a new version
    of x runs: hcfs exits at once. (The ending job dropped the kernel's cached pages of x
    after the FUSE loop had stopped answering, waited for a read nobody would serve, and
    hung hcfs and the reader for good.)"""
    import fs_lib
    w = tmpdir("sigread")
    svc = Service(w)
    v1 = make_image(os.path.join(w, "v1.png"), 600, 400, 91)
    v2 = make_image(os.path.join(w, "v2.png"), 300, 200, 92)
    m = Mount(w, "noprefetch,timeout=60,service=%s" % svc.url)
    subprocess.run(["cp", v1, os.path.join(m.input, "x.png")], check=True)
    x = os.path.join(m.up, "x.png")
    reader = subprocess.Popen(["/usr/bin/python3", "-c", """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.fstat(fd).st_size, flush=True)
while True:  # every pread asks hcfs again
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.pread(fd, 1 << 16, 0)
""", x], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    fs_lib._procs.append(reader)
    check(int(reader.stdout.readline() or 0) > 0, "the reader could not open x.png")
    os.killpg(svc.proc.pid, signal.SIGSTOP)
    try:
        subprocess.run(["cp", v2, os.path.join(m.input, ".x.tmp")], check=True)
        os.rename(os.path.join(m.input, ".x.tmp"), os.path.join(m.input, "x.png"))
        waiter = subprocess.Popen(["cat", x], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fs_lib._procs.append(waiter)
        m.wait_state("x.png", ("running",), 30)
        time.sleep(0.3)
        os.kill(m.proc.pid, signal.SIGTERM)
        try:
            rc = m.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail("hcfs did not exit within 20 s of SIGTERM while x.png was read")
    finally:
        os.killpg(svc.proc.pid, signal.SIGCONT)
    check(rc == 0, "exit status %d after SIGTERM:\n%s" % (rc, m.log()))
    check(not fs_lib.mounted(m.root), "still mounted after SIGTERM")


# --------------------------------------------------------------------------- with a service

def svc_inputs(w, n, wh=(200, 150)):
    src = os.path.join(w, "src")
    os.makedirs(src, exist_ok=True)
    out = []
    for k in range(n):
        ext = ".jpg" if k % 2 else ".png"
        p = make_image(os.path.join(src, "i%02d%s" % (k, ext)), wh[0] + k, wh[1] + k, 100 + k)
        out.append(p)
    return out


def ntiles(wd, ht, scale=2, tile=256):
    W, H = wd * scale, ht * scale
    return ((W + tile - 1) // tile) * ((H + tile - 1) // tile)


def case_svc_readers():
    """16 concurrent readers of one file: one job (service tile count), identical bytes;
    16 files upscaled concurrently; a second read sends nothing to the service."""
    w = tmpdir("svc")
    svc = Service(w)
    ins = svc_inputs(w, 16)
    refs = {os.path.basename(p): hc_upscale(p, os.path.join(w, "ref-" + os.path.basename(p)),
                                            "--service", svc.url) for p in ins}
    m = Mount(w, "noprefetch,service=%s,jobs=8" % svc.url)
    for p in ins:
        subprocess.run(["cp", p, m.input + "/"], check=True)
    t0 = svc.tiles()
    one = os.path.join(m.up, "i00.png")
    results = [None] * 16

    def rd(k, path):
        results[k] = read_with_timeout(path, 120)

    th = [threading.Thread(target=rd, args=(k, one)) for k in range(16)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for rc, data, err in results:
        check(rc == 0 and data == refs["i00.png"], "concurrent reader: rc %d %s" % (rc, err))
    d = svc.tiles() - t0
    check(d == ntiles(200, 150), "16 readers of one file: %d tiles sent, one job is %d" %
          (d, ntiles(200, 150)))
    check(m.jobs_run() == 1, "jobs run %d" % m.jobs_run())

    # 16 different files at once
    t0 = svc.tiles()
    names = sorted(refs)
    th = [threading.Thread(target=rd, args=(k, os.path.join(m.up, n))) for k, n in enumerate(names)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for n, (rc, data, err) in zip(names, results):
        check(rc == 0 and data == refs[n], "%s: rc %d %s" % (n, rc, err))
    want = sum(ntiles(200 + k, 150 + k) for k in range(1, 16))
    check(svc.tiles() - t0 == want, "16 files: %d tiles, want %d" % (svc.tiles() - t0, want))
    s = m.stat()
    log("16 files: at most %d jobs ran at once (jobs=8)" % s["running_max"])
    check(s["running_max"] >= 2, "the files were not upscaled concurrently: %s" % s)

    # second read: from the cache, nothing sent
    t0, b0 = svc.tiles(), svc.bytes_in()
    for n in names:
        check(open(os.path.join(m.up, n), "rb").read() == refs[n], "cached %s" % n)
    check(svc.tiles() == t0 and svc.bytes_in() == b0, "a cached read sent something")
    check(m.unmount() == 0, "clean exit")
    # and after a remount too
    m = Mount(w, "noprefetch,service=%s" % svc.url)
    check(open(os.path.join(m.up, "i03.jpg"), "rb").read() == refs["i03.jpg"], "after remount")
    check(svc.tiles() == t0 and svc.bytes_in() == b0, "a read after remount sent something")
    check(m.unmount() == 0, "clean exit")


def case_svc_down():
    """Service stopped: open fails with EIO within the configured timeout, user.hc.error
    says why, the mount stays usable."""
    w = tmpdir("down")
    svc = Service(w)
    url = svc.url
    svc.kill()
    src = make_image(os.path.join(w, "d.png"), 200, 150, 41)
    m = Mount(w, "noprefetch,service=%s,timeout=2,retries=1" % url)
    subprocess.run(["cp", src, m.input + "/"], check=True)
    t0 = time.time()
    rc, data, err = read_with_timeout(os.path.join(m.up, "d.png"), 60)
    dt = time.time() - t0
    check(rc != 0 and "Input/output error" in err, "open with the service down: rc %d %s" % (rc, err))
    check(dt < 15, "EIO took %.1f s (timeout=2, retries=1)" % dt)
    e = os.getxattr(os.path.join(m.up, "d.png"), "user.hc.error").decode()
    log("EIO after %.2f s; user.hc.error = %s" % (dt, e))
    check(len(e) > 5, "user.hc.error empty")
    check(m.state("d.png") == "failed", "state %s" % m.state("d.png"))
    # still usable
    open(os.path.join(m.input, "t.txt"), "w").write("still here")
    check(open(os.path.join(m.input, "t.txt")).read() == "still here", "input/ after failure")
    check("d.png" in os.listdir(m.up), "listing after failure")
    check(m.unmount() == 0, "clean exit")

    # A service that accepts connections but never answers (stopped): EIO within the
    # configured timeout (timeout=2 per attempt, retries=1: about 4 s plus backoff).
    hung = Service(w)
    os.killpg(hung.proc.pid, signal.SIGSTOP)
    m2 = Mount(w, "noprefetch,service=%s,timeout=2,retries=1" % hung.url, name="mnt2")
    t0 = time.time()
    rc, data, err = read_with_timeout(os.path.join(m2.up, "d.png"), 60)
    dt = time.time() - t0
    check(rc != 0 and "Input/output error" in err, "open with a hung service: rc %d %s" % (rc, err))
    check(2 <= dt < 12, "EIO from a hung service took %.1f s (timeout=2, retries=1)" % dt)
    log("hung service: EIO after %.2f s; user.hc.error = %s" %
        (dt, os.getxattr(os.path.join(m2.up, "d.png"), "user.hc.error").decode()))
    os.killpg(hung.proc.pid, signal.SIGCONT)
    check(m2.unmount() == 0, "clean exit")


def case_svc_token():
    """token_file=: the bearer token reaches the service; a wrong one fails with EIO and a
    reason, and sends no pixels through."""
    w = tmpdir("token")
    tok = os.path.join(w, "token")
    open(tok, "w").write("s3cret-token-for-the-test\n")
    bad = os.path.join(w, "bad")
    open(bad, "w").write("wrong\n")
    svc = Service(w, ["--token-file", tok])
    src = make_image(os.path.join(w, "t.png"), 200, 150, 71)
    ref = hc_upscale(src, os.path.join(w, "ref.png"))
    m = Mount(w, "noprefetch,service=%s,token_file=%s" % (svc.url, tok))
    subprocess.run(["cp", src, m.input + "/"], check=True)
    rc, data, err = read_with_timeout(os.path.join(m.up, "t.png"), 60)
    check(rc == 0 and data == ref, "with the token: rc %d %s" % (rc, err))
    check(m.unmount() == 0, "clean exit")
    m = Mount(w, "noprefetch,service=%s,token_file=%s,cache=%s" % (svc.url, bad, w + "/c2"),
              name="mnt2")
    t0 = svc.tiles()
    rc, data, err = read_with_timeout(os.path.join(m.up, "t.png"), 60)
    check(rc != 0 and "Input/output error" in err, "wrong token: rc %d %s" % (rc, err))
    e = os.getxattr(os.path.join(m.up, "t.png"), "user.hc.error").decode()
    log("wrong token: user.hc.error = %s" % e)
    check("401" in e or "nauthori" in e or "token" in e, "reason: %s" % e)
    check(svc.tiles() == t0, "tiles upscaled for a wrong token")
    check(m.unmount() == 0, "clean exit")


def case_svc_failover():
    """Two service URLs, one killed mid-batch: every file completes correctly."""
    w = tmpdir("failover")
    a = Service(w, ["--cpu-threads", "1"])
    b = Service(w, ["--cpu-threads", "1"])
    ins = svc_inputs(w, 12, (900, 600))
    refs = {os.path.basename(p): hc_upscale(p, os.path.join(w, "ref-" + os.path.basename(p)))
            for p in ins}
    m = Mount(w, "service=%s,%s,jobs=4,timeout=10" % (a.url, b.url))
    for p in ins:  # prefetch queues every file as it is copied
        subprocess.run(["cp", p, m.input + "/"], check=True)
    # Kill b as soon as it has answered: enough work is left (12 files, ~540 tiles) that
    # requests to b are still to come or in flight, even when a loaded machine slows this
    # loop down (waiting for 4 tiles on 8 small files once let every job finish first).
    end = time.time() + 60
    while b.tiles() < 1 and time.time() < end:
        time.sleep(0.005)
    tb, ta = b.tiles(), a.tiles()
    check(tb >= 1, "service b got no tiles")
    b.kill()
    check(m.stat()["done"] < len(ins), "every job ended before service b was killed")
    log("killed service b after %d tiles (a: %d)" % (tb, ta))
    for n, ref in refs.items():
        rc, data, err = read_with_timeout(os.path.join(m.up, n), 180)
        check(rc == 0 and data == ref, "%s after failover: rc %d %s" % (n, rc, err))
    s = m.stat()
    log("hcfs counters: %s" % s)
    check(s["failed"] == 0, "a job failed: %s" % s)
    check(s["http_failovers"] > 0 or s["http_retries"] > 0, "no request was retried elsewhere")
    check(m.unmount() == 0, "clean exit")


def case_svc_resume():
    """A job that failed halfway resumes with the missing tiles only (tiles stored as they
    arrive)."""
    w = tmpdir("resume")
    svc = Service(w, ["--cpu-threads", "1"])
    port = svc.port
    src = make_image(os.path.join(w, "r.png"), 1000, 700, 51)
    ref = hc_upscale(src, os.path.join(w, "ref.png"))
    total = ntiles(1000, 700)
    m = Mount(w, "noprefetch,service=%s,timeout=2,retries=0,jobs=1" % svc.url)
    subprocess.run(["cp", src, m.input + "/"], check=True)
    reader = subprocess.Popen(["cat", os.path.join(m.up, "r.png")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    end = time.time() + 60
    while svc.tiles() < total // 3 and time.time() < end:
        time.sleep(0.01)
    svc.kill()
    reader.wait(timeout=60)
    check(reader.returncode != 0, "read succeeded although the service died")
    s1 = m.stat()
    log("first attempt: %s" % s1)
    # the same URL again: a new service on the same port
    import fs_lib
    svc2 = fs_lib.Service.__new__(fs_lib.Service)
    proc = None
    for _ in range(50):
        proc = subprocess.Popen([fs_lib.SERVICE, "--listen", "127.0.0.1:%d" % port, "--backend",
                                 "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        fs_lib._procs.append(proc)
        time.sleep(0.3)
        if proc.poll() is None:
            break
    svc2.proc, svc2.port, svc2.url, svc2.token = proc, port, "http://127.0.0.1:%d" % port, None
    rc, data, err = read_with_timeout(os.path.join(m.up, "r.png"), 120)
    check(rc == 0 and data == ref, "resumed job: rc %d %s" % (rc, err))
    s2 = m.stat()
    log("after resume: %s; second service upscaled %d of %d tiles" % (s2, svc2.tiles(), total))
    check(s2["tiles_from_cache"] > 0, "nothing came from stored tiles")
    check(svc2.tiles() == total - s2["tiles_from_cache"],
          "second service got %d tiles, missing were %d" % (svc2.tiles(), total - s2["tiles_from_cache"]))
    check(m.unmount() == 0, "clean exit")


CASES = {
    "passthrough": case_passthrough,
    "kernel_passthrough": case_kernel_passthrough,
    "readers": case_readers,
    "exact_size": case_exact_size,
    "cache": case_cache,
    "evicted": case_evicted,
    "tiny_cache": case_tiny_cache,
    "bad_files": case_bad_files,
    "finder": case_finder,
    "versions": case_versions,
    "replaced": case_replaced,
    "rewritten": case_rewritten,
    "kill9": case_kill9,
    "signals": case_signals,
    "sigterm_reading": case_sigterm_reading,
    "svc_readers": case_svc_readers,
    "svc_down": case_svc_down,
    "svc_token": case_svc_token,
    "svc_failover": case_svc_failover,
    "svc_resume": case_svc_resume,
}

if __name__ == "__main__":
    run_cases(CASES)
