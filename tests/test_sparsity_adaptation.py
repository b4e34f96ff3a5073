"""SparsityAdaptationHook: a new valid configuration every iteration, eval ratios, reproducible resume."""
from __future__ import annotations

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.engine import SparsityAdaptationHook, find_image_encoder

SMALL = dict(embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4), out_indices=(3,), drop_path_rate=0.0)


class TinyDetector(BaseModel):
    """A SparseViT behind ``image_encoder``, as BEVDet exposes it, with a regression loss."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = SparseViT(**SMALL)

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


class RecordRatios(Hook):
    priority = 'LOW'  # after the adaptation hook

    def __init__(self) -> None:
        self.train, self.val = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.train.append(find_image_encoder(runner.model).pruning_ratios)

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self.val.append(find_image_encoder(runner.model).pruning_ratios)


def make_runner(work_dir, max_iters: int, recorder: RecordRatios, resume: bool = False) -> Runner:
    from mmengine.evaluator import BaseMetric

    class LossMetric(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(0.0)

        def compute_metrics(self, results):
            return {'zero': 0.0}

    loader = dict(dataset=RandomImages(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=TinyDetector(), work_dir=str(work_dir), train_dataloader=loader, val_dataloader=loader,
        val_evaluator=[LossMetric()], val_cfg=dict(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=4),
        custom_hooks=[SparsityAdaptationHook(eval_ratios=0.25, seed=7), recorder],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False)),
        resume=resume, default_scope='mmdet3d', experiment_name=f'adapt_{work_dir.name}_{max_iters}_{resume}')


def test_every_iteration_gets_a_valid_new_configuration(tmp_path):
    recorder = RecordRatios()
    make_runner(tmp_path / 'a', 8, recorder).train()
    assert len(recorder.train) == 8
    assert len({str(r) for r in recorder.train}) >= 6  # sampled anew, not one fixed setting
    choices = {round(0.1 * i, 1) for i in range(9)}
    for ratios in recorder.train:
        for stage in ratios:
            assert stage == sorted(stage) and set(stage) <= choices
            assert all(stage[2 * g] == stage[2 * g + 1] for g in range(len(stage) // 2))  # W/SW pairs share
    assert recorder.val and all(r == [[0.25] * d for d in SMALL['depths']] for r in recorder.val)


def test_resume_continues_the_same_sequence(tmp_path):
    full = RecordRatios()
    make_runner(tmp_path / 'full', 8, full).train()
    first = RecordRatios()
    make_runner(tmp_path / 'resumed', 4, first).train()
    second = RecordRatios()
    make_runner(tmp_path / 'resumed', 8, second, resume=True).train()
    assert first.train + second.train == full.train


def test_clear_error_without_a_sparsevit():
    with pytest.raises(TypeError, match='no image_encoder, img_backbone or backbone'):
        find_image_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match='ratio_choices'):
        SparsityAdaptationHook(ratio_choices=[0.5, 1.0])
