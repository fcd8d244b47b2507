#!/usr/bin/env python3
"""Cross-process transport benchmark for large sensor_msgs/Image messages.

For each *mode* (Fast DDS XML profile on/off, per side) the script starts one
subscriber process and one publisher process (each its own rclpy context, so its
own DDS participant), with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a
random ``ROS_DOMAIN_ID``. The publisher then runs one *phase* per (image size,
QoS) pair, one topic per phase: it publishes rgb8 images at ``--rate`` Hz for
``--duration`` seconds (plus an uncounted warm-up), stamping ``header.stamp``
with the host clock just before ``publish()``. The subscriber takes the host
clock when its callback starts, so latency = publish() call -> Python callback,
everything in between included (Python->C conversion, CDR serialization, DDS,
deserialization, executor wake-up).

Modes: ``default`` (no profile), ``profile`` (both sides use --profile),
``pub-profile`` / ``sub-profile`` (one side only: interoperability), and
``profile+malloc`` (profile plus glibc malloc thresholds that keep multi-MB
message buffers on the heap instead of a fresh mmap() per message; see
MALLOC_ENV). Default: ``default,profile``.

The "shared-memory floor" is what rclpy itself costs for the same message:
``serialize_message`` + ``deserialize_message`` (medians), measured in a fresh
process with the same malloc settings as the children. A zero-copy transport
cannot beat it from Python, so latencies are also given as a ratio to it.

Every wait is bounded; children are always terminated (then killed); children
also die with this process (PR_SET_PDEATHSIG) and after a hard deadline. If a
child had to be killed, Fast DDS shared-memory files that appeared in /dev/shm
during the run and that no live process maps or holds open are removed.

Example (the default invocation takes about 1.5 minutes on 2 cores)::

    .venv/bin/python benchmarks/bench_transport.py --json output/bench_transport.json
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import queue
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = ROOT / "config" / "fastdds_large_images.xml"

SIZES = {"vga": (640, 480), "1080p": (1920, 1080), "tiny": (32, 32)}  # tiny: fixed-cost probe
DEFAULT_SIZES = ["vga", "1080p"]
QOS_KINDS = ("best_effort", "reliable")
# mode -> (publisher uses the profile, subscriber uses the profile, glibc malloc tuned)
MODES = {
    "default": (False, False, False),
    "profile": (True, True, False),
    "pub-profile": (True, False, False),
    "sub-profile": (False, True, False),
    "profile+malloc": (True, True, True),
}
# glibc keeps multi-MB blocks on its heap instead of mmap()ing and unmapping one per
# message (every new mapping is zero-filled page by page): same allocator for the
# floor measurement and both children of a "+malloc" mode; stripped from the others.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "134217728", "MALLOC_TRIM_THRESHOLD_": "268435456"}
MALLOC_VARS = (*MALLOC_ENV, "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
# Fast DDS 3 names its files fastdds_*, Fast DDS 2 fastrtps_*; boost named
# mutexes get a sem. prefix; data-sharing segments are fast_datasharing_*.
SHM_DIR = Path("/dev/shm")
SHM_PATTERN = re.compile(r"^(sem\.)?(fastdds_|fastrtps_|fast_datasharing_)")


# --------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list, else None."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def make_image(width: int, height: int):
    """An rgb8 Image with a deterministic non-constant pattern."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.width, msg.height = width, height
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = width * 3
    n = width * height * 3
    msg.data = array.array("B", bytes(range(256)) * (n // 256) + bytes(n % 256))
    return msg


def make_qos(kind: str, depth: int):
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
    )

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            ReliabilityPolicy.BEST_EFFORT if kind == "best_effort" else ReliabilityPolicy.RELIABLE
        ),
        durability=DurabilityPolicy.VOLATILE,
    )


def measure_floor(iters: int, sizes: list[str]) -> dict:
    """Median rclpy (de)serialization time of each image size, in ms."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    out = {}
    for name in sizes:
        msg = make_image(*SIZES[name])
        ser, de = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            raw = serialize_message(msg)
            t1 = time.perf_counter()
            deserialize_message(raw, Image)
            t2 = time.perf_counter()
            ser.append((t1 - t0) * 1e3)
            de.append((t2 - t1) * 1e3)
        s, d = statistics.median(ser), statistics.median(de)
        out[name] = {"bytes": len(raw), "ser_ms": s, "deser_ms": d, "floor_ms": s + d}
    return out


# --------------------------------------------------------------------------- children


def _child_common(spec: dict):
    """Die with the parent; hard deadline; stdin reader thread. Returns (lines, stop)."""
    try:  # Linux: SIGTERM when the parent dies, whatever the reason.
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def deadline():  # last resort if everything else failed: never outlive the budget
        time.sleep(spec["deadline_s"])
        os._exit(3)

    threading.Thread(target=deadline, daemon=True).start()
    lines: queue.Queue[str] = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            lines.put(line.strip())
        lines.put("EOF")
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    return lines, stop


def _say(*parts):
    print(*parts, flush=True)


def child_sub(spec: dict) -> int:
    lines, stop = _child_common(spec)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("bench_transport_sub_" + spec["token"])
    token = spec["token"]
    raw = spec["raw_sub"]
    received: dict[str, dict[int, int]] = {p["name"]: {} for p in spec["phases"]}
    subs = []
    for p in spec["phases"]:
        rec = received[p["name"]]

        def cb(msg, rec=rec):
            now = time.time_ns()
            if raw:  # CDR bytes: 4-byte encapsulation, then sec, nanosec, frame_id
                sec, nsec, n = struct.unpack_from("<iII", msg, 4)
                frame_id = bytes(msg[16:16 + n - 1]).decode()
            else:
                sec, nsec = msg.header.stamp.sec, msg.header.stamp.nanosec
                frame_id = msg.header.frame_id
            tok, _, seq = frame_id.partition("|")
            if tok != token:
                return  # not this run's message
            i = int(seq)
            if i >= 0:
                rec.setdefault(i, now - (sec * 1_000_000_000 + nsec))

        subs.append(node.create_subscription(
            Image, p["topic"], cb, make_qos(p["qos"], spec["depth"]), raw=raw))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        _say("READY")
        t_end = time.monotonic() + spec["match_timeout_s"]
        matched = False
        while not stop.is_set():
            if not matched:
                if all(s.get_publisher_count() >= 1 for s in subs):
                    matched = True
                    _say("MATCHED")
                elif time.monotonic() > t_end:
                    _say("MATCH_TIMEOUT")
                    matched = True  # keep receiving whatever arrives
            ex.spin_once(timeout_sec=0.05)
            try:
                if lines.get_nowait() in ("STOP", "EOF"):
                    break
            except queue.Empty:
                pass
        # Whatever is already queued in the reader gets taken before reporting.
        t_drain = time.monotonic() + 0.3
        while time.monotonic() < t_drain:
            ex.spin_once(timeout_sec=0.02)
        result = {
            name: {"n": len(rec), "seqs": sorted(rec), "lat_ns": [rec[k] for k in sorted(rec)]}
            for name, rec in received.items()
        }
        _say("RESULT " + json.dumps(result))
    finally:
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def child_pub(spec: dict) -> int:
    lines, stop = _child_common(spec)
    import rclpy
    from rclpy.duration import Duration
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("bench_transport_pub_" + spec["token"])
    token = spec["token"]
    pubs = {
        p["name"]: node.create_publisher(Image, p["topic"], make_qos(p["qos"], spec["depth"]))
        for p in spec["phases"]
    }
    images = {name: make_image(*SIZES[name]) for name in {p["size"] for p in spec["phases"]}}
    results = {}
    try:
        _say("READY")
        t_end = time.monotonic() + spec["match_timeout_s"]
        while not all(p.get_subscription_count() >= 1 for p in pubs.values()):
            if time.monotonic() > t_end or stop.is_set():
                _say("MATCH_TIMEOUT")
                break
            time.sleep(0.05)
        else:
            _say("MATCHED")
        # Wait for the parent's GO (it waits for the subscriber side to match too).
        t_go = time.monotonic() + spec["match_timeout_s"] + 10.0
        while not stop.is_set():
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > t_go:
                    stop.set()
                continue
            if line == "GO":
                break
            if line in ("STOP", "EOF"):
                stop.set()
        period = 1.0 / spec["rate"]
        n_warm = int(round(spec["warmup_s"] * spec["rate"]))
        n_count = int(round(spec["duration_s"] * spec["rate"]))
        for p in spec["phases"]:
            if stop.is_set():
                break
            pub, msg = pubs[p["name"]], images[p["size"]]
            sent, errors, late, call_ms = 0, 0, 0, []
            t0 = time.perf_counter()
            for k, i in enumerate(range(-n_warm, n_count)):
                if stop.is_set():
                    break
                delay = t0 + k * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -period:
                    late += 1  # publisher could not keep the rate
                msg.header.frame_id = f"{token}|{i}"
                now = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
                c0 = time.perf_counter()
                try:
                    pub.publish(msg)
                except Exception:  # RCLError "Failed to publish" under back-pressure
                    errors += i >= 0
                    continue
                if i >= 0:
                    sent += 1
                    call_ms.append((time.perf_counter() - c0) * 1e3)
            if p["qos"] == "reliable":
                pub.wait_for_all_acked(Duration(seconds=spec["drain_s"]))
            time.sleep(spec["drain_s"])
            results[p["name"]] = {
                "sent": sent,
                "publish_errors": errors,
                "late_ticks": late,
                "publish_call_ms_p50": percentile(call_ms, 50),
                "publish_call_ms_p95": percentile(call_ms, 95),
            }
        _say("RESULT " + json.dumps(results))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# --------------------------------------------------------------------------- parent


class Child:
    """A child process with a line queue on its stdout and stderr in a temp file."""

    def __init__(self, role: str, spec: dict, env: dict, workdir: str):
        self.role = role
        self.err = tempfile.NamedTemporaryFile(
            mode="w+", prefix=f"bench_{role}_", suffix=".log", dir=workdir, delete=False
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()),
             "--child", role, "--spec", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=env,
            cwd=workdir,  # no DEFAULT_FASTDDS_PROFILES.xml from the caller's cwd
            text=True,
            start_new_session=True,  # Ctrl-C goes to us only; we stop children ourselves
        )
        self.killed = False
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("EOF")

    def expect(self, words: tuple[str, ...], timeout: float) -> str:
        """Next protocol line starting with one of words; TimeoutError/RuntimeError otherwise."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.role}: no {'/'.join(words)} within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line == "EOF":
                try:
                    self.proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
                raise RuntimeError(f"{self.role} exited (rc={self.proc.poll()}) before {words}")
            if line.startswith(words):
                return line

    def send(self, line: str):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def stop(self, grace: float = 5.0):
        """STOP, then SIGTERM, then SIGKILL; every step bounded."""
        if self.proc.poll() is None:
            self.send("STOP")
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    self.proc.kill()
                    self.proc.wait(timeout=grace)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass
        self.err.close()

    def stderr_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(Path(self.err.name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def shm_snapshot() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.iterdir() if SHM_PATTERN.match(p.name)}
    except OSError:
        return set()


def shm_in_use() -> set[str]:
    """Names under /dev/shm that a live process maps (segments, ports, named mutexes) or
    holds open (the *_el lock files Fast DDS flocks while the owner lives).

    Processes whose /proc entries cannot be read are skipped: as root that is only the
    sandbox's init here; as a normal user it is other users' processes, which cannot
    share Fast DDS SHM with ours anyway (the files are created 0644)."""
    used = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i + len("/dev/shm/"):].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/dev/shm/"):
                    used.add(target[9:].split()[0])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return used


def clean_shm(before: set[str]) -> list[str]:
    """Remove Fast DDS files that appeared since `before` and that no live process uses.

    Called only after one of our children was killed (a clean exit removes its files)."""
    new = shm_snapshot() - before
    if not new:
        return []
    used = shm_in_use()
    removed = []
    for name in sorted(new - used):
        try:
            (SHM_DIR / name).unlink()
            removed.append(name)
        except OSError:
            pass
    return removed


def child_env(domain_id: int, profile: Path | None, malloc_tuned: bool) -> dict:
    env = dict(os.environ)
    for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_STATIC_PEERS",
              "ROS_LOCALHOST_ONLY", "SKIP_DEFAULT_XML_FILE", *MALLOC_VARS):
        env.pop(k, None)
    if malloc_tuned:
        env.update(MALLOC_ENV)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    else:
        env["SKIP_DEFAULT_XML_FILE"] = "1"
    return env


def run_mode(mode: str, domain_id: int, phases: list[dict], args, workdir: str) -> dict:
    pub_prof, sub_prof, tuned = MODES[mode]
    token = uuid.uuid4().hex[:10]
    for p in phases:
        p["topic"] = f"/bench_transport_{token}/img_{p['name']}"
    # warm-up + counted + (reliable) wait_for_all_acked + drain sleep
    per_phase_s = args.warmup + args.duration + 2 * args.drain + 0.5
    budget = 20.0 + args.match_timeout + len(phases) * per_phase_s
    spec = {
        "token": token,
        "phases": phases,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "drain_s": args.drain,
        "depth": args.depth,
        "match_timeout_s": args.match_timeout,
        "raw_sub": args.raw_sub,
        "deadline_s": budget + 30.0,
    }
    out = {"mode": mode, "domain_id": domain_id, "error": None, "matched": False}
    kids: list[Child] = []
    try:
        sub = Child("sub", spec,
                    child_env(domain_id, args.profile if sub_prof else None, tuned), workdir)
        kids.append(sub)
        pub = Child("pub", spec,
                    child_env(domain_id, args.profile if pub_prof else None, tuned), workdir)
        kids.append(pub)
        startup = 30.0 + args.match_timeout
        a = pub.expect(("MATCHED", "MATCH_TIMEOUT"), startup)
        b = sub.expect(("MATCHED", "MATCH_TIMEOUT"), startup)
        out["matched"] = a == b == "MATCHED"
        if not out["matched"]:
            out["error"] = f"discovery: pub {a}, sub {b} after {args.match_timeout:.0f} s"
        time.sleep(0.3)
        pub.send("GO")
        pub_res = json.loads(pub.expect(("RESULT",), budget)[len("RESULT "):])
        sub.send("STOP")
        sub_res = json.loads(sub.expect(("RESULT",), 15.0)[len("RESULT "):])
        out["pub"], out["sub"] = pub_res, sub_res
    except (TimeoutError, RuntimeError) as e:
        out["error"] = str(e)
        for k in kids:
            tail = k.stderr_tail()
            if tail:
                print(f"[bench] {mode}/{k.role} stderr:\n{tail}", file=sys.stderr)
    finally:
        for k in kids:
            k.stop()
        out["killed"] = [k.role for k in kids if k.killed]
        out["exit_codes"] = {k.role: k.proc.returncode for k in kids}
    return out


def run_floor(args, tuned: bool) -> dict:
    spec = {"iters": args.floor_iters, "sizes": args.sizes}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "floor",
         "--spec", json.dumps(spec)],
        env=child_env(0, None, tuned), capture_output=True, text=True, timeout=120,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"floor measurement failed (rc={proc.returncode}): {proc.stderr[-500:]}")


def summarize(mode_out: dict, phases: list[dict], floor: dict) -> list[dict]:
    rows = []
    for p in phases:
        row = {"mode": mode_out["mode"], "size": p["size"], "qos": p["qos"],
               "error": mode_out["error"]}
        pr = (mode_out.get("pub") or {}).get(p["name"])
        sr = (mode_out.get("sub") or {}).get(p["name"])
        if pr is not None and sr is not None:
            lat = [v / 1e6 for v in sr["lat_ns"]]
            sent, recv = pr["sent"], sr["n"]
            f = floor[p["size"]]["floor_ms"]
            p50, p95 = percentile(lat, 50), percentile(lat, 95)
            row.update(
                sent=sent,
                received=recv,
                loss_pct=100.0 * (sent - recv) / sent if sent else None,
                lat_p50_ms=p50,
                lat_p95_ms=p95,
                lat_max_ms=max(lat) if lat else None,
                floor_ms=f,
                p50_over_floor=p50 / f if p50 is not None else None,
                p95_over_floor=p95 / f if p95 is not None else None,
                publish_call_ms_p50=pr["publish_call_ms_p50"],
                publish_errors=pr["publish_errors"],
                late_ticks=pr["late_ticks"],
            )
        rows.append(row)
    return rows


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def _line(cells, widths) -> str:
    """First three columns left-aligned, the numbers right-aligned."""
    return "  ".join(c.rjust(w) if i > 2 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def print_table(rows: list[dict], floors: dict):
    print()
    print("shared-memory floor (rclpy serialize + deserialize, median, fresh process):")
    for tuned, floor in floors.items():
        for name, f in floor.items():
            label = "tuned malloc" if tuned else "default malloc"
            print(f"  {label:14s}  {name:6s} {f['bytes']:>9d} B"
                  f"  ser {f['ser_ms']:.2f} ms + deser {f['deser_ms']:.2f} ms"
                  f" = {f['floor_ms']:.2f} ms")
    hdr = ("mode", "size", "qos", "sent", "recv", "loss%", "p50ms", "p95ms", "maxms",
           "p50/floor", "p95/floor", "pub()ms")
    widths = (14, 5, 11, 5, 5, 6, 7, 7, 7, 9, 9, 7)
    print()
    print(_line(hdr, widths))
    for r in rows:
        if "sent" not in r:
            print(f"{r['mode']:14s}  {r['size']:5s}  {r['qos']:11s}  FAILED: {r['error']}")
            continue
        cells = (
            r["mode"], r["size"], r["qos"], str(r["sent"]), str(r["received"]),
            fmt(r["loss_pct"]), fmt(r["lat_p50_ms"], ".2f"), fmt(r["lat_p95_ms"], ".2f"),
            fmt(r["lat_max_ms"], ".1f"), fmt(r["p50_over_floor"], ".2f") + "x",
            fmt(r["p95_over_floor"], ".2f") + "x", fmt(r["publish_call_ms_p50"], ".2f"),
        )
        print(_line(cells, widths))
    print()


def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["ros-rclpy"] = version("ros-rclpy")
        info["ros-fastdds"] = version("ros-fastdds")
        info["ros-rmw-fastrtps-cpp"] = version("ros-rmw-fastrtps-cpp")
    except Exception:
        pass
    return info


def csv_list(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (got {text!r})")
        return items

    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="counted seconds per phase")
    ap.add_argument("--rate", type=float, default=30.0, help="publish rate, Hz")
    ap.add_argument("--sizes", type=csv_list(SIZES), default=DEFAULT_SIZES,
                    help="comma list of "
                    + ", ".join(f"{k} ({w}x{h})" for k, (w, h) in SIZES.items()))
    ap.add_argument("--qos", type=csv_list(QOS_KINDS), default=list(QOS_KINDS), help="comma list")
    ap.add_argument("--modes", type=csv_list(MODES), default=["default", "profile"],
                    help="comma list: default (no profile), profile (both sides), "
                    "pub-profile, sub-profile, profile+malloc")
    ap.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="Fast DDS XML profile")
    ap.add_argument("--depth", type=int, default=5, help="KEEP_LAST history depth of both QoS")
    ap.add_argument("--warmup", type=float, default=0.5, help="uncounted seconds before each phase")
    ap.add_argument("--drain", type=float, default=0.5, help="seconds after each phase")
    ap.add_argument("--match-timeout", type=float, default=15.0, help="discovery timeout, s")
    ap.add_argument("--raw-sub", action="store_true",
                    help="subscriber takes CDR bytes (raw=True): latency without the Python "
                    "deserialization, i.e. transport only")
    ap.add_argument("--floor-iters", type=int, default=30, help="(de)serialization repetitions")
    ap.add_argument("--seed", type=int, default=None, help="seed for the random domain ids")
    ap.add_argument("--json", metavar="OUT", type=Path, help="also write the results as JSON")
    ap.add_argument("--child", choices=("pub", "sub", "floor"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.spec)
        if args.child == "floor":
            _say("RESULT " + json.dumps(measure_floor(spec["iters"], spec["sizes"])))
            return 0
        return child_pub(spec) if args.child == "pub" else child_sub(spec)

    if any(MODES[m][0] or MODES[m][1] for m in args.modes) and not args.profile.is_file():
        ap.error(f"profile not found: {args.profile}")
    args.profile = args.profile.resolve()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the children and clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    domain_ids = rng.sample(range(0, 102), len(args.modes))
    shm_before = shm_snapshot()

    floors = {}  # malloc tuned? -> floor, measured in a fresh process with the children's env
    for tuned in sorted({MODES[m][2] for m in args.modes}):
        print(f"[bench] measuring the (de)serialization floor ({args.floor_iters} iterations, "
              f"{'tuned' if tuned else 'default'} malloc)...", file=sys.stderr)
        floors[tuned] = run_floor(args, tuned)

    rows, raw, killed_any, interrupted = [], [], False, False
    with tempfile.TemporaryDirectory(prefix="bench_transport_") as workdir:
        try:
            for mode, dom in zip(args.modes, domain_ids):
                phases = [
                    {"name": f"{size}_{qos}", "size": size, "qos": qos}
                    for size in args.sizes
                    for qos in args.qos
                ]
                print(f"[bench] mode {mode}: domain {dom}, {len(phases)} phases of "
                      f"{args.warmup + args.duration:.1f} s...", file=sys.stderr)
                out = run_mode(mode, dom, phases, args, workdir)
                killed_any |= bool(out["killed"]) or any(
                    rc not in (0, None) for rc in out["exit_codes"].values()
                )
                if out["error"]:
                    print(f"[bench] mode {mode}: {out['error']}", file=sys.stderr)
                raw.append({k: v for k, v in out.items() if k not in ("pub", "sub")})
                rows.extend(summarize(out, phases, floors[MODES[mode][2]]))
        except (KeyboardInterrupt, SystemExit):
            interrupted = True  # run_mode's finally has already stopped the children
        finally:
            removed = clean_shm(shm_before) if killed_any or interrupted else []
            if removed:
                print(f"[bench] removed {len(removed)} leftover /dev/shm file(s): {removed}",
                      file=sys.stderr)
    if interrupted:
        print("[bench] interrupted", file=sys.stderr)
        return 130

    print_table(rows, floors)
    total = time.monotonic() - t_start
    load_after = os.getloadavg()
    print(f"total {total:.0f} s; ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, domain ids "
          f"{dict(zip(args.modes, domain_ids))}; profile {args.profile}")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
          f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}"
          f" on {os.cpu_count()} CPUs (other work on the host inflates p95/max)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine_info(),
            "settings": {
                "duration_s": args.duration, "rate_hz": args.rate, "depth": args.depth,
                "warmup_s": args.warmup, "drain_s": args.drain, "profile": str(args.profile),
                "modes": args.modes, "sizes": args.sizes, "qos": args.qos,
                "raw_sub": args.raw_sub,
            },
            "floor": {("tuned_malloc" if k else "default_malloc"): v for k, v in floors.items()},
            "malloc_env_of_tuned_modes": MALLOC_ENV,
            "rows": rows,
            "runs": raw,
            "shm_removed": removed,
            "total_s": total,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0 if all("sent" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
