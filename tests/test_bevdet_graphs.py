"""The whole BEVDet forward up to CenterHead's raw outputs as one capturable unit (issue 20): the view
transformer's static geometry equals the selecting one, the forward from images and matrices reads no data back
to the host (checked with fake tensors, which have no values), and on CUDA the replayed graph equals eager."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from tests.test_bevdet_model import (
    NUM_CAMS,
    build,
    matrices,
    model_cfg,
    rig_metainfo,
    synthetic_batch,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
ROT30 = np.array([[np.cos(0.5), -np.sin(0.5), 0, 0], [np.sin(0.5), np.cos(0.5), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                 np.float32)


def static_cfg(**detector: object) -> dict:
    cfg = model_cfg()
    cfg['img_view_transformer'] = dict(cfg['img_view_transformer'], static_geometry=True)
    cfg.update(detector)
    return cfg


def build_pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights with the selecting and the static geometry."""
    torch.manual_seed(seed)
    selecting = build(model_cfg())
    selecting.init_weights()
    static = build(static_cfg())
    static.load_state_dict(selecting.state_dict())
    return selecting.eval(), static.eval()


def batch_inputs(model: torch.nn.Module, batch_size: int = 2) -> tuple[torch.Tensor, dict]:
    data = model.data_preprocessor(synthetic_batch(batch_size), False)
    # a second sample with a rotated BEV augmentation: points leave and enter the grid
    data['data_samples'][-1].set_metainfo(dict(bev_aug_matrix=ROT30))
    return data['inputs'], data['data_samples']


def test_static_geometry_splats_what_the_selecting_one_does():
    selecting, static = build_pair()
    vt_sel, vt_static = selecting.img_view_transformer, static.img_view_transformer
    mats = matrices([rig_metainfo(), rig_metainfo(bev_aug=ROT30)])
    gen = torch.Generator().manual_seed(1)
    context = torch.randn(2, NUM_CAMS, vt_sel.out_channels, *vt_sel.feature_size, generator=gen)
    depth = torch.rand(2, NUM_CAMS, vt_sel.num_depth, *vt_sel.feature_size, generator=gen)
    expected = vt_sel.splat(context, depth, vt_sel.bev_geometry(*mats.values()))
    geometry = vt_static.bev_geometry(*mats.values())
    got = vt_static.splat(context, depth, geometry)
    assert geometry.point_index is None and geometry.ranks.numel() == depth.numel()  # every point, static shape
    nx, ny, nz = vt_static.grid_size
    assert (geometry.ranks == 2 * nz * ny * nx).any()  # points outside the grid go to the dropped cell
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().sum() > 0


def test_whole_detector_equal_with_static_geometry():
    selecting, static = build_pair()
    inputs, samples = batch_inputs(selecting)
    with torch.no_grad():
        expected = selecting._forward(inputs, samples)
        got = static._forward(inputs, samples)
    for task_expected, task_got in zip(expected, got):
        for name, value in task_expected[0].items():
            torch.testing.assert_close(task_got[0][name], value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_head_outputs_need_no_data_dependent_value(ratio):
    # Fake tensors carry shapes, not values: an op that reads data on the host (nonzero, .item(), torch.equal,
    # boolean indexing, linalg.inv's singularity check) raises here, and would break a CUDA-graph capture.
    _, static = build_pair()
    static.image_encoder.set_pruning_ratios(ratio)
    inputs, samples = batch_inputs(static)
    imgs, mats = static._inputs(inputs, samples)
    fresh = copy.deepcopy(static)  # its index caches will hold fakes
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
        outs = fresh.head_outputs(mode.from_tensor(imgs), *(mode.from_tensor(mats[k]) for k in
                                                            ('cam2img', 'cam2ego', 'img_aug_matrix', 'bev_aug_matrix')))
    heatmap = outs[0][0]['heatmap']
    assert heatmap.shape[0] == 2 and heatmap.shape[-2:] == (64, 64)


def test_cuda_graphs_need_the_static_geometry():
    with pytest.raises(ValueError, match='static_geometry=True'):
        build(dict(model_cfg(), cuda_graphs=True))
    with pytest.raises(TypeError, match='cuda_graphs must be True or False'):
        build(static_cfg(cuda_graphs='yes'))
    model = build(static_cfg(cuda_graphs=True))  # on CPU the flag changes nothing: the forward runs eagerly
    inputs, samples = batch_inputs(model.eval())
    with torch.no_grad():
        assert model._forward(inputs, samples)[0][0]['heatmap'].shape[-2:] == (64, 64)
    assert model._graphs is None


@CUDA
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_cuda_graph_replay_equals_eager(dtype):
    torch.manual_seed(0)
    eager = build(static_cfg()).cuda().eval()
    eager.init_weights()
    graphed = build(static_cfg(cuda_graphs=True)).cuda().eval()
    graphed.load_state_dict(eager.state_dict())
    for model in (eager, graphed):
        model.image_encoder.set_pruning_ratios(0.5)
    inputs, samples = batch_inputs(eager)
    inputs = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad(), torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        expected = eager._forward(inputs, samples)
        for _ in range(2):  # the second call replays the captured graph
            got = graphed._forward(inputs, samples)
    assert graphed._graphs.captures == 1
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for task_expected, task_got in zip(expected, got):
        for name, value in task_expected[0].items():
            torch.testing.assert_close(task_got[0][name].float(), value.float(), rtol=tol, atol=tol)
    graphed.image_encoder.set_pruning_ratios(0.0)  # other ratios: a new capture
    with torch.no_grad(), torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        graphed._forward(inputs, samples)
    assert graphed._graphs.captures == 2
