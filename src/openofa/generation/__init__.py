"""Decoding: beam search / greedy / sampling, constraints, and candidate scoring."""

from openofa.generation.constraints import TokenRange, Trie
from openofa.generation.generator import GenerationConfig, Hypothesis, SequenceGenerator, generate
from openofa.generation.scoring import score_candidates

__all__ = [
    "GenerationConfig",
    "Hypothesis",
    "SequenceGenerator",
    "Trie",
    "TokenRange",
    "generate",
    "score_candidates",
]
