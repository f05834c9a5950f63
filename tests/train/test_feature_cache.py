"""The frozen trunk's feature cache: the same features as the trunk, each image computed once,
bounded memory, refused for a trunk that trains, invisible to checkpoints and model copies."""

from __future__ import annotations

import copy

import pytest
import torch

from openofa.errors import OFAError
from openofa.train.feature_cache import (FeatureStore, TrunkFeatureCache, attach_feature_cache,
                                         detach_feature_cache, trunk_digest)
from openofa.train.optim import apply_freezing, set_train_mode
from openofa.train.trainer import Trainer
from train_support import datasets, micro_model, train_config


def frozen_model():
    model = micro_model()
    apply_freezing(model, freeze_resnet=True)
    set_train_mode(model, freeze_resnet=True)
    return model


def test_cached_features_equal_the_trunk_and_each_image_runs_once():
    model = frozen_model()
    trunk = model.encoder.embed_images
    torch.manual_seed(0)
    a, b = torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # each image alone through the trunk: the cache's features, to the bit
        both = torch.cat([a, b])
        expected = torch.cat([type(trunk).forward(trunk, both[i:i + 1]) for i in range(len(both))])
        batched = type(trunk).forward(trunk, both)
    torch.testing.assert_close(expected, batched, atol=1e-4, rtol=1e-4)  # kernels differ by batch size
    cache = attach_feature_cache(model, max_mb=64)
    first = trunk(a)
    assert (cache.hits, cache.misses, len(cache.store)) == (0, 3, 3)
    mixed = trunk(torch.cat([b[:1], a[1:], b[1:]]))  # two new images between two seen ones
    assert (cache.hits, cache.misses, len(cache.store)) == (2, 5, 5)
    again = trunk(torch.cat([a, b]))
    assert (cache.hits, cache.misses) == (7, 5)
    assert torch.equal(first, expected[:3]) and torch.equal(mixed, expected[[3, 1, 2, 4]])
    assert torch.equal(again, expected)
    assert again.is_contiguous(memory_format=torch.channels_last) == batched.is_contiguous(
        memory_format=torch.channels_last)  # the trunk's own layout
    # one changed pixel is another image
    c = a[:1].clone()
    c[0, 0, 0, 0] += 1.0
    trunk(c)
    assert cache.misses == 6


def test_autocast_results_are_kept_apart_from_fp32_ones():
    model = frozen_model()
    trunk = model.encoder.embed_images
    cache = attach_feature_cache(model, max_mb=64)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = trunk(x)
    full = trunk(x)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert cache.misses == 4 and trunk(x).dtype == torch.float32


def test_memory_bound_stops_adding_but_keeps_answering():
    model = frozen_model()
    trunk = model.encoder.embed_images
    x = torch.randn(4, 3, 32, 32)
    one = TrunkFeatureCache.key(x[0])  # any image; the size of one entry:
    with torch.no_grad():
        per_image = type(trunk).forward(trunk, x[:1]).numel() * 4
    assert one[0] == (3, 32, 32)
    cache = attach_feature_cache(model, max_mb=2.5 * per_image / 2**20)
    out = trunk(x)
    assert len(cache.store) == 2 and cache.bytes == 2 * per_image
    torch.testing.assert_close(trunk(x), out, atol=1e-5, rtol=1e-5)
    assert (cache.hits, cache.misses) == (2, 6)


def test_a_trunk_that_trains_is_refused():
    model = micro_model()
    attach_feature_cache(model, max_mb=8)
    with pytest.raises(RuntimeError, match="frozen trunk"):
        model.encoder.embed_images(torch.randn(1, 3, 32, 32))
    with pytest.raises(OFAError, match="image_feature_cache_mb: needs freeze_resnet"):
        train_config("/tmp/unused", image_feature_cache_mb=16)


def test_keys_copies_and_detaching():
    model = frozen_model()
    keys = set(model.state_dict())
    attach_feature_cache(model, max_mb=8)
    assert set(model.state_dict()) == keys
    twin = copy.deepcopy(model)  # what the EMA model is made from
    assert "forward" in vars(twin.encoder.embed_images)
    assert not isinstance(vars(twin.encoder.embed_images)["forward"], TrunkFeatureCache)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(twin.encoder.embed_images(x), model.encoder.embed_images(x), atol=1e-5, rtol=1e-5)
    detach_feature_cache(model)
    assert "forward" not in vars(model.encoder.embed_images)


def test_training_with_the_cache_follows_the_same_path(tmp_path):
    runs = {}
    for name, mb in (("plain", 0), ("cached", 64)):
        losses = []
        cfg = train_config(tmp_path / name, max_epoch=2, freeze_resnet=True, image_feature_cache_mb=mb)
        trainer = Trainer(cfg, micro_model(), datasets(12)[0], hooks=[lambda tr: losses.append(tr.last_stats["loss"])])
        trainer.fit()
        runs[name] = (losses, trainer)
    assert len(runs["cached"][0]) == 4
    assert runs["cached"][0] == pytest.approx(runs["plain"][0], abs=1e-5)
    cache = runs["cached"][1].feature_cache
    assert runs["plain"][1].feature_cache is None
    assert (cache.misses, cache.hits) == (12, 12)  # the second epoch reads every image from memory


def test_stages_share_features_only_with_the_same_trunk(tmp_path):
    memory = FeatureStore()
    trainers = []
    for name, seed in (("first", 0), ("same", 0), ("other", 1)):
        cfg = train_config(tmp_path / name, max_epoch=1, freeze_resnet=True, image_feature_cache_mb=64)
        trainer = Trainer(cfg, micro_model(seed), datasets(12)[0], feature_memory=memory)
        trainer.fit()
        trainers.append(trainer.feature_cache)
    first, same, other = trainers
    assert (first.reused, first.misses, first.hits) == (False, 12, 0)
    assert (same.reused, same.misses, same.hits) == (True, 0, 12)  # the same weights: nothing recomputed
    assert (other.reused, other.misses, other.hits) == (False, 12, 0)  # another trunk: computed again
    assert len(memory.entries) == 12 and memory.digest == trunk_digest(micro_model(1).encoder.embed_images)


def test_trunk_digest_follows_every_weight():
    trunk = micro_model().encoder.embed_images
    before = trunk_digest(trunk)
    assert trunk_digest(micro_model().encoder.embed_images) == before
    buffer = next(b for n, b in trunk.named_buffers() if n.endswith("running_mean"))
    buffer[0] += 1e-6
    assert trunk_digest(trunk) != before
