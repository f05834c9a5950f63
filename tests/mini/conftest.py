"""The small model's training tests share the training tests' helpers (tests/train/train_support.py)."""

import sys
from pathlib import Path

TRAIN_TESTS = str(Path(__file__).resolve().parent.parent / "train")
if TRAIN_TESTS not in sys.path:
    sys.path.insert(0, TRAIN_TESTS)
