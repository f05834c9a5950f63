"""Helpers for the training tests: a very small model, synthetic data, and a script entry point
(``python train_support.py RUN_DIR [--kill-after N] ...``) for runs in a separate process."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

SRC = Path(__file__).resolve().parents[2] / "src"

MICRO = dict(encoder_layers=1, decoder_layers=1, encoder_embed_dim=64, decoder_embed_dim=64,
             encoder_ffn_embed_dim=128, decoder_ffn_embed_dim=128, encoder_attention_heads=2,
             decoder_attention_heads=2, vocab_size=600, num_bins=100, code_dict_size=64,
             image_bucket_size=8, token_bucket_size=32, max_source_positions=64, max_target_positions=64)

REGULARISED = dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, encoder_drop_path_rate=0.2,
                   decoder_drop_path_rate=0.2, resnet_drop_path_rate=0.1)


def micro_config(**overrides):
    from openofa.config import get_config

    return get_config("tiny", **{**MICRO, **overrides})


def micro_model(seed: int = 0, **overrides):
    from openofa.model import build_model

    torch.manual_seed(seed)
    return build_model(micro_config(**overrides))


def train_config(run_dir, **overrides):
    from openofa.train import TrainConfig

    base = dict(task="synthetic", model="tiny", batch_size=3, update_freq=2, max_epoch=2, lr=1e-3, warmup_ratio=0.25,
                run_dir=str(run_dir), log_every=1, progress=False, tensorboard=False, validate_every_epochs=0,
                save_every_epochs=0, best_metric="loss")
    base.update(overrides)
    return TrainConfig(**base).validate("test")


def datasets(n: int = 21, image_size: int = 32, augment: bool = False, valid: int = 6, seed: int = 0):
    from openofa.train.synthetic import SyntheticDataset

    train = SyntheticDataset(n, src_len=8, tgt_len=5, image_size=image_size, vocab_size=MICRO["vocab_size"],
                             seed=seed, augment=augment)
    val = SyntheticDataset(valid, src_len=8, tgt_len=5, image_size=image_size, vocab_size=MICRO["vocab_size"],
                           seed=seed + 99)
    return train, val


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--kill-after", type=int, default=0, help="SIGKILL this process after update N")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--config", default="{}", help="JSON overrides of the TrainConfig")
    args = p.parse_args(argv)
    from openofa.train.trainer import Trainer

    cfg = train_config(args.run_dir, num_workers=args.num_workers, **json.loads(args.config))
    train, valid = datasets(augment=True)
    model = micro_model(**REGULARISED)

    def killer(trainer):
        if args.kill_after and trainer.progress.num_updates >= args.kill_after:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(cfg, model, train, valid_data=valid, hooks=[killer])
    summary = trainer.fit()
    print("SUMMARY " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(SRC))
    sys.exit(main())
