#!/usr/bin/env python3
"""The peer side of `scripts/bench.py`'s classifier row: Python onnxruntime on vigil's exact input.

Run by bench.py with the bench venv's Python (onnxruntime + numpy), never imported. Loads the
model with the same session settings vigil uses (CPU provider, ORT_ENABLE_ALL, the given
intra-op thread count, intra-op spinning off, ONNX Runtime's default sequential executor), feeds the float32
little-endian tensor that `vigil bench classify --dump-input` wrote, makes one warm-up call and
then `--runs` timed calls, and prints one JSON object on stdout:

    {"ort_version", "threads", "runs", "seconds_per_call": [...], "clips_per_s",
     "top1", "top1_index", "top1_score", "shape"}
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the .onnx file vigil loaded")
    parser.add_argument("--labels", required=True, help="class names, one per line")
    parser.add_argument("--input", required=True, help="float32 little-endian tensor from vigil")
    parser.add_argument("--shape", required=True, help="N,3,T,H,W of that tensor")
    parser.add_argument("--input-name", default="rgb")
    parser.add_argument("--output-name", default="probs")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads")
    parser.add_argument("--runs", type=int, required=True, help="timed calls after one warm-up")
    args = parser.parse_args()

    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.fromfile(args.input, dtype="<f4")
    if x.size != int(np.prod(shape)):
        sys.exit(f"{args.input}: {x.size} floats, shape {shape} needs {int(np.prod(shape))}")
    x = x.reshape(shape)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # As vigil sets it: idle intra-op threads sleep instead of spinning.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # As vigil's default `runtime.cpu_arena: false`: tensors allocated per call.
    opts.enable_cpu_mem_arena = False
    session = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {args.input_name: x}
    outputs = [args.output_name]

    probs = session.run(outputs, feed)[0]  # warm-up, as vigil does
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        session.run(outputs, feed)
        times.append(time.perf_counter() - started)

    with open(args.labels, encoding="utf-8") as f:
        labels = f.read().splitlines()
    top = int(np.argmax(probs[0]))
    print(json.dumps({
        "ort_version": ort.__version__, "threads": args.threads, "runs": args.runs,
        "seconds_per_call": times, "clips_per_s": args.runs * shape[0] / sum(times),
        "top1": labels[top] if top < len(labels) else str(top), "top1_index": top,
        "top1_score": float(probs[0][top]), "shape": list(shape),
    }))


if __name__ == "__main__":
    main()
