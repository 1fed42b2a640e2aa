#!/usr/bin/env python3
"""Compares the int8 I3D (models/quantize_i3d.py) with the float32 one on real clips.

For each clip file that exists, cuts every window vigil would classify (32 frames at 25 fps,
stride 16, preprocessed as vigil does: `read_clips` from models/quantize_i3d.py), classifies it
with both models (CPU provider, ORT_ENABLE_ALL, --threads intra-op threads, batch 1) and times
each model on the file's first window: one warm-up call each, then --runs calls alternating
between the two models (so background load hits both alike); clips/s is 1 / median call time.

Prints one JSON object: per file the windows, top-1 agreement, top-5 overlap, max |prob diff|,
each disagreeing window with both models' top-1 and probabilities, speeds and the int8/fp32
speed ratio; then totals and the two model files' sizes.

Runs in the venv `make int8` makes (models/requirements-int8.txt):

    ${VIGIL_CACHE:-~/.cache/vigil}/int8-venv/bin/python scripts/compare_int8.py
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
from quantize_i3d import SAMPLE_FPS, read_clips  # noqa: E402

CLIPS = [
    REPO / "build/media/bigbuckbunny.mp4",
    REPO / "build/media/faces_demo.mp4",
    REPO.parent / "shared/media/action/arm_wrestling.mp4",
    REPO.parent / "shared/media/faces/short_hamilton_clip.mp4",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi"),
]


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp32", type=Path, default=REPO / "build/models/i3d_kinetics400.onnx")
    parser.add_argument("--int8", type=Path, default=REPO / "build/models/i3d_kinetics400_int8.onnx")
    parser.add_argument("--labels", type=Path, default=REPO / "build/models/kinetics400_labels.txt")
    parser.add_argument("--clips", type=Path, nargs="*", help="video files (default: the known real clips)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per model and file")
    args = parser.parse_args()

    labels = args.labels.read_text(encoding="utf-8").splitlines()
    models = {"fp32": session(args.fp32, args.threads), "int8": session(args.int8, args.threads)}
    files, totals = [], {"windows": 0, "top1_agree": 0}
    all_times = {"fp32": [], "int8": []}
    for path in [p for p in (args.clips or CLIPS) if p.is_file()]:
        clips = read_clips(path)
        probs = {k: np.concatenate([s.run(["probs"], {"rgb": c})[0] for c in clips]) for k, s in models.items()}
        a, b = probs["fp32"], probs["int8"]
        top1_a, top1_b = a.argmax(1), b.argmax(1)
        top5_a, top5_b = np.argsort(-a, 1)[:, :5], np.argsort(-b, 1)[:, :5]
        overlap = [len(set(x) & set(y)) for x, y in zip(top5_a, top5_b)]
        differ = [{
            "window": i, "start_s": round(i * 16 / SAMPLE_FPS, 2),
            "fp32": [labels[top1_a[i]], round(float(a[i, top1_a[i]]), 4)],
            "int8": [labels[top1_b[i]], round(float(b[i, top1_b[i]]), 4)],
            "int8_p_of_fp32_label": round(float(b[i, top1_a[i]]), 4),
        } for i in range(len(clips)) if top1_a[i] != top1_b[i]]

        times = {"fp32": [], "int8": []}
        feed = {"rgb": clips[0]}
        for s in models.values():
            s.run(["probs"], feed)  # warm-up
        for _ in range(args.runs):
            for k, s in models.items():
                t0 = time.perf_counter()
                s.run(["probs"], feed)
                times[k].append(time.perf_counter() - t0)
        for k in times:
            all_times[k] += times[k]
        speed = {k: 1.0 / statistics.median(v) for k, v in times.items()}
        agree = int((top1_a == top1_b).sum())
        totals["windows"] += len(clips)
        totals["top1_agree"] += agree
        files.append({
            "file": str(path), "windows": len(clips), "top1_agree": agree,
            "top1_fp32": [[labels[i], round(float(a[w, i]), 4)] for w, i in enumerate(top1_a)],
            "top5_overlap_mean": round(float(np.mean(overlap)), 3), "top5_overlap_min": int(min(overlap)),
            "max_abs_prob_diff": round(float(np.abs(a - b).max()), 4),
            "top1_prob_diff_max": round(float(np.abs(a[np.arange(len(clips)), top1_a]
                                                      - b[np.arange(len(clips)), top1_a]).max()), 4),
            "differ": differ,
            "clips_per_s": {k: round(v, 3) for k, v in speed.items()},
            "speed_ratio_int8_over_fp32": round(speed["int8"] / speed["fp32"], 3),
        })
    speed = {k: 1.0 / statistics.median(v) for k, v in all_times.items() if v}
    print(json.dumps({
        "ort_version": ort.__version__, "threads": args.threads, "runs_per_file": args.runs,
        "load_average": os.getloadavg(),
        "files": files,
        "total": {**totals, "clips_per_s": {k: round(v, 3) for k, v in speed.items()},
                  "speed_ratio_int8_over_fp32": round(speed["int8"] / speed["fp32"], 3) if speed else None},
        "model_bytes": {"fp32": args.fp32.stat().st_size, "int8": args.int8.stat().st_size},
        "models": {"fp32": str(args.fp32), "int8": str(args.int8)},
    }, indent=1))


if __name__ == "__main__":
    main()
