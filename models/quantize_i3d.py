#!/usr/bin/env python3
"""Makes an int8 variant of the I3D action classifier with ONNX Runtime's quantisation tools.

What: reads the float32 model (build/models/i3d_kinetics400.onnx), runs ONNX Runtime's
quantisation pre-processing (`onnxruntime.quantization.quant_pre_process`: shape inference and
basic graph optimisation), calibrates activation ranges on real clips and writes a statically
quantised model (build/models/i3d_kinetics400_int8.onnx by default).

Why: int8 Conv3d kernels cut the classifier's CPU time (the action branch's main cost) and the
file size; the calibration clips are prepared exactly as vigil prepares them, so the ranges
match what the model sees at run time.

Recipe (the defaults; each can be changed with a flag, see --help):
  * static quantisation, QDQ format, uint8 activations, int8 weights per output channel, full
    8 bits (no reduce_range: 7-bit weights lost more accuracy, even on an AVX2 CPU without VNNI,
    where int16 saturation is possible);
  * calibration: every 32-frame window (stride 16) of --calib-video, MinMax ranges (Entropy and
    Percentile did worse);
  * kept in float32: the input rescale (Div/Sub), the first conv Conv3d_1a_7x7 (3 input channels:
    ORT's int8 kernel is slower than float there, and it is the most sensitive layer), the Mixed_5b
    and Mixed_5c blocks and the Logits conv with its tail (cheap at 7x7, and quantising them cost
    most of the label changes). Everything else (Conv, MaxPool, Concat; Relu folds away) is int8.

On the real clips (scripts/compare_int8.py) this kept 44 of 46 top-1 labels, max |prob diff|
0.069, about 1.6x the float32 speed at 2 threads, 28.6 MB instead of 50.8 MB. Also keeping
Mixed_4* in float (--exclude 'Conv3d_1a_7x7/conv,Mixed_4*,Mixed_5*,Logits*') kept 45 of 46
at about 1.3x.

Clips are read as src/action/{sampler,clip}.rs do: OpenCV's FFmpeg reader with the frame's
CAP_PROP_POS_MSEC as its time, nearest-timestamp resampling to 25 fps, short side resized to 256
(bilinear, rounded size), centre crop 224, BGR to RGB, windows of 32 frames every 16, a stream too
short for one window looped to 32 frames; the tensor is [1, 3, 32, 224, 224] float32 in 0..255.
scripts/compare_int8.py imports `read_clips` from here.

Deterministic: no randomness; the calibration data, tensor order and every option are fixed,
so the same inputs and package versions give the same bytes (the script prints the sha256;
two runs gave identical files).

Outcome: the int8 model changed 2 of 46 top-1 labels on the real clips, so it is not built by
the set-up and not the default; `make int8` builds and compares it for anyone who wants the
speed (select it with `action.model.path`).

Needs a venv with onnxruntime (the version vigil links, 1.31.1), onnx, numpy, sympy (for
quant_pre_process's symbolic shape inference) and opencv-python-headless, pinned in
models/requirements-int8.txt; `make int8` creates it and runs (about 25 s on 2 cores):

    $VENV/bin/python models/quantize_i3d.py \
        --model build/models/i3d_kinetics400.onnx \
        --out build/models/i3d_kinetics400_int8.onnx \
        --calib-video build/media/bigbuckbunny.mp4
"""

import argparse
import hashlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_FPS = 25.0
FRAMES = 32
STRIDE = 16
SHORT_SIDE = 256
CROP = 224
DEFAULT_EXCLUDE = "Conv3d_1a_7x7/conv,Mixed_5*,Logits*"


# --- vigil's clip preparation (src/source/file.rs, src/action/sampler.rs, src/action/clip.rs) ---

def _decoded_frames(path):
    """(pts seconds, (frame number, BGR frame)) as vigil's FileReader gives them."""
    import cv2
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        sys.exit(f"{path}: FFmpeg does not recognise it as a video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else 0.0
    step = 1.0 / fps if fps > 0.0 else 1.0 / 25.0
    last, seq = None, 0
    while True:
        ok, m = cap.read()
        if not ok or m is None or m.size == 0:
            break
        reported = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if last is None:
            pts = reported if math.isfinite(reported) and reported >= 0.0 else 0.0
        elif math.isfinite(reported) and reported > last:
            pts = reported
        else:
            pts = last + step
        last = pts
        yield pts, (seq, m)
        seq += 1
    cap.release()


def _sampled(frames, fps=SAMPLE_FPS):
    """Nearest-timestamp resampling to `fps`: yields (item, target time) like sampler.rs."""
    period = 1.0 / fps
    next_k, prev, last_gap = 0, None, 0.0
    for t, item in frames:
        if prev is not None and t <= prev[0]:
            continue
        if prev is None and next_k == 0:
            next_k = math.floor(max(t, 0.0) / period + 1e-6)
        while next_k * period <= t:
            tk = next_k * period
            if prev is not None and tk - prev[0] < t - tk:
                yield prev[1], tk
            else:
                yield item, tk
            next_k += 1
        if prev is not None:
            last_gap = t - prev[0]
        prev = (t, item)
    if prev is not None:  # finish(): the last frame lasts one frame interval
        tp, p = prev
        while next_k * period < tp + last_gap - 1e-9:
            yield p, next_k * period
            next_k += 1


def _round(x):
    """Rust's f64::round for the non-negative sizes here (half away from zero)."""
    return int(math.floor(x + 0.5))


def preprocess(bgr, short_side=SHORT_SIDE, side=CROP):
    """clip.rs Preprocess::apply: resize the short side (bilinear), centre crop, BGR to RGB."""
    import cv2
    h, w = bgr.shape[:2]
    if w <= h:
        size = (short_side, _round(h * short_side / w))
    else:
        size = (_round(w * short_side / h), short_side)
    resized = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    x0, y0 = (size[0] - side) // 2, (size[1] - side) // 2
    return np.ascontiguousarray(resized[y0:y0 + side, x0:x0 + side, ::-1])


def read_clips(path, frames=FRAMES, stride=STRIDE):
    """Every clip vigil cuts from a file: list of [1, 3, T, 224, 224] float32 arrays (0..255)."""
    crops, last_seq, last_crop = [], None, None
    for (seq, m), _t in _sampled(_decoded_frames(path)):
        if seq != last_seq:  # a repeated frame is preprocessed once, as vigil does
            last_seq, last_crop = seq, preprocess(m)
        crops.append(last_crop)
    windows = [crops[e - frames + 1:e + 1] for e in range(frames - 1, len(crops), stride)]
    if not windows and crops:  # ClipWindow::finish: loop a short stream to a full clip
        windows = [[crops[i % len(crops)] for i in range(frames)]]
    return [np.stack(w).astype(np.float32).transpose(3, 0, 1, 2)[None].copy() for w in windows]


# --- quantisation ---

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="the float32 I3D .onnx")
    parser.add_argument("--out", required=True, type=Path, help="the int8 .onnx to write")
    parser.add_argument("--calib-video", required=True, type=Path, help="video whose clips calibrate")
    parser.add_argument("--mode", choices=["static", "dynamic"], default="static")
    parser.add_argument("--format", choices=["QDQ", "QOperator"], default="QDQ")
    parser.add_argument("--method", choices=["MinMax", "Entropy", "Percentile"], default="MinMax")
    parser.add_argument("--activation-type", choices=["QUInt8", "QInt8"], default="QUInt8")
    parser.add_argument("--weight-type", choices=["QInt8", "QUInt8"], default="QInt8")
    parser.add_argument("--no-per-channel", action="store_true", help="per-tensor weights")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights")
    parser.add_argument("--exclude", default=DEFAULT_EXCLUDE,
                        help="comma-separated node names to keep in float; a trailing * matches a prefix (Mixed_5*)")
    parser.add_argument("--calib-windows", type=int, default=0, help="use only the first N windows (0: all)")
    parser.add_argument("--keep-preprocessed", type=Path, help="also save the pre-processed float model here")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.perf_counter()
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")
    print(f"model: {args.model} (sha256 {sha256_of(args.model)})")
    names = [n.name for n in onnx.load(str(args.model), load_external_data=False).graph.node]
    exclude, patterns = [], [p for p in args.exclude.split(",") if p]
    for p in patterns:
        hits = [n for n in names if (n.startswith(p[:-1]) if p.endswith("*") else n == p)]
        if not hits:
            sys.exit(f"--exclude: no node matches {p!r}")
        exclude += [n for n in hits if n not in exclude]

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        t0 = time.perf_counter()
        quant_pre_process(str(args.model), str(pre))
        print(f"quant_pre_process: {time.perf_counter() - t0:.1f} s")
        if args.keep_preprocessed:
            args.keep_preprocessed.write_bytes(pre.read_bytes())
        # Conv and the ops between convs; the rescale at the input and the Squeeze/ReduceMean/
        # Softmax tail stay float, as do the --exclude nodes.
        op_types = ["Conv", "MaxPool", "AveragePool", "Concat", "Relu"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.mode == "dynamic":
            t0 = time.perf_counter()
            quantize_dynamic(str(pre), str(args.out), op_types_to_quantize=["Conv"],
                             per_channel=not args.no_per_channel, reduce_range=args.reduce_range,
                             weight_type=QuantType.QUInt8,  # ConvInteger: uint8 weights
                             nodes_to_exclude=exclude)
            print(f"quantize_dynamic (Conv -> ConvInteger): {time.perf_counter() - t0:.1f} s")
        else:
            t0 = time.perf_counter()
            clips = read_clips(args.calib_video)
            if args.calib_windows:
                clips = clips[:args.calib_windows]
            if not clips:
                sys.exit(f"{args.calib_video}: no frames")
            print(f"calibration: {len(clips)} clips of {FRAMES} frames from {args.calib_video} "
                  f"(sha256 {sha256_of(args.calib_video)}), read in {time.perf_counter() - t0:.1f} s")

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter(clips)

                def get_next(self):
                    c = next(self.it, None)
                    return None if c is None else {"rgb": c}

            extra = {"CalibMaxIntermediateOutputs": 2}
            if args.method == "Percentile":
                extra.update({"CalibPercentile": 99.999})
            t0 = time.perf_counter()
            quantize_static(str(pre), str(args.out), Reader(),
                            quant_format=QuantFormat.QDQ if args.format == "QDQ" else QuantFormat.QOperator,
                            op_types_to_quantize=op_types,
                            per_channel=not args.no_per_channel,
                            reduce_range=args.reduce_range,
                            activation_type=getattr(QuantType, args.activation_type),
                            weight_type=getattr(QuantType, args.weight_type),
                            nodes_to_exclude=exclude,
                            calibrate_method=getattr(CalibrationMethod, args.method),
                            extra_options=extra)
            print(f"quantize_static: {time.perf_counter() - t0:.1f} s (calibration included)")

    recipe = ("mode=dynamic (ConvInteger) weights=QUInt8" if args.mode == "dynamic" else
              f"mode=static format={args.format} method={args.method} activations={args.activation_type} "
              f"weights={args.weight_type}")
    print(f"{recipe} per_channel={not args.no_per_channel} reduce_range={args.reduce_range} "
          f"excluded={patterns} ({len(exclude)} nodes)")
    print(f"wrote {args.out}: {args.out.stat().st_size} bytes (float32 {args.model.stat().st_size}), "
          f"sha256 {sha256_of(args.out)}")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
