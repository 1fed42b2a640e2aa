#!/usr/bin/env python3
"""Opt-in check of the converted MTCNN models: run the full cascade on real photos.

A straightforward numpy port of facenet-pytorch's `detect_face` (facenet_pytorch/models/utils/
detect_face.py in facenet-pytorch==2.6.0) drives the three ONNX models through onnxruntime:
image pyramid (factor 0.709, minimum face 20 px), P-Net, NMS, calibration, square-ing, R-Net,
O-Net, landmarks, final NMS. It prints each face's box, probability and 5 landmarks.

    python3 -m venv /tmp/vigil-mtcnn
    /tmp/vigil-mtcnn/bin/pip install onnxruntime==1.31.1 pillow numpy
    /tmp/vigil-mtcnn/bin/python models/check_mtcnn.py --models build/models ../shared/media/faces/two_people.jpg

Expected on two_people.jpg, both p = 1.000: (233,20,387,221) and (788,46,942,255) with facenet's
own resampling (torch interpolate(mode="area"), the default); (235,28,385,223) and
(788,46,942,255) with --resize opencv, an emulation of OpenCV's INTER_AREA on 8-bit images as an
OpenCV-based cascade (and shared/MODELS.md's measurement) sees it. The first face's O-Net
candidates disagree by several pixels on the top edge, so the resampler picks the winner.

--parity also compares each ONNX model with an independent numpy forward pass of facenet's
PNet/RNet/ONet (conv, PReLU, ceil-mode max pool, permute(0,3,2,1), dense, softmax) on the same
weights, read from the .pt files with convert_mtcnn.py's restricted loader. --bench times each
net on the pyramid of the first image (use a 640x360 video frame for the pipeline's case).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
MIN_FACE = 20
DEFAULT_PT_DIR = "~/.cache/vigil/downloads/extracted/facenet_pytorch-2.6.0-py3-none-any.whl/facenet_pytorch/data"


# ---------------------------------------------------------------------------------------------
# Resampling, one axis at a time (both methods are separable), with prefix sums so a large photo
# costs O(pixels) per pyramid level.

def _prefix(x, axis):
    """Prefix sums along axis with a leading 0: p[k] = sum of x[:k]."""
    p = np.cumsum(x, axis=axis, dtype=np.float64)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0)
    return np.pad(p, pad)


_PREFIX_CACHE = [None, None]  # (image, its prefix sums along the rows): each pyramid level reuses them


def _row_prefix(x, axis, source):
    if axis != 1 or source is None:
        return _prefix(x, axis)
    if _PREFIX_CACHE[0] is not source:
        _PREFIX_CACHE[:] = [source, _prefix(x, axis)]
    return _PREFIX_CACHE[1]


def _torch_area_1d(x, axis, n_out, source=None):
    """interpolate(mode='area') = adaptive average pooling: output i averages input
    [floor(i * n / n_out), ceil((i + 1) * n / n_out))."""
    n = x.shape[axis]
    i = np.arange(n_out)
    start, end = (i * n) // n_out, -(-((i + 1) * n) // n_out)
    p = _row_prefix(x, axis, source)
    shape = [1] * x.ndim
    shape[axis] = n_out
    return (np.take(p, end, axis) - np.take(p, start, axis)) / (end - start).reshape(shape)


def _cv_area_down_1d(x, axis, n_out, source=None):
    """OpenCV INTER_AREA when shrinking: output i averages the exact footprint [i * s, (i + 1) * s),
    s = n / n_out, partly covered pixels weighted by their coverage."""
    n = x.shape[axis]
    p = _row_prefix(x, axis, source)
    edges = np.arange(n_out + 1) * (n / n_out)
    k = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    frac = edges - k
    shape = [1] * x.ndim
    shape[axis] = n_out + 1
    # Integral of the piecewise-constant signal from 0 to each edge.
    integral = np.take(p, k, axis) + frac.reshape(shape) * np.take(x, k, axis)
    lo = np.take(integral, np.arange(n_out), axis)
    hi = np.take(integral, np.arange(1, n_out + 1), axis)
    return (hi - lo) / (n / n_out)


def _cv_area_up_1d(x, axis, n_out, source=None):
    """OpenCV INTER_AREA when not shrinking on both axes: its 'area mode' linear weights."""
    n = x.shape[axis]
    scale, inv = n / n_out, n_out / n
    i = np.arange(n_out)
    sx = np.floor(i * scale).astype(np.int64)
    fx = (i + 1) - (sx + 1) * inv
    fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
    last = sx >= n - 1
    sx, fx = np.where(last, n - 1, sx), np.where(last, 0.0, fx)
    shape = [1] * x.ndim
    shape[axis] = n_out
    fx = fx.reshape(shape)
    return (1 - fx) * np.take(x, sx, axis) + fx * np.take(x, np.minimum(sx + 1, n - 1), axis)


RESIZE = "torch"  # or "opencv"; set from --resize


def area_resize(chw, height, width, whole_image=False):
    """[C, h, w] float -> [C, height, width] float32.

    "torch" (default): interpolate(mode='area') as facenet-pytorch does. "opencv": an emulation of
    cv::resize(INTER_AREA) on an 8-bit image (fractional footprints, result rounded to 0..255),
    which is what an OpenCV-based port of the cascade sees; good to about one grey level.
    whole_image: chw is the (unchanging) input image, so its row prefix sums can be reused."""
    x = chw
    if RESIZE == "torch":
        one_d = _torch_area_1d
    elif chw.shape[1] >= height and chw.shape[2] >= width:
        one_d = _cv_area_down_1d
    else:
        one_d = _cv_area_up_1d
    out = one_d(one_d(x, 1, height, chw if whole_image else None), 2, width)
    if RESIZE == "opencv":
        out = np.clip(np.rint(out), 0, 255)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Box helpers, as detect_face.py.

def nms_union(boxes, scores, threshold):
    """torchvision.ops.nms: IoU without the +1, drop boxes with IoU > threshold."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        order = rest[iou <= threshold]
    return np.array(keep, np.int64)


def nms_min(boxes, scores, threshold):
    """detect_face.nms_numpy(method='Min'): +1 areas, overlap over the smaller box."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return np.array(keep, np.int64)


def bbreg(boxes, reg):
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def rerec(boxes):
    """Make boxes square around their centre (side = the longer side)."""
    out = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crops(image, boxes, size):
    """detect_face.pad + crop + area resize: the box truncated to ints and clamped to the image
    (no zero padding, as facenet-pytorch), 1-based like MATLAB. Returns (batch, kept mask)."""
    _, h, w = image.shape
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    kept = (ey > y - 1) & (ex > x - 1)
    batch = [area_resize(image[:, y[k] - 1:ey[k], x[k] - 1:ex[k]], size, size) for k in np.flatnonzero(kept)]
    return np.stack(batch) if batch else np.zeros((0, 3, size, size), np.float32), kept


def pyramid_scales(h, w, min_face=MIN_FACE, factor=FACTOR):
    m = 12.0 / min_face
    min_side = min(h, w) * m
    scales, scale = [], m
    while min_side >= 12:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


def generate_boxes(reg, prob, scale, threshold):
    """P-Net map -> candidate boxes [x1, y1, x2, y2, score, dx1, dy1, dx2, dy2] (stride 2, cell 12)."""
    ys, xs = np.nonzero(prob >= threshold)
    score = prob[ys, xs]
    offsets = reg[:, ys, xs].T
    bb = np.stack([xs, ys], axis=1).astype(np.float32)
    scale = np.float32(scale)
    q1 = np.floor((2 * bb + 1) / scale)
    q2 = np.floor((2 * bb + 12) / scale)
    return np.concatenate([q1, q2, score[:, None], offsets], axis=1).astype(np.float64)


class Detector:
    def __init__(self, models_dir, threads):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions = {net: ort.InferenceSession(str(Path(models_dir) / f"mtcnn_{net}.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
                         for net in ("pnet", "rnet", "onet")}
        self.times = {"pnet": 0.0, "rnet": 0.0, "onet": 0.0}
        self.last_batch = {"pnet": 0, "rnet": 0, "onet": 0}

    def run(self, net, batch):
        started = time.perf_counter()
        out = self.sessions[net].run(None, {"image": batch})
        self.times[net] += time.perf_counter() - started
        self.last_batch[net] = len(batch)
        return out

    def detect(self, image, thresholds=THRESHOLDS):
        """image: [3, H, W] float32 RGB 0..255. Returns boxes [K, 5] (x1, y1, x2, y2, p), points [K, 5, 2]."""
        _, h, w = image.shape

        # Stage 1: P-Net over the pyramid, NMS 0.5 per scale, then 0.7 over all scales.
        candidates = []
        for scale in pyramid_scales(h, w):
            level = area_resize(image, int(h * scale + 1), int(w * scale + 1), whole_image=True)
            reg, prob = self.run("pnet", level[None])
            boxes = generate_boxes(reg[0], prob[0, 1], scale, thresholds[0])
            candidates.append(boxes[nms_union(boxes[:, :4], boxes[:, 4], 0.5)])
        boxes = np.concatenate(candidates) if candidates else np.zeros((0, 9))
        boxes = boxes[nms_union(boxes[:, :4], boxes[:, 4], 0.7)]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                          boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], axis=1)
        boxes = rerec(boxes)

        # Stage 2: R-Net on 24x24 crops.
        if len(boxes):
            batch, kept = crops(image, boxes, 24)
            boxes = boxes[kept]
            reg, prob = self.run("rnet", batch)
            keep = prob[:, 1] > thresholds[1]
            boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
            reg = reg[keep]
            pick = nms_union(boxes[:, :4], boxes[:, 4], 0.7)
            boxes = rerec(bbreg(boxes[pick], reg[pick]))

        # Stage 3: O-Net on 48x48 crops; landmarks; final NMS ("Min").
        points = np.zeros((0, 5, 2))
        if len(boxes):
            batch, kept = crops(image, boxes, 48)
            boxes = boxes[kept]
            reg, landmarks, prob = self.run("onet", batch)
            keep = prob[:, 1] > thresholds[2]
            boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
            reg, landmarks = reg[keep], landmarks[keep]
            bw = boxes[:, 2] - boxes[:, 0] + 1
            bh = boxes[:, 3] - boxes[:, 1] + 1
            px = bw[:, None] * landmarks[:, :5] + boxes[:, 0:1] - 1
            py = bh[:, None] * landmarks[:, 5:] + boxes[:, 1:2] - 1
            points = np.stack([px, py], axis=2)
            boxes = bbreg(boxes, reg)
            pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
            boxes, points = boxes[pick], points[pick]
        return boxes, points


def load_image(path):
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------
# Independent numpy forward passes of facenet-pytorch's PNet / RNet / ONet, for --parity.

def _conv(x, w, b):
    k = w.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # n, c, h', w', k, k
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[None, :, None, None]


def _prelu(x, a):
    a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, a * x)


def _maxpool_ceil(x, k, s):
    n, c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    padded = np.full((n, c, (oh - 1) * s + k, (ow - 1) * s + k), -np.inf, x.dtype)
    padded[:, :, :h, :w] = x
    win = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(4, 5))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_forward(net, sd, x):
    """facenet_pytorch.models.mtcnn.{PNet,RNet,ONet}.forward in float64 numpy (input already normalised)."""
    p = {k: v.astype(np.float64) for k, v in sd.items()}
    x = x.astype(np.float64)
    if net == "pnet":
        x = _maxpool_ceil(_prelu(_conv(x, p["conv1.weight"], p["conv1.bias"]), p["prelu1.weight"]), 2, 2)
        x = _prelu(_conv(x, p["conv2.weight"], p["conv2.bias"]), p["prelu2.weight"])
        x = _prelu(_conv(x, p["conv3.weight"], p["conv3.bias"]), p["prelu3.weight"])
        return [_conv(x, p["conv4_2.weight"], p["conv4_2.bias"]),
                _softmax(_conv(x, p["conv4_1.weight"], p["conv4_1.bias"]))]
    convs = {"rnet": ["conv1", "conv2", "conv3"], "onet": ["conv1", "conv2", "conv3", "conv4"]}[net]
    pools = {"rnet": {"conv1": (3, 2), "conv2": (3, 2)},  # nn.MaxPool2d(k, s, ceil_mode=True) after conv + PReLU
             "onet": {"conv1": (3, 2), "conv2": (3, 2), "conv3": (2, 2)}}[net]
    for i, name in enumerate(convs, start=1):
        x = _prelu(_conv(x, p[f"{name}.weight"], p[f"{name}.bias"]), p[f"prelu{i}.weight"])
        if name in pools:
            x = _maxpool_ceil(x, *pools[name])
    x = x.transpose(0, 3, 2, 1).reshape(x.shape[0], -1)
    dense = "dense4" if net == "rnet" else "dense5"
    x = _prelu(x @ p[f"{dense}.weight"].T + p[f"{dense}.bias"], p[f"prelu{len(convs) + 1}.weight"])
    heads = [("dense5_2", False), ("dense5_1", True)] if net == "rnet" else \
            [("dense6_2", False), ("dense6_3", False), ("dense6_1", True)]
    outs = []
    for name, softmax in heads:
        y = x @ p[f"{name}.weight"].T + p[f"{name}.bias"]
        outs.append(_softmax(y) if softmax else y)
    return outs


def parity(detector, pt_dir, image):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from convert_mtcnn import load_state_dict  # the same restricted loader the converter uses

    # Random inputs, a real pyramid level, and square crops around the faces found (or the whole
    # image if none).
    rng = np.random.default_rng(0)
    _, h, w = image.shape
    scale = pyramid_scales(h, w)[2]
    boxes, _ = detector.detect(image)
    boxes = rerec(boxes) if len(boxes) else np.array([[0.0, 0.0, w, h, 1.0]])
    inputs = {
        "pnet": [area_resize(image, int(h * scale + 1), int(w * scale + 1))[None],
                 rng.uniform(0, 255, (2, 3, 37, 53)).astype(np.float32)],
        "rnet": [rng.uniform(0, 255, (16, 3, 24, 24)).astype(np.float32), crops(image, boxes, 24)[0]],
        "onet": [rng.uniform(0, 255, (16, 3, 48, 48)).astype(np.float32), crops(image, boxes, 48)[0]],
    }
    worst = 0.0
    for net, batches in inputs.items():
        sd = load_state_dict(os.path.join(pt_dir, f"{net}.pt"))
        for batch in batches:
            got = detector.sessions[net].run(None, {"image": batch})
            want = reference_forward(net, sd, (batch.astype(np.float64) - 127.5) * 0.0078125)
            names = [o.name for o in detector.sessions[net].get_outputs()]
            diffs = []
            for name, g, r in zip(names, got, want):
                if g.shape != r.shape:
                    raise SystemExit(f"parity: {net} {name}: shape {g.shape}, reference {r.shape}")
                diffs.append(f"{name} {np.abs(g - r).max():.2e}")
                worst = max(worst, float(np.abs(g - r).max()))
            print(f"parity {net} input {list(batch.shape)}: max |diff| " + ", ".join(diffs))
    print(f"parity: worst max |diff| {worst:.2e}")
    return worst


def bench(detector, image, repeats):
    _, h, w = image.shape
    levels = [area_resize(image, int(h * s + 1), int(w * s + 1))[None] for s in pyramid_scales(h, w)]
    sess = detector.sessions

    def timed(net, batch):
        sess[net].run(None, {"image": batch})  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            sess[net].run(None, {"image": batch})
            best = min(best, time.perf_counter() - started)
        return best * 1000

    per_level = [timed("pnet", lv) for lv in levels]
    print(f"bench: frame {w}x{h}, {len(levels)} pyramid levels "
          f"({', '.join(f'{lv.shape[3]}x{lv.shape[2]}' for lv in levels)})")
    print(f"bench: pnet per level ms: {', '.join(f'{t:.2f}' for t in per_level)}; total {sum(per_level):.1f} ms")
    for net, size in (("rnet", 24), ("onet", 48)):
        for n in (1, 16, 64):
            batch = np.random.default_rng(1).uniform(0, 255, (n, 3, size, size)).astype(np.float32)
            print(f"bench: {net} batch {n}: {timed(net, batch):.2f} ms")
    for k in detector.times:
        detector.times[k] = 0.0
    runs = []
    for _ in range(max(1, repeats // 2)):
        started = time.perf_counter()
        detector.detect(image)
        runs.append(time.perf_counter() - started)
    n = len(runs)
    print(f"bench: whole cascade best {min(runs) * 1000:.1f} ms (mean over {n}: "
          f"pnet {detector.times['pnet'] / n * 1000:.1f}, rnet {detector.times['rnet'] / n * 1000:.1f}, "
          f"onet {detector.times['onet'] / n * 1000:.1f} ms; the rest is numpy resampling and NMS); "
          f"{detector.last_batch['rnet']} R-Net crops, {detector.last_batch['onet']} O-Net crops")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--models", type=Path, default=Path("build/models"), help="folder with mtcnn_*.onnx")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--resize", choices=["torch", "opencv"], default="torch",
                        help="pyramid and crop resampling: facenet's interpolate(mode='area') (default) "
                             "or an emulation of OpenCV's INTER_AREA on 8-bit images")
    parser.add_argument("--parity", action="store_true", help="compare with a numpy forward of facenet's nets")
    parser.add_argument("--pt-dir", default=DEFAULT_PT_DIR, help="folder with pnet.pt, rnet.pt, onet.pt")
    parser.add_argument("--bench", action="store_true", help="time each net on the first image's pyramid")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    global RESIZE
    RESIZE = args.resize
    detector = Detector(args.models, args.threads)
    for path in args.images:
        image = load_image(path)
        started = time.perf_counter()
        boxes, points = detector.detect(image)
        elapsed = time.perf_counter() - started
        print(f"{path.name} ({image.shape[2]}x{image.shape[1]}): {len(boxes)} face(s) in {elapsed * 1000:.0f} ms")
        for box, pts in zip(boxes, points):
            marks = " ".join(f"({x:.0f},{y:.0f})" for x, y in pts)
            print(f"  box ({box[0]:.0f},{box[1]:.0f},{box[2]:.0f},{box[3]:.0f}) p={box[4]:.4f}"
                  f"{'' if box[4] >= 0.95 else ' (below 0.95)'}  landmarks {marks}")
    if args.parity:
        worst = parity(detector, os.path.expanduser(args.pt_dir), load_image(args.images[0]))
        if worst > 1e-4:
            print("parity: FAILED (> 1e-4)")
            return 1
    if args.bench:
        bench(detector, load_image(args.images[0]), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
