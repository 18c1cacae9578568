"""Offline PairUG builder (PairUni section 2.1): readers, image features, k-means medoids,
kNN retrieval + greedy matching, manifest IO. The core (``pairing.core``,
``pairing.matching``) is pure numpy/faiss/scikit-learn.
"""

from pairing.core import AlignedPick, PairingInputError, PairSet, RetrievedPair, build_pairs

__all__ = ["AlignedPick", "PairSet", "PairingInputError", "RetrievedPair", "build_pairs"]
