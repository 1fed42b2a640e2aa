#!/usr/bin/env python3
"""The face part of vigil's benchmark: vigil's face path against what a face_recognition user
would write (scripts/face_baseline.py: dlib's HOG detector, 5-point landmarks and ResNet, frame
by frame in Python), on the same clip, the same enrolled photos and the same machine.

    python3 scripts/bench_faces.py [--runs N] [--vigil PATH]

prints one JSON object: for each side and setting, the median frames per second of N
interleaved runs, and who each side named. Both sides time decoding plus the face path over
every frame, with model loading and enrolment excluded. vigil runs three ways (SETTINGS below):
its defaults (a full MTCNN search on every frame, a few embeddings per track), a full search every
10th frame with cheap re-detection of tracked faces in between, and the baseline's own work (a
full search and an embedding of every face on every frame, one inference thread).

Needs ../shared/media/faces (the Hamilton clip and its two performers' photos); without it,
prints {"skipped": ...} and exits 0.
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "media" / "faces"
CACHE = Path(os.environ.get("VIGIL_CACHE", Path.home() / ".cache" / "vigil"))
PEOPLE = {
    "Lin-Manuel Miranda": "lin-manuel-miranda.png",
    "Alex Lacamoire": "alex-lacamoire.png",
    "obama": "obama.jpg",
    "biden": "biden.jpg",
}
CLIP = "short_hamilton_clip.mp4"


def baseline_python():
    """The baseline's venv (dlib-bin, numpy, Pillow), made once and reused."""
    venv = CACHE / "face-baseline-venv"
    req = ROOT / "scripts" / "requirements-face-baseline.txt"
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    if not (venv / "bin" / "python").exists() or not stamp.exists() or stamp.read_text().strip() != want:
        print(f"bench_faces: creating {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(req)], check=True)
        stamp.write_text(want)
    return venv / "bin" / "python"


# vigil's settings: the faces keys and runtime.intra_threads each run sets on top of its
# defaults (sample_fps 0 in all: every frame of the clip is searched or tracked).
SETTINGS = {
    # The defaults: a full search every 5th frame, tracked faces found again near their box in
    # between, at most 5 embeddings per track plus one a second, one inference thread per core.
    "vigil_default": {},
    # A full MTCNN search on every frame, the rest as by default.
    "vigil_full_search": {"detect_interval": 1},
    # The baseline's work: a full search and an embedding of every face on every frame, one
    # inference thread (vigil still decodes on its own thread).
    "vigil_same_work": {"detect_interval": 1, "tracker": "{embeds_per_track: 1000000, reverify_ms: 0}",
                        "intra_threads": 1},
}


def vigil_config(dir, key):
    b = ROOT / "build"
    keys = dict(SETTINGS[key])
    threads = keys.pop("intra_threads", None)
    faces = "".join(f"  {k}: {v}\n" for k, v in keys.items())
    runtime = f"  intra_threads: {threads}\n" if threads is not None else ""
    return f"""streams:
  - id: hamilton
    url: {SHARED / CLIP}
action: {{enabled: false}}
faces:
  enabled: true
  sample_fps: 0
{faces}  detector:
    type: mtcnn
    pnet: {b}/models/mtcnn_pnet.onnx
    rnet: {b}/models/mtcnn_rnet.onnx
    onet: {b}/models/mtcnn_onet.onnx
  embedder:
    path: {b}/models/dlib_resnet.onnx
gallery:
  path: {dir}/gallery.json
sinks:
  - type: file
    path: {dir}/events-{key}.jsonl
metrics: {{enabled: false}}
runtime:
  onnxruntime_library: {b}/lib/libonnxruntime.so
{runtime}"""


def run_json(cmd):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_faces: {' '.join(map(str, cmd))} failed:\n{out.stderr[-2000:]}")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"bench_faces: {' '.join(map(str, cmd))} did not print one JSON object:\n{out.stdout[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs per side (default 3)")
    ap.add_argument("--vigil", type=Path, default=None, help="the vigil binary (default: the release build)")
    args = ap.parse_args()
    if not (SHARED / CLIP).exists():
        print(json.dumps({"skipped": f"{SHARED / CLIP} is not here"}))
        return 0
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    vigil = args.vigil or target / "release" / "vigil"
    if not vigil.exists():
        raise SystemExit(f"bench_faces: {vigil} is missing: run `make build` first")
    py = baseline_python()

    with tempfile.TemporaryDirectory(prefix="vigil-bench-faces-") as tmp:
        configs = {}
        for key in SETTINGS:
            path = Path(tmp) / f"faces-{key}.yaml"
            path.write_text(vigil_config(tmp, key))
            configs[key] = path
        for name, photo in PEOPLE.items():
            run_json([vigil, "gallery", "enroll", "--json", "--config", configs["vigil_default"], "--name", name, SHARED / photo])
        baseline_cmd = [py, ROOT / "scripts" / "face_baseline.py", "--cache", CACHE / "downloads", "--video", SHARED / CLIP]
        for name, photo in PEOPLE.items():
            baseline_cmd += ["--enrol", f"{name}={SHARED / photo}"]

        samples = {"baseline": [], **{key: [] for key in SETTINGS}}
        named = {}
        for _ in range(args.runs):
            b = run_json(baseline_cmd)
            samples["baseline"].append(b["fps"])
            named["baseline"] = sorted(k for k, v in b["identified_frames"].items() if v > 0)
            frames = b["frames"]
            for key in SETTINGS:
                v = run_json([vigil, "bench", "faces", "--config", configs[key]])
                samples[key].append(v["fps"])
                named[key] = sorted(v["identified_events"])
                assert v["frames"] == frames, f"frame counts differ: vigil {v['frames']}, baseline {frames}"
        result = {
            "clip": CLIP,
            "frames": frames,
            "enrolled": list(PEOPLE),
            "on_stage": ["Alex Lacamoire", "Lin-Manuel Miranda"],
            "runs": args.runs,
            "fps_median": {k: statistics.median(v) for k, v in samples.items()},
            "fps_samples": samples,
            "named": named,
        }
        base = result["fps_median"]["baseline"]
        result["ratio"] = {k: v / base for k, v in result["fps_median"].items() if k != "baseline"}
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
