#!/usr/bin/env python3
"""The peer of `make bench`'s action-path rows: the plain Python loop a user would write.

Decode with OpenCV, resample to --fps by nearest timestamp, resize the short side to 256,
centre-crop 224, RGB, collect --frames frames, one `session.run` per clip every --stride
frames, top-1 label per clip. Sequential: nothing overlaps. The session has the settings vigil
uses (CPU provider, ORT_ENABLE_ALL, --threads intra-op threads, intra-op spinning off,
the CPU memory arena off).
Prints one JSON object: {"clips", "top1": [...], "frames", "seconds"}.
"""

import argparse
import json
import time

import cv2
import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--stride", type=int, default=16)
    p.add_argument("--spinning", action="store_true", help="keep ORT's default intra-op spinning")
    p.add_argument("--arena", action="store_true", help="keep ORT's default CPU memory arena")
    a = p.parse_args()
    started = time.perf_counter()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not a.spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # As vigil's default `runtime.cpu_arena: false`: tensors allocated per call.
    opts.enable_cpu_mem_arena = a.arena
    session = ort.InferenceSession(a.model, sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    labels = open(a.labels, encoding="utf-8").read().splitlines()

    cap = cv2.VideoCapture(a.video)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or a.fps
    crops, top1, frames, next_t, i = [], [], 0, 0.0, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / src_fps
        i += 1
        while next_t <= t + 0.5 / src_fps:  # nearest-timestamp resampling
            h, w = frame.shape[:2]
            s = 256 / min(h, w)
            r = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
            y, x = (r.shape[0] - 224) // 2, (r.shape[1] - 224) // 2
            crops.append(r[y:y + 224, x:x + 224, ::-1])
            frames += 1
            next_t += 1.0 / a.fps
        while len(crops) >= a.frames:
            clip = np.stack(crops[:a.frames]).astype(np.float32)  # T, H, W, C
            x = clip.transpose(3, 0, 1, 2)[None]  # 1, C, T, H, W
            probs = session.run(["probs"], {name: x})[0]
            top1.append(labels[int(np.argmax(probs[0]))])
            del crops[:a.stride]
    print(json.dumps({"clips": len(top1), "top1": top1, "frames": frames,
                      "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
