"""Reference predictions for the nuScenes evaluation path: ground truth fed back, and random boxes.

Used by the tests and ``tools/demo.py`` to show what a perfect and a useless detector score through
the very path a detector's output takes (dataset -> metric's frame conversion -> devkit).
"""
from __future__ import annotations

import numpy as np
import torch


def gt_as_predictions(dataset) -> list:
    """One ``Det3DDataSample`` per sample whose predictions are the sample's ground truth (score 1)."""
    from mmdet3d.structures import Det3DDataSample
    from mmengine.structures import InstanceData

    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        ann = info['eval_ann_info']
        sample = Det3DDataSample(metainfo=dict(sample_idx=info['sample_idx']))
        sample.pred_instances_3d = InstanceData(
            bboxes_3d=ann['gt_bboxes_3d'], scores_3d=torch.ones(len(ann['gt_labels_3d'])),
            labels_3d=torch.as_tensor(ann['gt_labels_3d']))
        sample.pred_instances = InstanceData()
        samples.append(sample)
    return samples


def random_predictions(dataset, seed: int = 0, per_sample: int = 40) -> list:
    """``per_sample`` boxes per sample, uniformly placed within 40 m, random sizes, classes, scores."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(len(dataset)):
        n = per_sample
        boxes = np.concatenate([rng.uniform(-40, 40, (n, 2)), rng.uniform(-1.5, 0, (n, 1)),
                                rng.uniform(0.5, 5, (n, 3)), rng.uniform(-np.pi, np.pi, (n, 1)),
                                rng.uniform(-5, 5, (n, 2))], 1)
        sample = Det3DDataSample(metainfo=dict(sample_idx=dataset.get_data_info(i)['sample_idx']))
        sample.pred_instances_3d = InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(torch.as_tensor(boxes, dtype=torch.float32), box_dim=9),
            scores_3d=torch.as_tensor(rng.uniform(0.05, 1, n), dtype=torch.float32),
            labels_3d=torch.as_tensor(rng.integers(0, 10, n)))
        samples.append(sample)
    return samples


def evaluate_predictions(metric, dataset, predictions: list) -> dict:
    """Feed predictions through ``metric`` as mmengine's evaluator would and return its results."""
    metric.dataset_meta = dataset.metainfo
    for sample in predictions:
        metric.process({}, [sample.to_dict()])
    return metric.evaluate(len(predictions))
