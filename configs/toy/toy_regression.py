# A tiny regression task (projects/sparsevit_bevdet/testing/toy.py): trains in seconds on CPU and
# exercises tools/train.py and tools/test.py end to end: checkpoints, resume, val/test metrics.
#   python tools/train.py configs/toy/toy_regression.py --work-dir work_dirs/toy
#   python tools/test.py configs/toy/toy_regression.py work_dirs/toy/iter_8.pth
custom_imports = dict(imports=['projects.sparsevit_bevdet'], allow_failed_imports=False)
default_scope = 'mmdet3d'

in_channels = 4
model = dict(type='ToyRegressor', in_channels=in_channels, hidden_channels=16)

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # no epoch-end restarts in an iter loop
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyRegressionDataset', num_samples=64, in_channels=in_channels, seed=0))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyRegressionDataset', num_samples=32, in_channels=in_channels, seed=1))
test_dataloader = val_dataloader
val_evaluator = dict(type='ToyRegressionMetric')
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=8, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[6], gamma=0.1)]
# `--auto-scale-lr` scales the lr by (total batch size / base_batch_size)
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
log_level = 'INFO'

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
load_from = None
resume = False
