#!/usr/bin/env python3
"""vigil against its peers, side by side in one run: `make bench` (or `python3 scripts/bench.py`).

1. Action classifier: `vigil bench classify` against Python onnxruntime (same release as
   vigil's library) on the same model, the same input tensor (dumped by vigil) and the same
   intra-op thread count. Target: vigil's clips/s at least 0.95 x the peer's.
2. Decode: `vigil bench decode FILE` (OpenCV's FFmpeg backend, frames converted to BGR) against
   `ffmpeg -threads N -i FILE -pix_fmt bgr24 -f null -` on the demo 720p file (as is, and looped
   for a steady rate) and on any real clip under ../shared/media. Target: at least 0.9 x
   ffmpeg's frames/s.
3. Faces: vigil's face path over every frame of the Hamilton clip (../shared/media) against what
   a face_recognition user would write (scripts/face_baseline.py: dlib's HOG detector, 5-point
   landmarks and ResNet in Python), same clip, same enrolled photos (scripts/bench_faces.py).
   Target: at least 10 x the baseline's frames/s, naming at least the people it names.

4. The rest (scripts/bench_extra.py): a 1080p decode row, the whole pipeline against its slowest
   stage (target 0.9), the int8 I3D against fp32 (when `make int8` built it), the gallery's HNSW
   index at 10k/100k/1M synthetic identities (p99 under 5 ms, recall@1 at least 0.99), 1/2/4/8
   live cameras (scripts/bench_live.py) and, with --soak-minutes, a memory soak.
5. The motion gate (scripts/bench_motion.py): inference calls on the still-action-still clip with
   the gate off against on, whole processes (target: at least 5x fewer gated, the same events).

Prints a markdown table and writes it, with the machine description, to docs/benchmarks.md.
Exits 0 when every measurement ran (even when a target is missed: this is a report), 1 when
something failed to run or a sanity check failed (top-1 class or frame counts differ between
the sides), 2 on a usage error.

The driver uses the standard library only. The peer runs scripts/bench_peer_ort.py in its own
venv, ${VIGIL_CACHE:-~/.cache/vigil}/bench-venv, created on first use and kept while the pinned
requirements below don't change.

The machine may be shared (another build or test run). Every sample is therefore taken only
once the CPUs are quiet (bounded by --max-wait), the CPU time other processes used during it is
recorded, a sample they disturbed is taken again while the wait budget lasts, and the two sides
alternate so that slow drifts hit both equally.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_action  # noqa: E402
import bench_extra  # noqa: E402
import bench_motion  # noqa: E402

from bench_extra import DEMO_VIDEO, LABELS, MODEL, ORT_LIBRARY, ROOT  # noqa: E402
SHARED_MEDIA = ROOT.parent / "shared" / "media"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}
PEER_SCRIPT = ROOT / "scripts" / "bench_peer_ort.py"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"

# The peer's venv. onnxruntime must be the release whose library vigil loads (models/manifest.yaml
# pins it); numpy matches models/requirements.txt; OpenCV decodes for the Python loop (a release
# built against numpy 2).
PEER_REQUIREMENTS = ["onnxruntime==1.31.1", "numpy==2.4.6", "opencv-python-headless==4.13.0.92"]

CLASSIFY_TARGET = 0.95
DECODE_TARGET = 0.90
THREADS = 2  # intra-op threads on both classifier sides

# Other processes using more than this many cores make the machine "busy": wait before a
# sample, and take a sample again when they averaged more than NOISY during it.
QUIET = 0.2
NOISY = 0.3
RETAKES = 2  # at most this many retakes per sample


def fail(msg):
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- the machine and what else runs on it -----------------------------------------------------

def read_text(path, default=""):
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return default


def machine_description(vigil, built):
    cpuinfo = read_text("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", read_text("/proc/meminfo"), re.M)
    os_name = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', read_text("/etc/os-release"), re.M)
    ffmpeg = run_text(["ffmpeg", "-hide_banner", "-version"]).split("\n", 1)[0]
    opencv = run_text(["pkg-config", "--modversion", "opencv4"]).strip() or "unknown"
    commit = run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    if run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"]).strip():
        commit += " + uncommitted changes in src/"
    return {
        "CPU": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "RAM": f"{int(mem.group(1)) / 1024 ** 2:.1f} GiB" if mem else "unknown",
        "OS": f"{os_name.group(1) if os_name else platform.system()}, kernel {platform.release()}",
        "ONNX Runtime": "",  # filled in once the peer has reported its version
        "FFmpeg": ffmpeg.replace("ffmpeg version ", "").split(" Copyright")[0] + f" (OpenCV {opencv} uses its libraries)",
        "vigil": f"{vigil}, built {built} (checkout at commit {commit})",
        "Python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_text(cmd):
    """stdout of a small informational command, or '' when it can't run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def busy_cpu_seconds():
    """CPU seconds all CPUs spent busy since boot (/proc/stat), or None off Linux."""
    fields = read_text("/proc/stat").split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ForeignCpu:
    """Average cores that other processes kept busy between start and stop."""

    def __init__(self):
        self.wall, self.busy, self.own = time.monotonic(), busy_cpu_seconds(), own_cpu_seconds()

    def cores(self):
        busy = busy_cpu_seconds()
        if busy is None or self.busy is None:
            return 0.0
        wall = max(time.monotonic() - self.wall, 1e-3)
        return max(0.0, (busy - self.busy) - (own_cpu_seconds() - self.own)) / wall


def busy_processes(window=1.0):
    """Other processes using over 20% of a core during `window` seconds: ['rustc 95%', ...]."""
    def snapshot():
        cpu = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            # comm is in parentheses and may contain spaces; utime, stime follow at 14, 15.
            name = text[text.index("(") + 1:text.rindex(")")]
            rest = text[text.rindex(")") + 2:].split()
            cpu[stat.parent.name] = (name, int(rest[11]) + int(rest[12]))
        return cpu

    before = snapshot()
    time.sleep(window)
    after = snapshot()
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for pid, (name, ticks) in after.items():
        if pid == str(os.getpid()) or pid not in before:
            continue
        share = (ticks - before[pid][1]) / tick / window
        if share > 0.2:
            found.append((share, name))
    return [f"{name} {share:.0%}" for share, name in sorted(found, reverse=True)]


@dataclass
class Sampler:
    """Takes samples on a quiet machine, within a total budget of waiting and retaking."""

    max_wait: float
    waited: float = 0.0
    retaken: dict = field(default_factory=dict)

    def budget_left(self):
        return self.max_wait - self.waited

    def wait_for_quiet(self):
        started = time.monotonic()
        while self.budget_left() - (time.monotonic() - started) > 0:
            meter = ForeignCpu()
            time.sleep(0.5)
            if meter.cores() < QUIET:
                break
        self.waited += time.monotonic() - started

    def take(self, side, measure):
        """Runs `measure()` (returns a dict) once the machine is quiet; adds `foreign_cores`."""
        for attempt in range(RETAKES + 1):
            self.wait_for_quiet()
            meter = ForeignCpu()
            started = time.monotonic()
            result = measure()
            result["foreign_cores"] = meter.cores()
            if result["foreign_cores"] <= NOISY or self.budget_left() <= 0 or attempt == RETAKES:
                return result
            # Disturbed: the time it took counts against the budget, so this cannot loop forever.
            self.waited += time.monotonic() - started
            self.retaken[side] = self.retaken.get(side, 0) + 1
            say(f"  {side}: other processes used {result['foreign_cores']:.2f} cores, taking it again")


# --- running things ---------------------------------------------------------------------------

def run_json(cmd, what):
    """Runs `cmd`, returns (its stdout's last line as JSON, wall seconds)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        fail(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), wall
    except (ValueError, IndexError):
        fail(f"{what} printed no JSON: {proc.stdout[-500:]!r}\n{proc.stderr[-2000:]}")


def find_vigil():
    if os.environ.get("VIGIL_BIN"):
        path = Path(os.environ["VIGIL_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        path = (target if target.is_absolute() else ROOT / target) / "release" / "vigil"
    if not os.access(path, os.X_OK):
        fail(f"no vigil binary at {path}: run `make build` first (or set VIGIL_BIN)")
    sources = [p for p in (ROOT / "src").rglob("*.rs")] + [ROOT / "Cargo.toml"]
    newest = max((p.stat().st_mtime for p in sources if p.exists()), default=0)
    stale = newest > path.stat().st_mtime
    if stale:
        say(f"warning: {path} is older than src/; `make build` measures the current code")
    return path, stale


def check_prerequisites():
    missing = [p for p in (MODEL, LABELS, ORT_LIBRARY, DEMO_VIDEO) if not p.exists()]
    if missing:
        fail("missing " + ", ".join(str(p.relative_to(ROOT)) for p in missing) + ": run `make setup` first")
    if not shutil.which("ffmpeg"):
        fail("ffmpeg is not installed: run `make setup` first")


def vigil_ort_version():
    """The release of the library vigil loads: build/lib/libonnxruntime.so -> ...so.1.31.1."""
    m = re.search(r"\.so\.(\d+\.\d+\.\d+)$", ORT_LIBRARY.resolve().name)
    return m.group(1) if m else "unknown"


def peer_python():
    """The bench venv's Python, (re)created when the pinned requirements or Python changed."""
    cache = Path(os.environ.get("VIGIL_CACHE", Path.home() / ".cache" / "vigil")).expanduser()
    venv = cache / "bench-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    want = "\n".join(PEER_REQUIREMENTS + [f"python {platform.python_version()}"]) + "\n"
    if python.exists() and read_text(stamp) == want:
        return python
    say(f"creating the peer venv in {venv} ({' '.join(PEER_REQUIREMENTS)})")
    shutil.rmtree(venv, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]]
    # setup.sh already fetched and hash-checked the onnxruntime wheel: let pip reuse it.
    if (cache / "downloads").is_dir():
        steps[1] += ["--find-links", str(cache / "downloads")]
    steps[1] += PEER_REQUIREMENTS
    for step in steps:
        if subprocess.run(step).returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            fail(f"could not create the peer venv: {' '.join(step)}")
    stamp.write_text(want)
    return python


# --- 1. the action classifier -----------------------------------------------------------------

def bench_config(path):
    """The action part of config/default.yaml: absolute paths, fixed threads, no metrics endpoint."""
    path.write_text(f"""\
streams:
  - id: bunny
    url: {DEMO_VIDEO}
action:
  enabled: true
  model:
    path: {MODEL}
    labels: {LABELS}
  sample_fps: 25
  frames: 32
  stride: 16
sinks:
  - type: stdout
metrics:
  enabled: false
runtime:
  onnxruntime_library: {ORT_LIBRARY}
  execution_provider: cpu
  intra_threads: {THREADS}
""")


def bench_classify(vigil, python, sampler, rounds, runs, workdir):
    config, tensor = workdir / "bench.yaml", workdir / "clip.f32"
    bench_config(config)
    sides = {"vigil": [], "onnxruntime": []}
    shape = None

    def vigil_side(dump):
        cmd = [str(vigil), "bench", "classify", "--config", str(config), "--runs", str(runs), "--batch", "1"]
        out, wall = run_json(cmd + (["--dump-input", str(tensor)] if dump else []), "vigil bench classify")
        return dict(out, wall=wall)

    def peer_side():
        cmd = [str(python), str(PEER_SCRIPT), "--model", str(MODEL), "--labels", str(LABELS),
               "--input", str(tensor), "--shape", ",".join(map(str, shape)),
               "--threads", str(THREADS), "--runs", str(runs)]
        out, wall = run_json(cmd, "the onnxruntime peer")
        return dict(out, wall=wall)

    for r in range(rounds):
        # vigil first in even rounds, the peer first in odd ones (the first round must dump).
        order = ["vigil", "onnxruntime"] if r % 2 == 0 else ["onnxruntime", "vigil"]
        for side in order:
            say(f"classify round {r + 1}/{rounds}: {side}")
            if side == "vigil":
                out = sampler.take(side, lambda: vigil_side(dump=shape is None))
                if shape is None:
                    shape = tensor_shape(tensor, out["frames"])
            else:
                out = sampler.take(side, peer_side)
            sides[side].append(out)
    return summarize_classify(sides, shape)


def tensor_shape(path, frames):
    """[1, 3, T, side, side] from the dumped file's size (float32, one clip)."""
    floats = path.stat().st_size // 4
    side = math.isqrt(floats // (3 * frames))
    if 3 * frames * side * side != floats:
        fail(f"{path}: {floats} floats is not [1, 3, {frames}, side, side]")
    return [1, 3, frames, side, side]


def summarize_classify(sides, shape):
    v, p = sides["vigil"], sides["onnxruntime"]
    v_calls = [s for out in v for s in out["seconds_per_call"]]
    p_calls = [s for out in p for s in out["seconds_per_call"]]
    v_med, p_med = statistics.median(v_calls), statistics.median(p_calls)
    ratio = p_med / v_med  # = vigil clips/s / peer clips/s, batch 1
    problems = []
    tops = {out["top1"] for out in v} | {out["top1"] for out in p}
    if len(tops) != 1:
        problems.append(f"top-1 differs: vigil {[o['top1'] for o in v]}, onnxruntime {[o['top1'] for o in p]}")
    score_diff = max(abs(a["top1_score"] - b["top1_score"]) for a in v for b in p)
    versions = {out["ort_version"] for out in p}
    noise = statistics.median(o["foreign_cores"] for o in v + p)
    paired = [statistics.median(b["seconds_per_call"]) / statistics.median(a["seconds_per_call"])
              for a, b in zip(v, p)]
    return {
        "row": ["action classifier alone, I3D 1 clip [" + "x".join(map(str, shape)) + f"], {THREADS} threads, "
                "both sides timing session calls only (clips/s)",
                f"{1 / v_med:.3f}", f"{1 / p_med:.3f}", ratio, CLASSIFY_TARGET, noise, (min(paired), max(paired))],
        "problems": problems,
        "notes": [
            f"classifier: {len(v)} interleaved processes per side x {len(v_calls) // len(v)} timed calls "
            f"(after one warm-up each); median s/clip vigil {v_med:.3f}, onnxruntime {p_med:.3f} "
            f"(best {min(v_calls):.3f} / {min(p_calls):.3f}, a ratio of {min(p_calls) / min(v_calls):.3f} on best calls); "
            f"clips/s = 1 / median. vigil's timed call includes filling its input tensor from the clip's "
            f"frames; the peer's is session.run alone.",
            f"classifier sanity: top-1 {'/'.join(sorted(tops))!r} on both sides, "
            f"top-1 probability differs by at most {score_diff:.1e}; peer onnxruntime {', '.join(sorted(versions))}.",
            f"classifier whole processes (model load, first clip, warm-up included): median "
            f"vigil {statistics.median(o['wall'] for o in v):.1f} s, onnxruntime {statistics.median(o['wall'] for o in p):.1f} s.",
            f"classifier: other processes used a median {statistics.median(o['foreign_cores'] for o in v):.2f} cores "
            f"during vigil's samples, {statistics.median(o['foreign_cores'] for o in p):.2f} during the peer's.",
        ],
        "peer_versions": versions,
    }


# --- 2. decode --------------------------------------------------------------------------------

def decode_files(workdir, loops):
    """(path, label): the demo file, the demo looped, and every real clip under ../shared/media."""
    files = [(DEMO_VIDEO, DEMO_VIDEO.name)]
    if loops > 1:
        # The demo is 132 frames (5 s): process start-up weighs on it. The same bitstream
        # repeated (stream copy, nothing re-encoded) measures steady decoding.
        looped = workdir / f"bigbuckbunny_x{loops}.mp4"
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops - 1),
               "-i", str(DEMO_VIDEO), "-map", "0:v:0", "-c", "copy", str(looped)]
        if subprocess.run(cmd).returncode != 0:
            fail(f"ffmpeg could not write {looped}")
        files.append((looped, f"{DEMO_VIDEO.name} looped x{loops}"))
    if SHARED_MEDIA.is_dir():
        files += [(p, p.name) for p in sorted(SHARED_MEDIA.rglob("*"))
                  if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    return files


def ffmpeg_decode(path, threads):
    """Decodes the first video stream to BGR24 and throws it away; returns frames and wall time."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-threads", str(threads), "-i", str(path),
           "-map", "0:v:0", "-pix_fmt", "bgr24", "-f", "null", "-", "-nostats", "-progress", "pipe:1"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        fail(f"ffmpeg failed on {path}:\n{proc.stderr[-2000:]}")
    frames = re.findall(r"^frame=(\d+)$", proc.stdout, re.M)
    if not frames:
        fail(f"ffmpeg reported no frame count for {path}")
    return {"frames": int(frames[-1]), "wall": wall}


def bench_decode(vigil, sampler, path, label, runs):
    # OpenCV 4.6's FFmpeg backend gives the decoder one thread per CPU; ffmpeg gets the same.
    threads = os.cpu_count() or 1
    sides = {"vigil": [], "ffmpeg": []}
    for r in range(runs):
        order = ["vigil", "ffmpeg"] if r % 2 == 0 else ["ffmpeg", "vigil"]
        for side in order:
            if side == "vigil":
                def measure():
                    out, wall = run_json([str(vigil), "bench", "decode", str(path)], "vigil bench decode")
                    return dict(out, wall=wall)
            else:
                def measure():
                    return ffmpeg_decode(path, threads)
            sides[side].append(sampler.take(f"decode {side}", measure))

    v, f = sides["vigil"], sides["ffmpeg"]
    first = v[0]
    name = f"{label} {first['width']}x{first['height']}, {first['frames']} frames"
    v_stage = statistics.median(o["frames"] / o["seconds"] for o in v)
    v_proc = statistics.median(o["frames"] / o["wall"] for o in v)
    f_proc = statistics.median(o["frames"] / o["wall"] for o in f)
    noise = statistics.median(o["foreign_cores"] for o in v + f)
    problems = []
    frame_counts = {o["frames"] for o in v} | {o["frames"] for o in f}
    if len(frame_counts) != 1:
        problems.append(f"{label}: frame counts differ: vigil {[o['frames'] for o in v]}, ffmpeg {[o['frames'] for o in f]}")
    paired = [(a["frames"] / a["wall"]) / (b["frames"] / b["wall"]) for a, b in zip(v, f)]
    return {
        "rows": [
            [f"decode {name}: whole process, both sides timed around the process (frames/s)",
             f"{v_proc:.0f}", f"{f_proc:.0f}", v_proc / f_proc, DECODE_TARGET, noise, (min(paired), max(paired))],
        ],
        "problems": problems,
        "notes": [
            f"decode {label}: {runs} interleaved runs per side, median; ffmpeg -threads {threads}; "
            f"median wall vigil {statistics.median(o['wall'] for o in v):.3f} s, ffmpeg "
            f"{statistics.median(o['wall'] for o in f):.3f} s; of vigil's, {statistics.median(o['wall'] - o['seconds'] for o in v):.3f} s "
            f"was outside its decoding loop (start-up and exit; vigil's in-process rate was {v_stage:.0f} frames/s, "
            "not compared with ffmpeg's whole process); "
            f"other processes used a median {noise:.2f} cores.",
        ],
        "startup": [o["wall"] - o["seconds"] for o in v],
    }


# --- output -----------------------------------------------------------------------------------

def bench_faces(vigil, runs):
    """The face path against the face_recognition-style baseline (scripts/bench_faces.py)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_faces.py"), "--runs", str(runs), "--vigil", str(vigil)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"scripts/bench_faces.py failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout)
    if "skipped" in r:
        return {"rows": [], "notes": [f"faces: skipped ({r['skipped']})."]}
    base = r["fps_median"]["baseline"]
    rows = []
    what = {
        "vigil_default": "vigil's defaults (a full MTCNN search every 5th frame, tracked faces found again near "
                         "their box in between, at most 5 embeddings per track plus one a second, one inference "
                         "thread per core)",
        "vigil_full_search": "a full MTCNN search on every frame, otherwise the defaults",
        "vigil_same_work": "the same work as the baseline: full search and an embedding of every face on "
                           "every frame, 1 inference thread",
    }
    targets = {"vigil_default": 10.0, "vigil_full_search": 4.0, "vigil_same_work": 4.0}
    for key, text in what.items():
        if key not in r["fps_median"]:
            continue
        paired = [a / b for a, b in zip(r["fps_samples"][key], r["fps_samples"]["baseline"])]
        rows.append([
            f"faces, {r['clip']}, every one of {r['frames']} frames: {text}; baseline: dlib HOG detection and "
            "an embedding of every face of every frame, one thread, in Python (frames/s)",
            f"{r['fps_median'][key]:.1f}", f"{base:.2f}", r["fps_median"][key] / base, targets[key], 0.0,
            (min(paired), max(paired)),
        ])
    problems = [f"faces: vigil ({k.removeprefix('vigil_')}) did not name {', '.join(sorted(set(r['on_stage']) - set(v)))}"
                for k, v in r["named"].items() if k != "baseline" and set(r["on_stage"]) - set(v)]
    problems += [f"faces: vigil ({k.removeprefix('vigil_')}) named {', '.join(sorted(set(v) - set(r['on_stage'])))}, "
                 "who is not on stage" for k, v in r["named"].items() if k != "baseline" and set(v) - set(r["on_stage"])]
    named = r["named"]
    notes = [
        f"faces: {r['runs']} interleaved run(s) per side, median; enrolled one photo each of {', '.join(r['enrolled'])}; "
        f"on stage: {' and '.join(r['on_stage'])}. Named by the baseline: {', '.join(named['baseline']) or 'no one'}; "
        + "; ".join(f"by vigil ({k.removeprefix('vigil_')}): {', '.join(v) or 'no one'}"
                    for k, v in named.items() if k != "baseline") + ". "
        "Both sides time decoding and the face path over every frame, with model loading and enrolment excluded.",
    ]
    return {"rows": rows, "notes": notes, "problems": problems}


def why_missed(rows):
    """One sentence per row that did not pass, from its own figures only (the profile and the
    reasons belong in the closing notes of the work that measured them, not in fixed text)."""
    out = []
    for row in rows:
        measure, _, _, ratio, target = row[:5]
        spread = row[6] if len(row) > 6 else None
        v = verdict(ratio, target, spread)
        if v == "PASS":
            continue
        where = f" (runs ranged {spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
        out.append(f"{v.split()[0]}: {measure}: {ratio:.3f} of a target {target:.2f}{where}.")
    return out


def startup_note(vigil):
    """Why vigil's process start-up costs what it does: the shared libraries it loads."""
    libs = run_text(["ldd", str(vigil)]).count("=>")
    env = dict(os.environ, LD_DEBUG="statistics")
    started = time.perf_counter()
    out = subprocess.run([str(vigil), "--version"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    m = re.search(r"total startup time in dynamic loader: (\d+) cycles", out.stderr)
    r = re.search(r"number of relocations: (\d+)", out.stderr)
    cycles = f"{int(m.group(1)) / 1e6:.0f} M cycles in the dynamic loader" if m else "loader time unknown"
    relocs = f", {int(r.group(1)):,} symbol relocations" if r else ""
    return (f"start-up: `vigil --version` takes {wall:.2f} s; vigil loads {libs} shared libraries ({cycles}{relocs}): "
            "Debian's OpenCV 4.6 pulls in GDAL, GDCM and the rest of its image-format stack through imgcodecs. "
            "That fixed cost, not decoding, is what the whole-process decode rows of short files pay.")


def verdict(ratio, target, spread):
    """PASS, MISS, or UNSURE when the runs' spread of the ratio crosses the target."""
    if spread and spread[0] < target <= spread[1]:
        return "UNSURE (spread crosses the target)"
    return "PASS" if ratio >= target else "MISS"


def table(rows):
    """rows: [measure, vigil, peer, ratio, target, cores other processes used meanwhile,
    optional (min, max) of the ratio over paired runs]."""
    lines = ["| measure | vigil | peer | ratio | spread | target | met? |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        measure, vigil, peer, ratio, target, noise = row[:6]
        spread = row[6] if len(row) > 6 else None
        met = verdict(ratio, target, spread)
        if noise > NOISY:
            met += f" (noisy: {noise:.1f} cores busy elsewhere)"
        shown = f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "-"
        lines.append(f"| {measure} | {vigil} | {peer} | {ratio:.3f} | {shown} | >= {target:.2f} | {met} |")
    return "\n".join(lines)


def document(machine, rows, notes, args, scaling=None):
    mode = "quick" if args.quick else "full"
    lines = [
        "# Benchmarks",
        "",
        "vigil against its peers and its limits, measured side by side in one run of `scripts/bench.py` "
        f"({mode} mode, {machine['date']}). Generated file: rerun rather than edit.",
        "",
        "## How to run",
        "",
        "```sh",
        "make bench                          # make build, then python3 scripts/bench.py",
        "python3 scripts/bench.py --quick    # fewer runs; gallery up to 100k",
        "python3 scripts/bench.py --runs 10  # more timed classifier calls per process",
        "python3 scripts/bench.py --soak-minutes 60   # add the memory soak",
        "make int8                          # before the bench: adds the int8 rows",
        "```",
        "",
        "The first run creates the peer's venv (`onnxruntime`, `numpy`) in "
        "`${VIGIL_CACHE:-~/.cache/vigil}/bench-venv`; later runs reuse it.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in machine.items()],
        "",
        "## Results",
        "",
        table(rows),
        "",
        "ratio = vigil / peer (higher is better for vigil); met? compares it with the target. "
        "Where the peer is a limit (gallery latency, soak growth) the ratio is limit / measured.",
        "",
        *([
            "## Scaling: live cameras",
            "",
            "scripts/bench_live.py (its own page: docs/benchmarks-live.md): N RTSP cameras of 720p25 "
            "H.264 served by Debian's GStreamer RTSP server on loopback, both branches on, 20 s warm-up, "
            f"{statistics.median(r['window_s'] for r in scaling['rows_json']):.0f} s measured from vigil's "
            "/metrics and /proc.",
            "",
            scaling["table"],
            "",
        ] if scaling else []),
        "## Notes",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Where the time goes",
        "",
        "`perf record -F 499 -g` over `vigil bench pipeline` on `build/media/faces_demo.mp4` with both "
        "branches (210 frames, 12 clips; measured by hand on 2026-11-29, not by this script): ONNX "
        "Runtime's kernels 85.7% of the CPU samples, OpenCV imgproc (resizing for I3D and MTCNN's image "
        "pyramid) 6.3%, the kernel 4.2%, libc 1.6%, libavcodec (decoding) 1.0%, vigil's own code 0.3%. By "
        "thread: ONNX Runtime's pool 42%, the classifier thread 38%, the face worker 16%, the source "
        "1.8%, the action sampler and preprocessing 1.6%. So the pipeline ratio is decided by how well "
        "inference keeps both cores busy; copies and allocation in vigil's own stages are not where the "
        "time goes (frames are shared between branches by reference, clips are batched across streams, "
        "faces are embedded only while a track is undecided or due for re-verification).",
        "",
        "## How it is measured",
        "",
        "- **Action path.** `vigil run` on a file with the action branch only, as configured by "
        "default, against scripts/action_loop.py, the plain Python loop (OpenCV decode, nearest-"
        "timestamp resampling to 25 fps, resize and centre crop, one `session.run` per 32-frame clip "
        "every 16 frames, sequential; the same ONNX file, intra-op threads, spinning and CPU arena "
        "settings), "
        "both timed around the whole process (start-up and model loading included) with peak "
        "resident memory from wait4. vigil also runs with `action.schedule.adaptive: false` (every "
        "clip classified: the same work as the loop, and the reference for the labels row). The "
        "sides alternate; the spread is the ratio's range over the rounds.",
        f"- **Classifier.** `vigil bench classify` loads `build/models/i3d_kinetics400.onnx` with "
        f"`runtime.intra_threads: {THREADS}`, preprocesses the first 32-frame clip of "
        "`build/media/bigbuckbunny.mp4`, makes one warm-up call, then times each of `--runs` calls, "
        "and dumps the exact input tensor. `scripts/bench_peer_ort.py` feeds those bytes to Python "
        f"onnxruntime (same release as vigil's library, `intra_op_num_threads={THREADS}`, "
        "`ORT_ENABLE_ALL`, CPU provider, intra-op spinning and the CPU memory arena off as vigil has "
        "them, onnxruntime's defaults otherwise): one warm-up call, then "
        "the same number of timed calls. "
        "The two sides alternate process by process (vigil first in odd rounds, the peer first in "
        "even ones); every timed call of a side is pooled and the median taken. Both sides must "
        "agree on the top-1 class.",
        "- **Decode.** `vigil bench decode FILE` reads every frame through vigil's source stage "
        "(OpenCV's FFmpeg backend, BGR frames) and reports frames over its own timer (file open "
        "included). The peer is `ffmpeg -threads <cores> -i FILE -map 0:v:0 -pix_fmt bgr24 -f null -`, "
        "timed with `time.perf_counter()` around the process; its frame count comes from "
        "`-progress`. Both sides are timed the same way, around the whole process (vigil's own "
        "in-process rate is in the notes, never set against ffmpeg's whole process). The demo "
        "file is only 132 frames, so it is also measured looped (the same bitstream repeated with "
        "`ffmpeg -stream_loop N -c copy`, nothing re-encoded), where start-up hardly counts: that "
        "row is the steady decoding rate. Files under `../shared/media` are added when that folder "
        "exists. Runs alternate and the median of each side is reported.",
        "- **Pipeline.** `vigil bench pipeline` runs the whole action pipeline on the demo clip looped "
        "(decode, sampler, preprocessing, batching, I3D, smoother, events to a file) and reports "
        "clips scored per second from the start of the run to its end, model loading excluded; the "
        "slowest stage alone is `vigil bench classify --batch 4` on the same model and threads; the "
        "spread is the range of each round's pipeline against the same round's classifier.",
        "- **int8.** `vigil bench classify` with the fp32 and the int8 model (processes alternating); "
        "labels from `scripts/compare_int8.py`: every 32-frame window (stride 16) of the real clips "
        "through both models in Python onnxruntime; the speed's spread is the range of each round's "
        "int8 against the same round's fp32.",
        "- **Gallery.** `vigil bench gallery` enrols synthetic 128-d identities through the gallery's "
        "own API, saves and reloads the file, builds, saves and reloads the HNSW index (USearch), "
        "then times single queries on one thread: probes (an enrolled identity plus noise 0.35 long, "
        "like another photo of them) and strangers (new identities). Recall@1 is the share of "
        "queries whose HNSW top-1 is exact search's top-1. Identities are Gaussian with variance "
        "falling as (j+1)^-1 over the 128 components (a participation ratio of 18, like learned "
        "embeddings) and, up to 100k, isotropic (every direction equal: the worst case for any graph "
        "index); people are 0.9 apart on average, as dlib's descriptors of different people are. "
        "The index is the one bench_extra.GALLERY_INDEX_ARGS names (an i8 graph whose best 32 "
        "candidates are re-ranked by exact distance). At a million: the build time when this run "
        "built the index (a reused one is not timed), and the peak resident memory of a separate "
        "`vigil bench gallery --open-only` process that reads the gallery and loads its index as "
        "`vigil run` does.",
        "- **Soak.** `--soak-minutes N`: `vigil run` on the face demo looped at real-time pace with "
        "both branches, resident memory read from /proc every 10 s, least-squares slope over the "
        "last four fifths.",
        f"- **Noise.** Before each sample the script waits (at most `--max-wait` seconds in all) "
        f"until other processes use under {QUIET} cores, records the CPU time they used during "
        f"the sample, and takes it again (at most {RETAKES} times) if that averaged over {NOISY} cores "
        "while the wait budget lasts. A row whose samples still had other processes using over "
        f"{NOISY} cores (median) is marked noisy. Load averages and busy processes are recorded at "
        "the start and the end.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, gallery up to 100k (about 20 minutes)")
    parser.add_argument("--runs", type=int, help="timed classifier calls per process (default 5, quick 2)")
    parser.add_argument("--rounds", type=int, help="classifier processes per side (default 3, quick 2)")
    parser.add_argument("--decode-runs", type=int, help="decode runs per side and file (default 5, quick 3)")
    parser.add_argument("--max-wait", type=float, help="seconds in all to wait for a quiet machine (default 240, quick 30)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write (default docs/benchmarks.md)")
    parser.add_argument("--gallery-sizes", help="identities, comma-separated (default 10000,100000,1000000; quick 10000,100000; \"\" with --gallery-json: measure none)")
    parser.add_argument("--gallery-queries", type=int, default=300, help="queries of each kind per gallery size")
    parser.add_argument("--gallery-json", type=Path, help="add `vigil bench gallery` results saved as a JSON list")
    parser.add_argument("--skip-live", action="store_true", help="leave out the 1/2/4/8 camera scaling rows")
    parser.add_argument("--live-json", type=Path, help="use scripts/bench_live.py rows saved as JSON instead of measuring")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="memory soak length in minutes (default 0: none; the issue's soak is 60)")
    parser.add_argument("--soak-json", type=Path, help="summarise the soak a separate run saved with --save-json instead of measuring one")
    parser.add_argument("--save-json", type=Path, help="also write every raw result here")
    parser.add_argument("--only", help="comma-separated parts to run (action, startup, classify, decode, faces, "
                        "pipeline, int8, gallery, motion, live, soak; the shared gallery is scripts/bench_store.py); the page is then written only with an explicit --out")
    args = parser.parse_args()
    pick = lambda given, quick, full: given if given is not None else (quick if args.quick else full)
    runs = pick(args.runs, 2, 5)
    rounds = pick(args.rounds, 2, 3)
    decode_runs = pick(args.decode_runs, 3, 5)
    max_wait = pick(args.max_wait, 30.0, 240.0)
    loops = 4 if args.quick else 8
    if min(runs, rounds, decode_runs) < 1 or max_wait < 0:
        parser.error("--runs, --rounds and --decode-runs must be at least 1, --max-wait not negative")

    # "soak" names no part of its own: `--only soak --soak-minutes 60` runs the soak alone.
    parts = {"action", "startup", "classify", "decode", "faces", "pipeline", "int8", "gallery", "motion", "live", "soak"}
    only = set(args.only.split(",")) if args.only else parts
    if only - parts:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(only - parts))}")
    if args.only and "--out" not in sys.argv:
        args.out = None
    want = lambda part: part in only

    started = time.monotonic()
    check_prerequisites()
    vigil, stale = find_vigil()
    python = peer_python()  # before measuring: pip must not run beside a sample
    built = datetime.datetime.fromtimestamp(vigil.stat().st_mtime, datetime.timezone.utc)
    machine = machine_description(vigil, built.strftime("%Y-%m-%d %H:%M UTC"))

    load_before = os.getloadavg()
    busy_before = busy_processes()
    sampler = Sampler(max_wait=max_wait)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        # Measure a private copy: a build running beside the bench (cargo replaces the binary)
        # must not mix two versions of vigil in one table.
        vigil_copy = Path(tmp) / "vigil"
        shutil.copy2(vigil, vigil_copy)
        empty = {"rows": [], "notes": [], "problems": []}
        action = empty
        if want("action"):
            videos = [(p, p.name) for p in [SHARED_MEDIA / "action" / "arm_wrestling.mp4"] if p.exists()]
            videos.append((DEMO_VIDEO, DEMO_VIDEO.name))
            action = bench_action.bench_action(vigil_copy, python, sampler, Path(tmp), videos,
                                               2 if args.quick else 3, THREADS)
        startup = empty
        if want("startup"):
            say("start-up")
            startup = bench_action.bench_startup(vigil_copy, sampler, Path(tmp), 5)
        classify = {"row": None, "problems": [], "notes": [], "peer_versions": set()}
        if want("classify"):
            classify = bench_classify(vigil_copy, python, sampler, rounds, runs, Path(tmp))
        decodes = []
        if want("decode"):
            for path, label in decode_files(Path(tmp), loops):
                say(f"decode {label}")
                decodes.append(bench_decode(vigil_copy, sampler, path, label, decode_runs))
            say("decode 1080p")
            p1080, l1080 = bench_extra.make_1080p(Path(tmp), 2 if args.quick else 4)
            decodes.append(bench_decode(vigil_copy, sampler, p1080, l1080, decode_runs))
        faces = empty
        if want("faces"):
            say("faces")
            faces = bench_faces(vigil_copy, 1 if args.quick else 3)
        pipeline = int8 = gallery = empty
        if want("pipeline"):
            say("pipeline vs its slowest stage")
            pipe_video = Path(tmp) / "pipeline.mp4"
            subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops // 2 - 1),
                            "-i", str(DEMO_VIDEO), "-map", "0:v:0", "-c", "copy", str(pipe_video)], check=True)
            pipeline = bench_extra.bench_pipeline(vigil_copy, sampler, Path(tmp), pipe_video,
                                                  f"{DEMO_VIDEO.name} looped x{loops // 2}", 1 if args.quick else 3, THREADS)
        if want("int8"):
            say("int8 vs fp32")
            int8_python = Path(os.environ.get("VIGIL_CACHE", Path.home() / ".cache" / "vigil")) / "int8-venv" / "bin" / "python"
            int8 = bench_extra.bench_int8(vigil_copy, sampler, Path(tmp), 2 if args.quick else 3, THREADS, int8_python)
        if want("gallery"):
            # `--gallery-sizes ""` with --gallery-json: only the saved results, nothing measured.
            given = args.gallery_sizes if args.gallery_sizes is not None else (
                "10000,100000" if args.quick else "10000,100000,1000000")
            sizes = [int(x) for x in given.split(",") if x.strip()]
            keep = Path(os.environ.get("VIGIL_CACHE", Path.home() / ".cache" / "vigil")) / "bench-gallery"
            gallery = bench_extra.bench_gallery(vigil_copy, keep, sizes, args.gallery_queries, args.gallery_json)
            if args.gallery_json:
                gallery["notes"].append(f"gallery: the results of {args.gallery_json.name} were measured by a separate "
                                        f"run (`--gallery-json`){', the sizes ' + given + ' by this one' if sizes else ''}.")
        motion = empty
        if want("motion"):
            say("motion gate: gated vs ungated (scripts/bench_motion.py)")
            motion = bench_motion.bench_motion(vigil_copy, sampler, Path(tmp), 1 if args.quick else 2)
        scaling = None
        if want("live") and not args.skip_live:
            say("live cameras: 1, 2, 4, 8, then 1 and 8 again (scripts/bench_live.py)")
            scaling = bench_extra.bench_scaling(args.live_json, repeat=1 if args.quick else 3)
            if args.live_json:
                scaling["notes"].append(f"live cameras: measured by a separate run of scripts/bench_live.py "
                                        f"({args.live_json.name}, `--live-json`), not by this one.")
        soak = None
        if args.soak_json:
            soak = bench_extra.saved_soak(args.soak_json)
        elif args.soak_minutes > 0:
            say(f"memory soak: {args.soak_minutes:g} min")
            soak = bench_extra.bench_soak(vigil_copy, Path(tmp), args.soak_minutes)
    load_after = os.getloadavg()
    busy_after = busy_processes()
    elapsed = time.monotonic() - started

    ort_version = vigil_ort_version()
    peer_versions = classify["peer_versions"]
    ort_desc = f"{ort_version} (vigil: {ORT_LIBRARY.resolve().relative_to(ROOT)}; peer: Python onnxruntime {', '.join(sorted(peer_versions))})"
    problems = action["problems"] + classify["problems"] + [p for d in decodes for p in d["problems"]] + faces.get("problems", [])
    if peer_versions and peer_versions != {ort_version}:
        problems.append(f"the peer runs onnxruntime {peer_versions}, vigil's library is {ort_version}")

    extra = [pipeline, int8, gallery, motion] + ([scaling] if scaling else []) + ([soak] if soak else [])
    if not motion.get("same_events", True):
        problems.append("the motion gate changed the events (see the motion gate note)")
    rows = action["rows"] + startup["rows"] + ([classify["row"]] if classify["row"] else []) + [
        row for d in decodes for row in d["rows"]] + faces["rows"] + [row for e in extra for row in e["rows"]]
    loads = lambda l: " / ".join(f"{x:.2f}" for x in l)
    notes = action["notes"] + startup["notes"] + classify["notes"] + [n for d in decodes for n in d["notes"]] + faces["notes"] + [
        n for e in extra for n in e["notes"]] + [
        f"load average (1/5/15 min): {loads(load_before)} at the start, {loads(load_after)} at the end "
        f"(the machine is shared: another engineer may be compiling or testing).",
        f"busy processes at the start: {', '.join(busy_before) or 'none'}; at the end: {', '.join(busy_after) or 'none'}.",
        f"waited {sampler.waited:.0f} s of {max_wait:.0f} s for a quiet machine; samples taken again: "
        + (", ".join(f"{k} {v}" for k, v in sampler.retaken.items()) or "none") + ".",
    ] + ([
        f"vigil's process start-up and exit (its wall time minus its own timer, all decode runs): median "
        f"{statistics.median(t for d in decodes for t in d['startup']):.2f} s, included in the decode rows as "
        "ffmpeg's own is.",
        startup_note(vigil),
    ] if decodes else []) + [
        f"the whole bench took {elapsed / 60:.1f} min.",
    ]
    if stale:
        notes.append("the vigil binary was older than src/ (not rebuilt): it measures the code it was built from.")
    notes += why_missed(rows)
    notes += [f"PROBLEM: {p}" for p in problems]

    machine["ONNX Runtime"] = ort_desc
    doc = document(machine, rows, notes, args, scaling)
    if args.save_json:
        args.save_json.write_text(json.dumps({"rows": rows, "notes": notes, "gallery": gallery.get("results"),
                                              "live": scaling and scaling["rows_json"],
                                              "soak": soak and soak.get("samples"), "soak_minutes": args.soak_minutes,
                                              "vigil": machine.get("vigil"), "date": machine.get("date")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(doc, encoding="utf-8")

    print(table(rows))
    print()
    print("\n".join(f"- {n}" for n in notes))
    if args.out:
        print(f"\nwrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
