#!/usr/bin/env python3
"""Convert one MTCNN net (P-Net, R-Net or O-Net) from facenet-pytorch to ONNX.

The reference network definitions are `facenet_pytorch/models/mtcnn.py` (PNet, RNet, ONet) and
the cascade that uses them `facenet_pytorch/models/utils/detect_face.py`, both in the
`facenet-pytorch==2.6.0` wheel. The weights are `facenet_pytorch/data/{pnet,rnet,onet}.pt`:
torch state dicts in torch's *legacy* serialization (a run of pickles followed by the raw
storages, not the newer zip format). They are read without torch by a restricted unpickler that
only rebuilds tensors from the raw storages and refuses everything else. This script rebuilds
the same graphs with numpy + onnx only.

Contract of the output models (all float32; N symbolic):
  mtcnn_pnet.onnx  input `image` [N, 3, H, W] (H, W symbolic, at least 12)
                   outputs `reg` [N, 4, h, w] (box offsets), `prob` [N, 2, h, w] (softmax over
                   the channel axis; channel 1 = face); h = ceil((H-2)/2) - 4, likewise w
  mtcnn_rnet.onnx  input `image` [N, 3, 24, 24]; outputs `reg` [N, 4], `prob` [N, 2]
  mtcnn_onet.onnx  input `image` [N, 3, 48, 48]; outputs `reg` [N, 4], `landmarks` [N, 10]
                   (x1..x5 then y1..y5 as fractions of the box), `prob` [N, 2]
`image` is RGB, raw 0..255; the graph normalises it as (x - 127.5) * 0.0078125.

Output is byte-identical across runs: no timestamps, fixed producer, opset and IR version,
nodes and initializers emitted in network order, weights copied bit for bit (no arithmetic).

Usage: convert_mtcnn.py --net pnet --weights pnet.pt --out mtcnn_pnet.onnx
"""

import argparse
import collections
import hashlib
import io
import pickle
import struct
import sys

import numpy as np

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; pinned so onnx upgrades don't change bytes
PRODUCER = "vigil models/convert_mtcnn.py"
PRODUCER_VERSION = "1"

# torch/serialization.py: the legacy format starts with these pickled values.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# The layers of facenet-pytorch's PNet, RNet and ONet, in forward() order:
#   ("conv", name, out_channels, kernel), ("prelu", name), ("pool", name, kernel, stride),
#   ("permute",) = x.permute(0, 3, 2, 1) then flatten, ("dense", name, out_features),
#   ("head", output, name, out_features or channels, softmax?).
# Heads branch off the last trunk layer; their order here is the order of the ONNX outputs.
NETS = {
    "pnet": {
        "input_hw": ("H", "W"),
        "trunk": [
            ("conv", "conv1", 10, 3), ("prelu", "prelu1"), ("pool", "pool1", 2, 2),
            ("conv", "conv2", 16, 3), ("prelu", "prelu2"),
            ("conv", "conv3", 32, 3), ("prelu", "prelu3"),
        ],
        "heads": [("reg", "conv4_2", 4, False), ("prob", "conv4_1", 2, True)],
    },
    "rnet": {
        "input_hw": (24, 24),
        "trunk": [
            ("conv", "conv1", 28, 3), ("prelu", "prelu1"), ("pool", "pool1", 3, 2),
            ("conv", "conv2", 48, 3), ("prelu", "prelu2"), ("pool", "pool2", 3, 2),
            ("conv", "conv3", 64, 2), ("prelu", "prelu3"),
            ("permute",),
            ("dense", "dense4", 128), ("prelu", "prelu4"),
        ],
        "heads": [("reg", "dense5_2", 4, False), ("prob", "dense5_1", 2, True)],
    },
    "onet": {
        "input_hw": (48, 48),
        "trunk": [
            ("conv", "conv1", 32, 3), ("prelu", "prelu1"), ("pool", "pool1", 3, 2),
            ("conv", "conv2", 64, 3), ("prelu", "prelu2"), ("pool", "pool2", 3, 2),
            ("conv", "conv3", 64, 3), ("prelu", "prelu3"), ("pool", "pool3", 2, 2),
            ("conv", "conv4", 128, 2), ("prelu", "prelu4"),
            ("permute",),
            ("dense", "dense5", 256), ("prelu", "prelu5"),
        ],
        "heads": [("reg", "dense6_2", 4, False), ("landmarks", "dense6_3", 10, False),
                  ("prob", "dense6_1", 2, True)],
    },
}


class _FloatStorage:
    """Stands in for torch.FloatStorage: a key into the raw storages that follow the pickle."""

    def __init__(self, key, numel):
        self.key = key
        self.numel = numel
        self.array = None  # filled in once the raw storages have been read


class _Tensor:
    """What torch._utils._rebuild_tensor_v2 would make, kept lazy until the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self):
        """A contiguous copy of the tensor's elements (the storages may hold them in any stride order)."""
        if len(self.stride) != len(self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise pickle.UnpicklingError(f"tensor of size {self.size} has bad stride {self.stride}")
        if 0 in self.size:
            return np.zeros(self.size, np.float32)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= self.storage.numel:
            raise pickle.UnpicklingError(f"tensor of size {self.size}, stride {self.stride} at offset "
                                         f"{self.offset} overruns its storage of {self.storage.numel}")
        # Gather with explicit indices rather than as_strided: bounds are checked above and again by numpy.
        index = np.full(self.size, self.offset, dtype=np.int64)
        for axis, (n, s) in enumerate(zip(self.size, self.stride)):
            shape = [1] * len(self.size)
            shape[axis] = n
            index += (np.arange(n, dtype=np.int64) * s).reshape(shape)
        return self.storage.array[index]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _FloatStorage):
        raise pickle.UnpicklingError("tensor is not backed by a FloatStorage")
    if backward_hooks:
        raise pickle.UnpicklingError("tensor carries backward hooks")
    ints = [storage_offset, *size, *stride]
    if not all(type(v) is int for v in ints):
        raise pickle.UnpicklingError("tensor offset, size or stride is not an int")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler for torch state dicts: rebuilds float tensors from raw storages, nothing else.

    Allowed globals are exactly `collections.OrderedDict` (the state dict and its `_metadata`),
    `torch._utils._rebuild_tensor_v2` (replaced by a function that records storage, offset, size
    and stride) and `torch.FloatStorage` (a marker). Persistent ids must be
    ('storage', FloatStorage, key, location, numel, None).
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch", "FloatStorage"): _FloatStorage,
    }

    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"state dict refers to {module}.{name}; only float tensors are allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, location, numel, view_metadata = pid
        if storage_type is not _FloatStorage or location != "cpu" or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        if not (isinstance(key, str) and type(numel) is int and numel >= 0):
            raise pickle.UnpicklingError(f"bad storage id {pid!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _FloatStorage(key, numel)
        elif storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} declared with sizes {storage.numel} and {numel}")
        return storage


def load_state_dict(path):
    """Read a legacy-format torch state dict of float tensors as {name: float32 array}, in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        raise ValueError(f"{path}: torch zip format; this reader handles the legacy format of the pinned files")
    stream = io.BytesIO(data)
    storages = {}

    def load():
        return _StateDictUnpickler(stream, storages).load()

    if load() != LEGACY_MAGIC:
        raise ValueError(f"{path}: not a torch legacy-format file (bad magic number)")
    if load() != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported torch legacy protocol version")
    sys_info = load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise ValueError(f"{path}: not written on a little-endian machine: {sys_info!r}")
    state = load()
    keys = load()
    if not isinstance(state, collections.OrderedDict) or not all(
            isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected an OrderedDict of tensors")
    if not (isinstance(keys, list) and sorted(keys) == sorted(storages) and len(set(keys)) == len(keys)):
        raise ValueError(f"{path}: storage key list doesn't match the storages the tensors use")

    # Each raw storage: int64 element count (little-endian), then the elements.
    for key in keys:
        storage = storages[key]
        header = stream.read(8)
        if len(header) != 8:
            raise ValueError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise ValueError(f"{path}: storage {key} holds {numel} elements, the pickle says {storage.numel}")
        raw = stream.read(4 * numel)
        if len(raw) != 4 * numel:
            raise ValueError(f"{path}: storage {key} is truncated")
        storage.array = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if stream.tell() != len(data):
        raise ValueError(f"{path}: {len(data) - stream.tell()} unexpected bytes after the last storage")
    return collections.OrderedDict((name, tensor.to_numpy()) for name, tensor in state.items())


class _Params:
    """Looks up state dict arrays by name, checks their shapes and remembers which ones were used."""

    def __init__(self, state):
        self._state = state
        self._used = set()

    def get(self, name, shape):
        array = self._state[name]
        if array.shape != tuple(shape):
            raise ValueError(f"{name}: shape {array.shape}, expected {tuple(shape)}")
        self._used.add(name)
        return array

    def unused(self):
        return [name for name in self._state if name not in self._used]


def build_model(net, state, source_sha256):
    from onnx import TensorProto, helper, numpy_helper  # imported here so check_mtcnn.py can use the loader without onnx

    spec = NETS[net]
    params = _Params(state)
    nodes, initializers = [], []

    def constant(name, array):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # As detect_face.py: (x - 127.5) * 0.0078125, kept out of the first conv (whose weights then
    # stay bit-identical to the source) and exact in float32 either way.
    x = node("Sub", ["image", constant("normalise/offset", np.array(127.5, np.float32))], "normalise/sub")
    x = node("Mul", [x, constant("normalise/scale", np.array(0.0078125, np.float32))], "normalise/mul")

    channels, spatial, features = 3, True, None
    for kind, *layer in spec["trunk"]:
        if kind == "conv":
            name, out_channels, k = layer
            w = constant(f"{name}.weight", params.get(f"{name}.weight", (out_channels, channels, k, k)))
            b = constant(f"{name}.bias", params.get(f"{name}.bias", (out_channels,)))
            x = node("Conv", [x, w, b], name, kernel_shape=[k, k], strides=[1, 1], pads=[0, 0, 0, 0])
            channels = out_channels
        elif kind == "prelu":
            (name,) = layer
            width = channels if spatial else features
            slope = params.get(f"{name}.weight", (width,))
            # One slope per channel, shaped to broadcast over [N, C, H, W] (or [N, F] after the dense).
            x = node("PRelu", [x, constant(f"{name}.weight", slope.reshape((width, 1, 1) if spatial else (width,)))],
                     name)
        elif kind == "pool":
            name, k, s = layer
            # nn.MaxPool2d(k, s, ceil_mode=True) without padding: ONNX ceil_mode gives the same
            # windows (with k >= s the last window always starts inside the input).
            x = node("MaxPool", [x], name, kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 0, 0], ceil_mode=1)
        elif kind == "permute":
            # x.permute(0, 3, 2, 1).contiguous().view(N, -1): the dense weights expect W, H, C order.
            x = node("Transpose", [x], "permute", perm=[0, 3, 2, 1])
            x = node("Flatten", [x], "flatten", axis=1)
            h, w = spec["input_hw"]
            features = channels * _trunk_hw(spec, h) * _trunk_hw(spec, w)
            spatial = False
        elif kind == "dense":
            name, out_features = layer
            w = constant(f"{name}.weight", params.get(f"{name}.weight", (out_features, features)))
            b = constant(f"{name}.bias", params.get(f"{name}.bias", (out_features,)))
            x = node("Gemm", [x, w, b], name, transB=1)
            features = out_features
        else:
            raise AssertionError(kind)

    trunk = x
    outputs = []
    for output, name, width, softmax in spec["heads"]:
        if spatial:
            w = constant(f"{name}.weight", params.get(f"{name}.weight", (width, channels, 1, 1)))
            b = constant(f"{name}.bias", params.get(f"{name}.bias", (width,)))
            y = node("Conv", [trunk, w, b], output if not softmax else name, kernel_shape=[1, 1])
            shape = ["N", width, "h", "w"]
        else:
            w = constant(f"{name}.weight", params.get(f"{name}.weight", (width, features)))
            b = constant(f"{name}.bias", params.get(f"{name}.bias", (width,)))
            y = node("Gemm", [trunk, w, b], output if not softmax else name, transB=1)
            shape = ["N", width]
        if softmax:
            node("Softmax", [y], output, axis=1)
        outputs.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, shape))

    unused = params.unused()
    if unused:
        raise ValueError(f"state dict tensors not used by the graph: {unused}")

    h, w = spec["input_hw"]
    graph = helper.make_graph(
        nodes,
        f"mtcnn_{net}",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, h, w])],
        outputs=outputs,
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=f"MTCNN {net} (MIT), converted from facenet-pytorch==2.6.0. "
                   f"Input image: float32 [N,3,{h},{w}] RGB 0..255 (normalised in the graph).",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "source": f"facenet-pytorch==2.6.0:facenet_pytorch/data/{net}.pt",
        "source_sha256": source_sha256,
    })
    return model


def _trunk_hw(spec, size):
    """Spatial size at the end of a fixed-size trunk (valid convs, ceil-mode pools)."""
    for kind, *layer in spec["trunk"]:
        if kind == "conv":
            size = size - layer[2] + 1
        elif kind == "pool":
            k, s = layer[1], layer[2]
            size = -(-(size - k) // s) + 1
        elif kind == "permute":
            return size
    raise AssertionError("trunk has no permute")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", required=True, choices=sorted(NETS), help="which of the three nets")
    parser.add_argument("--weights", required=True, help="facenet_pytorch/data/<net>.pt")
    parser.add_argument("--out", required=True, help="output .onnx path")
    args = parser.parse_args()

    import onnx

    with open(args.weights, "rb") as f:
        source_sha256 = hashlib.sha256(f.read()).hexdigest()
    model = build_model(args.net, load_state_dict(args.weights), source_sha256)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, args.out)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"convert_mtcnn: wrote {args.out} ({n_params} parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
