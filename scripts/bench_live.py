#!/usr/bin/env python3
"""Live-stream scaling: `make bench-live` (or `python3 scripts/bench_live.py`).

Serves 1, 2, 4 and 8 RTSP cameras of real 720p25 H.264 video (build/media/live_720p.mp4, the
demo clip looped, through Debian's GStreamer RTSP server: scripts/rtsp_server.py) and runs vigil
on them with both branches on (I3D actions, MTCNN + dlib faces with a one-person gallery). After
a warm-up it measures a fixed window from vigil's own /metrics and from /proc:

- decoded fps per stream (the camera delivers 25),
- action: clips classified per second per stream, and the share of clips dropped because the
  classifier was busy (live policy: drop, never queue without bound),
- faces: frames examined per second per stream (the face sampler keeps 5 of every 25),
- frames dropped at full queues,
- capture-to-result latency of the action branch (p50, p99 from the histogram),
- CPU (cores busy, whole process) and resident memory (whole process and per stream).

Writes docs/benchmarks-live.md with the machine's description. Standard library only. The
numbers are a report, not a pass/fail: on two cores eight cameras are far beyond real time for
I3D, and the point is that vigil degrades by dropping (counted) rather than by falling behind.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
LIVE = BUILD / "media" / "live_720p.mp4"
OUT = ROOT / "docs" / "benchmarks-live.md"


def say(msg):
    print(f"bench-live: {msg}", file=sys.stderr, flush=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vigil_binary():
    if os.environ.get("VIGIL_BIN"):
        return Path(os.environ["VIGIL_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    p = (target if target.is_absolute() else ROOT / target) / "release" / "vigil"
    if not p.exists():
        sys.exit(f"bench-live: {p} is missing: run `make build` first")
    return p


def scrape(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        return r.read().decode()


SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def parse(text):
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for (n, lab), v in samples.items():
        if n != name:
            continue
        if all(f'{k}="{val}"' in lab for k, val in labels.items()):
            total += v
    return total


def quantile(before, after, q, stage="action"):
    buckets = []
    for (n, lab), v in after.items():
        if n == "vigil_capture_latency_seconds_bucket" and f'stage="{stage}"' in lab:
            le = re.search(r'le="([^"]+)"', lab).group(1)
            le = float("inf") if le == "+Inf" else float(le)
            buckets.append((le, v - before.get((n, lab), 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return float("nan")
    for le, n in buckets:
        if n >= q * total:
            return le
    return float("inf")


def rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def thread_cpu(pid):
    """CPU seconds of each of the process's threads, by (thread id, name)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (t / "stat").read_text()
        except OSError:  # the thread ended between listing and reading
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[(t.name, name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cores_by_thread(before, after, seconds):
    """Cores busy per thread name over the window, a stream's or lane's number folded into one
    name (src-cam1, src-cam2 -> src-cam#), busiest first."""
    groups = {}
    for key, cpu in after.items():
        name = re.sub(r"\d+$", "#", key[1])
        groups[name] = groups.get(name, 0.0) + (cpu - before.get(key, 0.0)) / seconds
    return dict(sorted(((k, v) for k, v in groups.items() if v >= 0.005), key=lambda kv: -kv[1]))


def config(n, rtsp_port, metrics_port, gallery, events):
    streams = "".join(
        f"  - {{id: cam{i}, url: 'rtsp://127.0.0.1:{rtsp_port}/cam{i}'}}\n" for i in range(1, n + 1)
    )
    m = BUILD / "models"
    return f"""streams:
{streams}action:
  model:
    path: {m / 'i3d_kinetics400.onnx'}
    labels: {m / 'kinetics400_labels.txt'}
faces:
  enabled: true
  sample_fps: 5
  detector:
    type: mtcnn
    pnet: {m / 'mtcnn_pnet.onnx'}
    rnet: {m / 'mtcnn_rnet.onnx'}
    onet: {m / 'mtcnn_onet.onnx'}
  embedder:
    path: {m / 'dlib_resnet.onnx'}
gallery:
  path: {gallery}
sinks:
  - type: file
    path: {events}
metrics:
  listen: 127.0.0.1:{metrics_port}
runtime:
  onnxruntime_library: {BUILD / 'lib' / 'libonnxruntime.so'}
"""


def measure(vigil, n, warmup, window, workdir):
    rtsp_port = free_port()
    mounts = []
    for i in range(1, n + 1):
        mounts += ["--mount", f"cam{i}={LIVE}"]
    server = subprocess.Popen(
        ["/usr/bin/python3", str(ROOT / "scripts" / "rtsp_server.py"), "--port", str(rtsp_port)]
        + mounts,
        stdout=subprocess.PIPE,
        text=True,
    )
    if not server.stdout.readline().startswith("ready"):
        sys.exit("bench-live: the RTSP server did not start")
    metrics_port = free_port()
    cfg = workdir / f"live{n}.yaml"
    gallery = workdir / "gallery.json"
    cfg.write_text(config(n, rtsp_port, metrics_port, gallery, workdir / f"events{n}.jsonl"))
    if not gallery.exists():
        subprocess.run(
            [str(vigil), "gallery", "enroll", "--config", str(cfg), "--name", "Barack Obama",
             str(BUILD / "media" / "faces" / "obama.jpg")],
            check=True, capture_output=True,
        )
    log = open(workdir / f"vigil{n}.log", "w")
    proc = subprocess.Popen([str(vigil), "run", "--no-progress", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=log)
    addr = f"127.0.0.1:{metrics_port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                s = parse(scrape(addr))
                if all(value(s, "vigil_stream_up", stream=f"cam{i}") == 1 for i in range(1, n + 1)):
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"bench-live: vigil did not connect to {n} cameras (see {log.name})")
            time.sleep(0.5)
        time.sleep(warmup)
        t0, c0, a = time.time(), cpu_seconds(proc.pid), parse(scrape(addr))
        threads0 = thread_cpu(proc.pid)
        rss = []
        while time.time() < t0 + window:
            rss.append(rss_mib(proc.pid))
            time.sleep(1)
        t1, c1, b = time.time(), cpu_seconds(proc.pid), parse(scrape(addr))
        threads1 = thread_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.kill()
        server.wait()
    dt = t1 - t0
    d = lambda name, **l: value(b, name, **l) - value(a, name, **l)  # noqa: E731
    decoded = d("vigil_frames_decoded_total") / dt / n
    clips = d("vigil_clips_classified_total") / dt / n
    busy = d("vigil_clips_dropped_total", reason="classifier_busy")
    made = d("vigil_clips_classified_total") + busy
    face_sampled = d("vigil_frames_sampled_total", stage="faces")
    face_dropped = d("vigil_frames_dropped_total", stage="faces", reason="queue_full")
    frame_drops = d("vigil_frames_dropped_total", reason="queue_full") - face_dropped
    cams = [f"cam{i}" for i in range(1, n + 1)]
    face_per_cam = [(d("vigil_frames_sampled_total", stage="faces", stream=c)
                     - d("vigil_frames_dropped_total", stage="faces", reason="queue_full", stream=c)) / dt for c in cams]
    return {
        "streams": n,
        "decoded_fps_per_stream": decoded,
        "clips_per_s_per_stream": clips,
        "clips_dropped_share": busy / made if made else 0.0,
        "face_fps_per_stream": (face_sampled - face_dropped) / dt / n,
        "face_frames_dropped_share": face_dropped / face_sampled if face_sampled else 0.0,
        "source_frames_dropped_per_s": frame_drops / dt,
        "latency_p50_s": quantile(a, b, 0.5),
        "latency_p99_s": quantile(a, b, 0.99),
        "face_latency_p99_s": quantile(a, b, 0.99, stage="faces"),
        "clips_per_s_per_camera": [d("vigil_clips_classified_total", stream=c) / dt for c in cams],
        "face_fps_per_camera": face_per_cam,
        "cpu_cores": (c1 - c0) / dt,
        "cores_by_thread": cores_by_thread(threads0, threads1, dt),
        "rss_mib": max(rss),
        "rss_mib_per_stream": max(rss) / n,
        "window_s": dt,
    }


def machine():
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, {platform.platform()}"


def reading(rows):
    """What the rows say, in sentences made from their own figures."""
    first, last = rows[0], rows[-1]
    n1, nl = first["streams"], last["streams"]
    tot = lambda r, k: r[k] * r["streams"]
    out = []
    drops = [r for r in rows if r["source_frames_dropped_per_s"] > 0.05]
    if drops:
        out.append("Decoding fell behind (source frames dropped) with "
                   + ", ".join(f"{r['streams']} camera(s) ({r['source_frames_dropped_per_s']:.1f}/s)" for r in drops) + ".")
    else:
        out.append(f"No source frame was dropped in any row: decoding kept up with every camera "
                   f"({min(r['decoded_fps_per_stream'] for r in rows):.1f} decoded fps per stream at the least).")
    c1, cl = tot(first, "clips_per_s_per_stream"), tot(last, "clips_per_s_per_stream")
    f1, fl = tot(first, "face_fps_per_stream"), tot(last, "face_fps_per_stream")
    if n1 != nl:
        out.append(f"Total classifier throughput: {c1:.2f} clips/s with {n1} camera(s), {cl:.2f} with {nl} "
                   f"({cl / c1:.2f}x); total face frames: {f1:.1f}/s and {fl:.1f}/s ({fl / f1 if f1 else 0:.2f}x).")
    out.append(f"Clips dropped because the classifier was busy: {100 * first['clips_dropped_share']:.0f}% with "
               f"{n1} camera(s), {100 * last['clips_dropped_share']:.0f}% with {nl}; face frames dropped: "
               f"{100 * first['face_frames_dropped_share']:.0f}% and {100 * last['face_frames_dropped_share']:.0f}%.")
    out.append(f"Action latency p99 (capture to scores, bucket upper bound): <= {first['latency_p99_s']:g} s with {n1}, "
               f"<= {last['latency_p99_s']:g} s with {nl}. Resident memory: {first['rss_mib']:.0f} MiB with {n1}, "
               f"{last['rss_mib']:.0f} MiB with {nl}"
               + (f" ({(last['rss_mib'] - first['rss_mib']) / (nl - n1):.0f} MiB per added camera)." if nl != n1 else "."))
    for r in rows:
        if r.get("cores_by_thread"):
            out.append(f"CPU by thread with {r['streams']} camera(s), cores: "
                       + ", ".join(f"{k} {v:.2f}" for k, v in r["cores_by_thread"].items()) + ".")
    if any(r.get("cores_by_thread") for r in rows):
        out.append("Threads (a helper thread takes the name of the thread that starts it): src-* read and decode a "
                   "camera (with FFmpeg's decoding threads) and convert its frames to BGR; act-* cut and "
                   "prepare its clips; face-<camera> picks its frames for the face branch; classifier runs I3D; "
                   "faces runs the face worker (detection, embedding) and face-lane* the detector's other "
                   "lanes; vigil is the main thread's name, which ONNX Runtime's intra-op pools (started "
                   "when the models load) carry.")
    return "\n".join(out)


def render(rows, warmup, window):
    rows = [r for r in rows if r.get("pass", 1) == 1]
    head = (
        "| streams | decoded fps/stream | clips/s/stream | clips dropped | face fps/stream "
        "| face frames dropped | source drops/s | latency p50 / p99 | CPU cores | RSS | RSS/stream |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['streams']} | {r['decoded_fps_per_stream']:.1f} | {r['clips_per_s_per_stream']:.2f} "
        f"| {100 * r['clips_dropped_share']:.0f}% | {r['face_fps_per_stream']:.1f} "
        f"| {100 * r['face_frames_dropped_share']:.0f}% | {r['source_frames_dropped_per_s']:.1f} "
        f"| <= {r['latency_p50_s']:g} s / <= {r['latency_p99_s']:g} s | {r['cpu_cores']:.2f} "
        f"| {r['rss_mib']:.0f} MiB | {r['rss_mib_per_stream']:.0f} MiB |\n"
        for r in rows
    )
    total_first = rows[0]["clips_per_s_per_stream"] * rows[0]["streams"]
    total_last = rows[-1]["clips_per_s_per_stream"] * rows[-1]["streams"]
    last_n = rows[-1]["streams"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = f"""# Live streams: scaling

Written by `make bench-live` (scripts/bench_live.py) on {stamp}.
Machine: {machine()}.

Each row: N RTSP cameras of real 720p25 H.264 (the demo clip looped, served without re-encoding
by Debian's GStreamer RTSP server on loopback), vigil with the action branch (I3D, 32-frame
clips every 16 frames, the default batch size) and the face branch (MTCNN + dlib ResNet, 5 frames/s
per stream) on. {warmup:.0f} s of warm-up, then {window:.0f} s measured from vigil's
own `/metrics` and `/proc`. Latency is capture to scores for the action branch, read from the
histogram's buckets (upper bounds).

{head}{body}
{reading(rows)}
"""
    return doc, head + body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    ap.add_argument("--window", type=float, default=90.0, help="seconds measured (default 90: with 8 cameras "
                    "about 7 classified clips per camera, enough for the least-served camera's share)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--rows", help="write the document from rows saved by --json (no measuring)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="passes; after the first (every --streams count) only the fewest and most cameras "
                         "are measured again (default 1)")
    args = ap.parse_args()
    if args.rows:
        rows = json.loads(Path(args.rows).read_text())
        doc, table = render(rows, args.warmup, args.window)
        Path(args.out).write_text(doc)
        print(table)
        return
    if not LIVE.exists():
        sys.exit(f"bench-live: {LIVE} is missing: run `make setup` first")
    vigil = vigil_binary()
    rows = []
    counts = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(1, max(1, args.repeat) + 1):
            for n in (counts if p == 1 else sorted({min(counts), max(counts)})):
                say(f"pass {p}: {n} stream(s): {args.warmup:.0f} s warm-up, {args.window:.0f} s measured")
                rows.append(dict(measure(vigil, n, args.warmup, args.window, Path(tmp)), **{"pass": p}))
                say(json.dumps(rows[-1]))
    doc, table = render(rows, args.warmup, args.window)
    Path(args.out).write_text(doc)
    say(f"wrote {args.out}")
    print(table)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
