"""Optimisers and lr schedules."""

import pytest
import torch
from torch import nn

from gclreid.config import ConfigError, OptimConfig
from gclreid.engine.optim import LARS, apply_lr_schedule, build_optimizer, lr_factor, parameter_groups


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, 0.8])
    opt = LARS([{"params": [w], "weight_decay": 0.1, "adapt": True}], lr=0.5, momentum=0.9, eta=0.01)
    update = torch.tensor([0.6, 0.8]) + 0.1 * torch.tensor([3.0, 4.0])
    trust = 0.01 * 5.0 / update.norm()
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * update)


def test_bias_and_norm_parameters_are_excluded_from_decay_and_adaptation():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    groups = parameter_groups([model], weight_decay=1e-4, exclude_bias_bn=True)
    assert [len(g["params"]) for g in groups] == [1, 3]  # Linear weight | Linear bias + BN weight/bias
    assert groups[1]["weight_decay"] == 0 and groups[1]["adapt"] is False
    opt = build_optimizer([model], OptimConfig(name="lars", lr=0.3, lr_batch_scale=256, exclude_bias_bn=True), 512)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6)  # 0.3 x 512/256


def test_unknown_optimizer_and_schedule_are_config_errors():
    with pytest.raises(ConfigError, match="rmsprop"):
        build_optimizer([nn.Linear(2, 2)], OptimConfig(name="rmsprop"), 8)
    with pytest.raises(ConfigError, match="poly"):
        lr_factor(OptimConfig(schedule="poly"), 1.0, 10)


def test_schedules():
    cos = OptimConfig(schedule="cosine", warmup_epochs=2)
    assert lr_factor(cos, 1.0, 12) == pytest.approx(0.5, rel=1e-6)  # half-way through warm-up
    assert lr_factor(cos, 2.0, 12) == pytest.approx(1.0)
    assert lr_factor(cos, 7.0, 12) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(cos, 12.0, 12) == pytest.approx(0.0, abs=1e-12)
    step = OptimConfig(schedule="step", milestones=[10, 20], gamma=0.1)
    assert [lr_factor(step, e, 30) for e in (0, 9.9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.2)
    apply_lr_schedule(opt, step, 15, 30)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02) and opt.param_groups[0]["base_lr"] == 0.2
    apply_lr_schedule(opt, step, 0, 30)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_nesterov_reaches_sgd_and_needs_sgd_with_momentum():
    model = nn.Linear(2, 2)
    assert build_optimizer([model], OptimConfig(name="sgd", nesterov=True), 8).param_groups[0]["nesterov"] is True
    assert build_optimizer([model], OptimConfig(name="sgd"), 8).param_groups[0]["nesterov"] is False  # default
    with pytest.raises(ConfigError, match=r"optim.nesterov=true needs optim.name=sgd \(got 'adam'\)"):
        build_optimizer([model], OptimConfig(name="adam", nesterov=True), 8)
    with pytest.raises(ConfigError, match="optim.nesterov=true needs optim.momentum > 0"):
        build_optimizer([model], OptimConfig(name="sgd", momentum=0.0, nesterov=True), 8)


def test_a_fixed_lr_factor_overrides_the_schedule_until_released():
    from gclreid.engine.optim import fix_lr_factor
    step = OptimConfig(schedule="step", milestones=[10], gamma=0.1)
    opt = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-4)
    fix_lr_factor(opt, 1.0)
    assert apply_lr_schedule(opt, step, 15, 20) == 1.0 and opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    fix_lr_factor(opt, 0.1)
    apply_lr_schedule(opt, step, 0, 20)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    fix_lr_factor(opt, None)
    apply_lr_schedule(opt, step, 15, 20)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5) and opt.param_groups[0]["base_lr"] == 1e-4
    apply_lr_schedule(opt, step, 5, 20)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
