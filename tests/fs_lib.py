"""fs_lib.py: what the hcfs integration tests share (run with Debian's /usr/bin/python3).

Each test gets a fresh temporary directory, mounts a real hcfs there (-f, in the
background, its own process group), starts real hc-gpu-service processes on 127.0.0.1:0
when it needs them, and ALWAYS cleans up: fusermount3 -u, then -uz, then the process groups
are killed, also on failure, on SIGTERM/SIGINT from ctest and at interpreter exit.

References are independent of hcfs: `hc upscale` of the same input (the command-line path,
no FUSE), Pillow / OpenCV decodes, and the service's own /metrics counters.
"""
import atexit
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILD = os.environ.get("HC_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build")
HCFS = os.path.join(BUILD, "bin", "hcfs")
HC = os.path.join(BUILD, "bin", "hc")
SERVICE = os.path.join(BUILD, "bin", "hc-gpu-service")

_procs = []   # Popen objects we started (each leads its own process group)
_mounts = []  # mount points to unmount
_tmpdirs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def skip(why):
    log("skip:", why)
    sys.exit(77)


def fail(why):
    log("FAIL:", why)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def stacks(pid):
    """Thread stacks of a hung process (gdb, when installed), for the failure message."""
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=60)
        return "\n".join(l for l in r.stdout.splitlines() if l.startswith(("#", "Thread")))
    except (OSError, subprocess.TimeoutExpired):
        return "(no gdb)"


def require_fuse():
    if not os.path.exists("/dev/fuse"):
        skip("/dev/fuse is missing")
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        skip("/dev/fuse cannot be opened: %s" % e)
    if not shutil.which("fusermount3"):
        skip("fusermount3 is missing (apt-get install fuse3)")
    if not os.path.exists(HCFS):
        skip("hcfs is not built")
    if not os.path.exists(HC):
        skip("hc is not built")


def require_service():
    if not os.path.exists(SERVICE):
        skip("hc-gpu-service is not built")


def mounted(path):
    """Whether path is a mount point, from /proc/self/mountinfo: a stat() of a hung FUSE
    mount would block the clean-up itself."""
    try:
        with open("/proc/self/mountinfo") as f:
            pts = [l.split()[4].encode().decode("unicode_escape") for l in f]
    except OSError:
        return os.path.ismount(path)
    return os.path.abspath(path) in pts  # not realpath: it would stat the mount


def cleanup():
    for m in reversed(_mounts):
        if mounted(m):
            subprocess.run(["fusermount3", "-u", m], stderr=subprocess.DEVNULL)
        if mounted(m) and os.geteuid() == 0:
            # A daemon stuck with requests unanswered: -f aborts the connection (root only),
            # which frees the processes waiting on it.
            subprocess.run(["umount", "-f", m], stderr=subprocess.DEVNULL)
        if mounted(m):
            subprocess.run(["fusermount3", "-uz", m], stderr=subprocess.DEVNULL)
    _mounts.clear()
    for p in reversed(_procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    _procs.clear()
    if not os.environ.get("HC_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)


def _on_signal(sig, frame):
    cleanup()
    sys.exit(128 + sig)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def tmpdir(tag):
    d = tempfile.mkdtemp(prefix="hcfs-%s." % tag)
    _tmpdirs.append(d)
    return d


class Mount:
    """A running hcfs: m.root, m.input, m.up, m.proc."""

    def __init__(self, work, opts="", name="mnt", extra_env=None, wait=True):
        self.work = work
        self.root = os.path.join(work, name)
        os.makedirs(self.root, exist_ok=True)
        self.data = os.path.join(work, "data")
        self.cache = os.path.join(work, "cache")
        o = "data=%s,cache=%s" % (self.data, self.cache)
        if opts:
            o += "," + opts
        self.logpath = os.path.join(work, "hcfs-%d.log" % len(_procs))
        env = dict(os.environ)
        env.update(extra_env or {})
        self.proc = subprocess.Popen([HCFS, self.root, "-f", "-o", o],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.logpath, "w"),
                                     start_new_session=True, env=env)
        _procs.append(self.proc)
        _mounts.append(self.root)
        self.input = os.path.join(self.root, "input")
        self.up = os.path.join(self.root, "upscaled")
        if wait:
            self.wait_mounted()

    def wait_mounted(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                lg = self.log()
                # A machine with /dev/fuse that still may not mount (a container without
                # CAP_SYS_ADMIN, fusermount3 not setuid) cannot run these tests at all.
                if re.search(r"(mount failed|fusermount3?:).*(not permitted|Permission denied)", lg):
                    skip("this machine may not mount FUSE filesystems: " + lg.strip())
                fail("hcfs exited with %s before mounting:\n%s" % (self.proc.returncode, lg))
            if os.path.ismount(self.root) and os.path.isdir(self.input):
                return
            time.sleep(0.05)
        fail("hcfs did not mount within %d s:\n%s" % (timeout, self.log()))

    def log(self):
        try:
            return open(self.logpath).read()
        except OSError:
            return ""

    def unmount(self, timeout=20):
        """fusermount3 -u and wait for the daemon to exit cleanly (exit status 0)."""
        subprocess.run(["fusermount3", "-u", self.root], check=False)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("hcfs did not exit within %d s of fusermount3 -u:\n%s\n%s" %
                 (timeout, self.log(), stacks(self.proc.pid)))
        check(not os.path.ismount(self.root), "still mounted after fusermount3 -u")
        return rc

    def stat(self, name="user.hc.stats"):
        v = os.getxattr(self.root, name).decode()
        return dict((k, int(x)) for k, x in (l.split() for l in v.strip().splitlines()))

    def jobs_run(self):
        return int(os.getxattr(self.root, "user.hc.jobs"))

    def state(self, rel):
        return os.getxattr(os.path.join(self.up, rel), "user.hc.state").decode()

    def wait_state(self, rel, want, timeout=60):
        end = time.time() + timeout
        s = None
        while time.time() < end:
            s = self.state(rel)
            if s in want:
                return s
            time.sleep(0.05)
        fail("%s: state %s, wanted %s within %d s" % (rel, s, want, timeout))


class Service:
    """hc-gpu-service --listen 127.0.0.1:0 --backend cpu (or $HC_TEST_SERVICE_BACKEND: cuda on
    the GPU machine), its port read from stdout."""

    def __init__(self, work, extra=()):
        require_service()
        extra = list(extra)
        self.token = None
        if "--token-file" in extra:
            self.token = open(extra[extra.index("--token-file") + 1]).readline().strip()
        self.logpath = os.path.join(work, "service-%d.log" % len(_procs))
        backend = os.environ.get("HC_TEST_SERVICE_BACKEND") or "cpu"
        self.proc = subprocess.Popen([SERVICE, "--listen", "127.0.0.1:0", "--backend", backend] +
                                     list(extra), stdout=subprocess.PIPE,
                                     stderr=open(self.logpath, "w"), start_new_session=True)
        _procs.append(self.proc)
        self.port = None
        end = time.time() + 15
        line = b""
        while time.time() < end and self.port is None:
            ch = self.proc.stdout.read1(256) if hasattr(self.proc.stdout, "read1") else \
                self.proc.stdout.read(1)
            if not ch:
                break
            line += ch
            for l in line.split(b"\n")[:-1]:
                nums = re.findall(rb"\d+", l)
                if nums and 0 < int(nums[-1]) < 65536:
                    self.port = int(nums[-1])
                    break
        if self.port is None:
            fail("hc-gpu-service printed no port:\n" + open(self.logpath).read())
        self.url = "http://127.0.0.1:%d" % self.port

    def metrics(self):
        req = urllib.request.Request(self.url + "/metrics")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        txt = urllib.request.urlopen(req, timeout=10).read().decode()
        out = {}
        for l in txt.splitlines():
            if l.startswith("#") or not l.strip():
                continue
            k, v = l.rsplit(None, 1)
            out[k] = float(v)
        return out

    def tiles(self):
        return int(self.metrics().get("hc_tiles_total", 0))

    def bytes_in(self):
        return int(self.metrics().get("hc_bytes_in_total", 0))

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def hc_upscale(src, dst, *args):
    r = subprocess.run([HC, "upscale", src, dst] + list(args), capture_output=True, text=True)
    check(r.returncode == 0, "hc upscale %s failed: %s" % (src, r.stderr))
    return open(dst, "rb").read()


def make_image(path, w=200, h=150, seed=1, mode="RGB", quality=90):
    """A random-ish photo-like image (smooth gradients plus noise) saved by Pillow."""
    import numpy as np
    from PIL import Image
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    ch = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    base = np.stack([(x * (k + 1) * 255 // max(w, 1) + y * (3 - k) * 255 // max(h, 1)) % 256
                     for k in range(ch)], axis=-1)
    noise = rs.randint(0, 40, size=(h, w, ch))
    a = ((base + noise) % 256).astype("uint8")
    if ch == 1:
        a = a[:, :, 0]
    img = Image.fromarray(a, mode)
    if path.lower().endswith((".jpg", ".jpeg")):
        img.save(path, quality=quality)
    else:
        img.save(path)
    return path


def read_with_timeout(path, timeout=60):
    """Reads a whole file in a child process (cat), so a hang fails the test instead of
    blocking it; returns (returncode, bytes, stderr)."""
    try:
        r = subprocess.run(["cat", path], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("reading %s took more than %d s" % (path, timeout))
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def run_cases(cases):
    """Runs the named case (argv[1]) or every case."""
    names = sys.argv[1:] or list(cases)
    for n in names:
        if n not in cases:
            fail("unknown case %s (have: %s)" % (n, ", ".join(cases)))
    require_fuse()
    for n in names:
        t0 = time.time()
        log("== %s" % n)
        cases[n]()
        cleanup()
        log("== %s ok (%.1f s)" % (n, time.time() - t0))
    sys.exit(0)
