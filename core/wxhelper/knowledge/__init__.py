"""Knowledge: plugin corpora indexed into Chroma and retrieved for prompts."""

from .corpus import CorpusPassage, load_corpus
from .embedding import HashedEmbedding, make_embedding
from .index import IndexSummary, KnowledgeBase

__all__ = ["CorpusPassage", "load_corpus", "HashedEmbedding", "make_embedding", "IndexSummary", "KnowledgeBase"]
