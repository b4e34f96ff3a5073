"""SparsityAdaptationHook: a new valid configuration every iteration, per-iteration seeding (same on every
rank, reproducible resume), the sandwich rule, and evaluation that only undoes the hook's own changes."""
from __future__ import annotations

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from projects.sparsevit_bevdet.backbones import SparseViT, expand_group_ratios
from projects.sparsevit_bevdet.backbones.sparsevit import RatioSpec
from projects.sparsevit_bevdet.engine import SparsityAdaptationHook, find_image_encoder

SMALL = dict(embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4), out_indices=(3,), drop_path_rate=0.0)
CHOICES = {round(0.1 * i, 1) for i in range(9)}


def uniform(ratio: float) -> list[list[float]]:
    return [[ratio] * d for d in SMALL['depths']]


class TinyDetector(BaseModel):
    """A SparseViT behind ``image_encoder``, as BEVDet exposes it, with a regression loss."""

    def __init__(self, pruning_ratios: RatioSpec = 0.0) -> None:
        super().__init__()
        self.image_encoder = SparseViT(**SMALL, pruning_ratios=pruning_ratios)

    def forward(self, inputs, targets=None, mode='tensor'):
        feat = self.image_encoder(inputs)[0].mean((1, 2, 3))  # default_collate stacked the batch
        if mode == 'loss':
            return {'loss': ((feat - targets) ** 2).mean()}
        return [{'pred': f} for f in feat]


class RandomImages(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 64, 96, generator=g), targets=torch.randn((), generator=g))


class ZeroMetric(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(0.0)

    def compute_metrics(self, results):
        return {'zero': 0.0}


class RecordRatios(Hook):
    """The encoder's ratios as every train / val / test batch sees them."""

    priority = 'LOW'  # after the adaptation hook

    def __init__(self) -> None:
        self.train, self.val, self.test = [], [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.train.append(find_image_encoder(runner.model).pruning_ratios)

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self.val.append(find_image_encoder(runner.model).pruning_ratios)

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self.test.append(find_image_encoder(runner.model).pruning_ratios)


def make_runner(work_dir, max_iters: int, recorder: RecordRatios, resume: bool = False,
                pruning_ratios: RatioSpec = 0.0, **hook_options) -> Runner:
    """A runner whose hook comes from its config dict (seed 7 and ``hook_options``), as in the adapt config."""
    loader = dict(dataset=RandomImages(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=TinyDetector(pruning_ratios), work_dir=str(work_dir), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=[ZeroMetric()], val_cfg=dict(),
        test_dataloader=loader, test_evaluator=[ZeroMetric()], test_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=4),
        custom_hooks=[dict(type='SparsityAdaptationHook', seed=7, **hook_options), recorder],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False)),
        resume=resume, default_scope='mmdet3d', experiment_name=f'adapt_{work_dir.name}_{max_iters}_{resume}')


def assert_valid(ratios: list[list[float]]) -> None:
    for stage in ratios:
        assert stage == sorted(stage) and set(stage) <= CHOICES
        assert all(stage[2 * g] == stage[2 * g + 1] for g in range(len(stage) // 2))  # W/SW pairs share


def test_every_iteration_gets_a_valid_new_configuration(tmp_path):
    recorder = RecordRatios()
    make_runner(tmp_path / 'a', 8, recorder, eval_ratios=0.25).train()
    assert len(recorder.train) == 8
    assert len({str(r) for r in recorder.train}) >= 6  # sampled anew, not one fixed setting
    for ratios in recorder.train:
        assert_valid(ratios)
    assert len(recorder.val) == 8 and all(r == uniform(0.25) for r in recorder.val)  # explicit eval_ratios


def test_validation_during_training_sees_the_config_ratios(tmp_path):
    recorder = RecordRatios()
    runner = make_runner(tmp_path / 'c', 8, recorder, pruning_ratios=0.6)  # default eval_ratios=None
    runner.train()
    assert len(recorder.val) == 8 and all(r == uniform(0.6) for r in recorder.val)  # two validations
    after_validation = recorder.train[4:]  # iterations 4..7 follow the validation at iteration 4
    assert len({str(r) for r in after_validation}) >= 3 and uniform(0.6) not in after_validation
    assert find_image_encoder(runner.model).pruning_ratios == uniform(0.6)  # after_train restored them


@pytest.mark.parametrize('hook_options', [{}, {'eval_ratios': 0.25}], ids=['default', 'eval_ratios'])
def test_untrained_runs_evaluate_the_config_ratios(tmp_path, hook_options):
    # as tools/test.py <adapt config> CKPT --cfg-options model.img_backbone.pruning_ratios=0.6
    recorder = RecordRatios()
    runner = make_runner(tmp_path / f'a_{len(hook_options)}', 8, recorder, pruning_ratios=0.6, **hook_options)
    runner.test()
    runner.val_loop.run()
    assert len(recorder.test) == 4 and len(recorder.val) == 4
    assert all(r == uniform(0.6) for r in recorder.test + recorder.val)


def test_search_candidate_is_evaluated_as_set(tmp_path):
    # as tools/search.py: set a candidate's ratios, then run the val loop
    recorder = RecordRatios()
    runner = make_runner(tmp_path / 'b', 8, recorder, eval_ratios=0.25)
    encoder = find_image_encoder(runner.model)
    candidates = [[[0.1], [0.2], [0.3, 0.5], [0.7]], [[0.0], [0.4], [0.4, 0.8], [0.6]]]
    for candidate in candidates:
        encoder.set_pruning_ratios(expand_group_ratios(encoder.search_space(), candidate))
        runner.val_loop.run()
    expected = [expand_group_ratios(encoder.search_space(), c) for c in candidates]
    assert recorder.val == [expected[0]] * 4 + [expected[1]] * 4


def test_same_seed_same_sequence_on_every_rank():
    space = SparseViT(**SMALL).search_space()
    rank0, rank1 = SparsityAdaptationHook(seed=3), SparsityAdaptationHook(seed=3)
    sequence = [rank0.sample(space, i) for i in range(20)]
    assert sequence == [rank1.sample(space, i) for i in range(20)]
    assert len({str(r) for r in sequence}) >= 15
    started_late = SparsityAdaptationHook(seed=3)
    assert [started_late.sample(space, i) for i in range(12, 20)] == sequence[12:]
    assert [SparsityAdaptationHook(seed=4).sample(space, i) for i in range(20)] != sequence


def test_resume_continues_the_same_sequence(tmp_path):
    full = RecordRatios()
    make_runner(tmp_path / 'full', 8, full).train()
    first = RecordRatios()
    make_runner(tmp_path / 'resumed', 4, first).train()
    second = RecordRatios()
    make_runner(tmp_path / 'resumed', 8, second, resume=True).train()
    assert first.train + second.train == full.train


def test_sandwich_rule_always_trains_an_extreme():
    space = SparseViT(**SMALL).search_space()
    hook = SparsityAdaptationHook(sandwich_prob=1.0)
    configs = [hook.sample(space, i) for i in range(20)]
    assert all(c in (uniform(0.0), uniform(0.8)) for c in configs)
    assert uniform(0.0) in configs and uniform(0.8) in configs


def test_sandwich_rule_frequency():
    space = SparseViT(**SMALL).search_space()
    hook = SparsityAdaptationHook(ratio_choices=[0.2, 0.3, 0.5], sandwich_prob=0.5)
    configs = [hook.sample(space, i) for i in range(400)]
    densest = sum(c == uniform(0.2) for c in configs) / 400
    sparsest = sum(c == uniform(0.5) for c in configs) / 400
    assert 0.4 <= densest + sparsest <= 0.6  # expected 0.5 (+ 2 * 3^-5 from random draws), std 0.025
    assert 0.15 <= densest <= 0.35 and 0.15 <= sparsest <= 0.35
    for c in configs:
        assert all(stage == sorted(stage) and set(stage) <= {0.2, 0.3, 0.5} for stage in c)


def test_clear_errors():
    with pytest.raises(TypeError, match='no image_encoder, img_backbone or backbone'):
        find_image_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='ratio_choices'):
        SparsityAdaptationHook(ratio_choices=[0.5, 1.0])
    for seed in (None, -1, 1.5):
        with pytest.raises(ValueError, match='seed must be a non-negative int'):
            SparsityAdaptationHook(seed=seed)
    for prob in (-0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match=r'sandwich_prob must be a probability in \[0, 1\]'):
            SparsityAdaptationHook(sandwich_prob=prob)
