"""The lr schedule (fairseq's polynomial_decay), the optimizer settings, clipping, freezing and
the order of examples / sharding of micro-batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from openofa.errors import OFAError
from openofa.train import batches as B
from openofa.train.optim import (PolynomialDecaySchedule, apply_freezing, build_optimizer, clip_grad_norm,
                                 set_train_mode, trainable_parameters, warmup_steps)


def schedule(**kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    return PolynomialDecaySchedule(opt, **kw), opt


def test_polynomial_decay_as_fairseq():
    lr, total, warm, end = 1e-4, 100, 6, 2e-7
    s, opt = schedule(lr=lr, total_updates=total, warmup_updates=warm, end_lr=end)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / warm)  # set at start-up
    assert s.lr_at(1) == pytest.approx(lr / warm)  # fairseq: updates 1 and 2 share lr/warmup
    assert s.lr_at(3) == pytest.approx(lr * 3 / warm)
    assert s.lr_at(warm) == pytest.approx(lr)
    for n in (7, 30, 53, 99):
        assert s.lr_at(n) == pytest.approx((lr - end) * (1 - (n - warm) / (total - warm)) + end)
    assert s.lr_at(total) == s.lr_at(total + 50) == end
    s.step(30)
    assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(30))
    s2, _ = schedule(lr=lr, total_updates=total, warmup_updates=warm, end_lr=end)
    s2.load_state_dict(s.state_dict())
    assert s2.get_lr() == s.get_lr()
    p2, _ = schedule(lr=1.0, total_updates=10, power=2.0)
    assert p2.lr_at(0) == 1.0 and p2.lr_at(5) == pytest.approx(0.25)


def test_warmup_from_ratio_or_count_and_bad_values():
    assert warmup_steps(1000, 0.06) == 60
    assert warmup_steps(1000, 0.06, warmup_updates=1000) == 1000
    assert warmup_steps(7, 0.06) == 0
    with pytest.raises(OFAError):
        schedule(lr=1.0, total_updates=0)
    with pytest.raises(OFAError):
        schedule(lr=1.0, total_updates=10, warmup_updates=11)


def test_adamw_decays_every_trainable_parameter_in_one_group():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(model.parameters(), lr=1e-3, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 and g["weight_decay"] == 0.01
    assert len(g["params"]) == 4  # weights, biases and LayerNorm alike
    with pytest.raises(OFAError, match="frozen"):
        build_optimizer([], lr=1e-3)


def test_adamw_on_cpu_uses_the_fused_kernel_with_the_same_steps():
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    runs = []
    for fused in (True, False):
        params = [nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(i))) for i, s in enumerate(shapes)]
        opt = build_optimizer(params, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01) if fused else \
            torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01)
        assert bool(opt.defaults["fused"]) == fused
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * step + i))
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_clip_grad_norm_returns_norm_before_clipping():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], 1.0) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], 0.0) == pytest.approx(5.0)  # 0: measure only
    assert float(p.grad.norm()) == pytest.approx(5.0)


def test_freezing(tiny_model_fresh):
    model = tiny_model_fresh
    apply_freezing(model, freeze_embedding=True, freeze_bn=True)
    emb = model.encoder.embed_tokens.weight
    assert not emb.requires_grad and model.decoder.output_projection.weight is emb
    trunk = model.encoder.embed_images
    assert not trunk.bn1.weight.requires_grad and trunk.conv1.weight.requires_grad
    set_train_mode(model, freeze_bn=True)
    assert model.training and not trunk.bn1.training and trunk.layer1.training
    ids = {id(p) for p in trainable_parameters(model)}
    assert id(emb) not in ids and id(trunk.conv1.weight) in ids
    apply_freezing(model, freeze_resnet=True)
    set_train_mode(model, freeze_resnet=True)
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training


@pytest.fixture
def tiny_model_fresh():
    from train_support import micro_model

    return micro_model()


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = B.epoch_permutation(50, seed=1, epoch=1)
    assert np.array_equal(a, B.epoch_permutation(50, seed=1, epoch=1))
    assert not np.array_equal(a, B.epoch_permutation(50, seed=1, epoch=2))
    assert sorted(a.tolist()) == list(range(50))
    assert B.order_fingerprint(a) != B.order_fingerprint(B.epoch_permutation(50, seed=2, epoch=1))


@pytest.mark.parametrize("n,bs,world", [(21, 3, 1), (21, 3, 2), (22, 2, 4), (5, 2, 4), (16, 4, 4)])
def test_shards_cover_the_global_batches_exactly(n, bs, world):
    order = B.epoch_permutation(n, seed=3, epoch=1)
    per_rank = [B.shard_batches(order, bs, world, r) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # every process the same number of micro-batches
    assert len(per_rank[0]) == B.micro_batches_per_epoch(n, bs, world)
    one = B.shard_batches(order, bs * world, 1, 0)  # one process with the global batch
    for step, global_batch in enumerate(one):
        real = [i for r in range(world) for i in per_rank[r][step] if i >= 0]
        assert real == global_batch  # same examples, same order
        for r in range(world):  # a dummy only where a process has nothing, and it is real data
            if per_rank[r][step][0] < 0:
                assert len(per_rank[r][step]) == 1 and -1 - per_rank[r][step][0] in global_batch
    assert B.updates_per_epoch(21, 3, 1, 2) == 4


def test_seeded_examples_do_not_disturb_the_global_generators():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return float(torch.rand(()))

    items = B.EpochItems(Noisy(), seed=5, epoch=2)
    torch.manual_seed(0)
    first = [items[i][0] for i in range(4)]
    after = torch.rand(())
    torch.manual_seed(123)
    assert [items[i][0] for i in range(4)] == first  # per (seed, epoch, index)
    torch.manual_seed(0)
    assert torch.rand(()) == after  # the caller's stream is untouched
    assert items[-1 - 2] == (first[2], True)  # dummy marker
    assert B.EpochItems(Noisy(), seed=5, epoch=3)[0][0] != first[0]


def test_lr_scale_groups_and_the_schedule_keep_the_ratio():
    from openofa.train.optim import lr_scale_groups

    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)))
    groups = lr_scale_groups(model.named_parameters(), {"1": 4.0, "1.1": 0.5})
    by_scale = {g["lr_scale"]: {id(p) for p in g["params"]} for g in groups}
    assert by_scale[1.0] == {id(p) for p in model[0].parameters()}
    assert by_scale[4.0] == {id(p) for p in model[1][0].parameters()}
    assert by_scale[0.5] == {id(p) for p in model[1][1].parameters()}  # the longest prefix wins
    opt = build_optimizer(groups, lr=1e-3)
    sched = PolynomialDecaySchedule(opt, lr=1e-3, total_updates=10, warmup_updates=2)
    for n in (0, 1, 5, 10):
        sched.step(n)
        lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
        assert lrs[4.0] == 4.0 * lrs[1.0] and lrs[0.5] == 0.5 * lrs[1.0]
        assert sched.get_lr() == lrs[1.0]
    with pytest.raises(OFAError, match="no trainable parameter is named 'decoder'"):
        lr_scale_groups(model.named_parameters(), {"decoder": 2.0})
    with pytest.raises(OFAError, match="must be a number > 0"):
        lr_scale_groups(model.named_parameters(), {"1": 0})
