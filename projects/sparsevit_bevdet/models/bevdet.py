"""BEVDet (Huang et al. 2021, arXiv 2112.11790): camera-only 3D detection in bird's-eye view.

images ``(B, N, 3, H, W)`` -> image backbone (e.g. ``SparseViT``) -> image neck (one stride-16 map) ->
:class:`~.view_transformer.LSSViewTransformer` (BEV map in the ego frame) -> BEV encoder (backbone + neck)
-> mmdet3d's ``CenterHead`` -> ``LiDARInstance3DBoxes`` (9 dims, with velocity) in the ego frame.

Per-sample camera matrices come from ``data_samples[i].metainfo`` (written by
:class:`~projects.sparsevit_bevdet.datasets.transforms.BEVDetImageAug` / ``BEVDetBEVAug`` and kept by
``Pack3DDetInputs``' ``meta_keys``): ``cam2img`` ``(N, 4, 4)`` or ``(N, 3, 3)``, ``cam2ego`` ``(N, 4, 4)``,
``img_aug_matrix`` ``(N, 4, 4)``, ``bev_aug_matrix`` ``(4, 4)`` (identity if absent).

Config keys follow BEVDet's (``img_backbone``, ``img_neck``, ``img_view_transformer``,
``img_bev_encoder_backbone``, ``img_bev_encoder_neck``, ``pts_bbox_head``, ``train_cfg=dict(pts=...)``,
``test_cfg=dict(pts=...)``); the head's BEV grid must be the view transformer's (checked at build time).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from torch import Tensor, nn

from ..utils.cuda_graphs import GraphedModule
from .auxiliary_losses import add_backbone_losses
from .perspective_aux import (
    HEADING_BINS,
    PerspectiveObjectnessHead,
    class_targets,
    covering_box_index,
    perspective_attribute_targets,
    sigmoid_focal_loss,
)
from .view_transformer import pad_to_4x4

__all__ = ['BEVDet', 'collect_camera_matrices']

CAMERA_KEYS = ('cam2img', 'cam2ego', 'img_aug_matrix')


def _as_matrix(value: Any, key: str, index: int) -> Tensor:
    try:
        if isinstance(value, Tensor):
            return value.detach().to('cpu', torch.float32)
        return torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f'data_samples[{index}].metainfo[{key!r}] is not a numeric matrix array: {err}') from err


def collect_camera_matrices(batch_data_samples: Sequence[Det3DDataSample], num_cams: int,
                            device: torch.device) -> Dict[str, Tensor]:
    """Stack the per-sample camera matrices of a batch as float32 tensors on ``device``.

    Returns ``cam2img``, ``cam2ego``, ``img_aug_matrix`` ``(B, N, 4, 4)`` and ``bev_aug_matrix`` ``(B, 4, 4)``.
    Raises ``KeyError`` / ``ValueError`` naming the key and the sample for missing or misshapen entries.
    """
    mats: Dict[str, List[Tensor]] = {k: [] for k in (*CAMERA_KEYS, 'bev_aug_matrix')}
    for i, sample in enumerate(batch_data_samples):
        meta = sample.metainfo
        where = f'data_samples[{i}] (sample_idx {meta.get("sample_idx", "?")})'
        for key in CAMERA_KEYS:
            if key not in meta:
                raise KeyError(f'BEVDet needs metainfo[{key!r}] in {where}; add {key!r} to the meta_keys of '
                               f'Pack3DDetInputs (present keys: {sorted(meta)})')
            mat = _as_matrix(meta[key], key, i)
            allowed = ((3, 3), (3, 4), (4, 4)) if key == 'cam2img' else ((4, 4),)
            if mat.dim() != 3 or mat.shape[0] != num_cams or tuple(mat.shape[1:]) not in allowed:
                raise ValueError(f'{where}: metainfo[{key!r}] must have shape ({num_cams}, 4, 4)'
                                 f'{" or (N, 3, 3)" if key == "cam2img" else ""} for {num_cams} images, '
                                 f'got {tuple(mat.shape)}')
            mats[key].append(pad_to_4x4(mat))
        if meta.get('bev_aug_matrix') is None:
            bda = torch.eye(4)
        else:
            bda = _as_matrix(meta['bev_aug_matrix'], 'bev_aug_matrix', i)
            if tuple(bda.shape) not in ((3, 3), (4, 4)):
                raise ValueError(f'{where}: metainfo["bev_aug_matrix"] must be 4x4 (or 3x3), got {tuple(bda.shape)}')
            bda = pad_to_4x4(bda)
        mats['bev_aug_matrix'].append(bda)
    return {k: torch.stack(v).to(device) for k, v in mats.items()}


# the camera matrices the view transformer takes, in its argument order
VIEW_MATRICES = ('cam2img', 'cam2ego', 'img_aug_matrix', 'bev_aug_matrix')


class BEVDet(Base3DDetector):
    """BEVDet detector: image encoder -> LSS view transform -> BEV encoder -> CenterHead.

    Args:
        img_backbone: e.g. ``dict(type='SparseViT', arch='tiny', out_indices=(2, 3))``.
        img_neck: e.g. ``dict(type='BEVDetImageNeck', in_channels=(384, 768), out_channels=512)``;
            ``None`` passes the backbone's last output on. A tuple / list output uses its first map.
        img_view_transformer: e.g. ``dict(type='LSSViewTransformer', grid_config=..., input_size=(256, 704),
            downsample=16, in_channels=512, out_channels=64)``.
        img_bev_encoder_backbone: e.g. ``dict(type='BEVResNet', in_channels=64)``.
        img_bev_encoder_neck: e.g. ``dict(type='BEVFPNLSS', in_channels=640, out_channels=256)``; ``None`` feeds
            the BEV backbone's first output to the head.
        pts_bbox_head: mmdet3d's ``CenterHead`` config (``CenterPointBBoxCoder``).
        train_cfg, test_cfg: ``dict(pts=...)`` as in BEVDet / CenterPoint configs, passed to the head.
        data_preprocessor: ``Det3DDataPreprocessor`` config (multi-view images -> ``(B, N, 3, H, W)``).
        depth_loss_weight: weight of the LiDAR depth supervision of the view transformer's depth
            distribution (BEVDepth, Li et al. 2022: binary cross-entropy against the one-hot depth bin of
            the nearest LiDAR point per feature pixel, weight 3.0 there); 0 (default) trains as BEVDet.
            Needs ``gt_depth`` in the metainfo (``BEVDetDepthTarget`` in the training pipeline).
        perspective_loss_weight: weight of the auxiliary perspective-view loss
            (:mod:`~.perspective_aux`: a small head classifies every image-feature pixel by the ground-truth
            box covering it; focal loss; training only); 0 (default) trains as BEVDet.
        perspective_head_channels: hidden channels of that head.
        perspective_attribute_weight: with the perspective head, also classify each covered pixel's box heading
            relative to the camera ray (8 bins, cross-entropy) and whether it moves (binary cross-entropy), a
            short path for what CenterHead's rot / vel regression needs (:func:`~.perspective_aux.
            perspective_attribute_targets`); this weight times the sum of the two, inside ``loss_perspective``'s
            weight. 0 (default): classes only.
        depth_object_weight: extra weight of the depth loss on feature pixels covered by a ground-truth box
            (their weight is ``1 + depth_object_weight``, the ground's 1): the ground dominates the pixels and
            its depth is learnt early, while objects' depth, which places them in BEV, is not; 0 (default)
            weights every pixel alike.
        class_names: the dataset's classes in label order (``metainfo['classes']``). CenterHead reads label
            ``k`` as the ``k``-th class of its tasks flattened, so the two orders must agree; given, this is
            checked at build time. BEVDet's task grouping needs BEVDet's class order (car, truck,
            construction_vehicle, bus, trailer, barrier, motorcycle, bicycle, pedestrian, traffic_cone), not
            mmdet3d's NuScenesDataset order: pass it as the dataset's ``metainfo=dict(classes=...)`` too.
        cuda_graphs: on CUDA, run inference from the images and camera matrices to CenterHead's raw outputs
            (:meth:`head_outputs`: image encoder, view transform, BEV encoder, head convolutions) as captured
            CUDA graphs, one per input shape, dtype, autocast state and pruning ratios of the image encoder
            (:class:`~projects.sparsevit_bevdet.utils.cuda_graphs.GraphedModule`); decoding and NMS stay eager.
            Needs ``img_view_transformer.static_geometry=True`` (no host synchronisation in the view transform).
    """

    def __init__(self,
                 img_backbone: dict,
                 img_view_transformer: dict,
                 img_bev_encoder_backbone: dict,
                 pts_bbox_head: dict,
                 img_neck: Optional[dict] = None,
                 img_bev_encoder_neck: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 class_names: Optional[Sequence[str]] = None,
                 depth_loss_weight: float = 0.0,
                 perspective_loss_weight: float = 0.0,
                 perspective_head_channels: int = 64,
                 perspective_attribute_weight: float = 0.0,
                 depth_object_weight: float = 0.0,
                 cuda_graphs: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not depth_loss_weight >= 0.0:
            raise ValueError(f'depth_loss_weight must be >= 0, got {depth_loss_weight!r}')
        self.depth_loss_weight = float(depth_loss_weight)
        if not perspective_loss_weight >= 0.0:
            raise ValueError(f'perspective_loss_weight must be >= 0, got {perspective_loss_weight!r}')
        self.perspective_loss_weight = float(perspective_loss_weight)
        if not perspective_attribute_weight >= 0.0:
            raise ValueError(f'perspective_attribute_weight must be >= 0, got {perspective_attribute_weight!r}')
        if perspective_attribute_weight > 0 and not perspective_loss_weight > 0:
            raise ValueError('perspective_attribute_weight > 0 needs the perspective head: '
                             'set perspective_loss_weight > 0')
        self.perspective_attribute_weight = float(perspective_attribute_weight)
        if not depth_object_weight >= 0.0:
            raise ValueError(f'depth_object_weight must be >= 0, got {depth_object_weight!r}')
        self.depth_object_weight = float(depth_object_weight)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck) if img_neck is not None else None
        self.img_view_transformer = MODELS.build(img_view_transformer)
        if not isinstance(cuda_graphs, bool):
            raise TypeError(f'cuda_graphs must be True or False, got {cuda_graphs!r}')
        if cuda_graphs and not getattr(self.img_view_transformer, 'static_geometry', False):
            raise ValueError('cuda_graphs=True needs a view transformer without host synchronisation: set '
                             'img_view_transformer.static_geometry=True')
        self.cuda_graphs = cuda_graphs
        self._graphs: Optional[GraphedModule] = None
        self.img_bev_encoder_backbone = MODELS.build(img_bev_encoder_backbone)
        self.img_bev_encoder_neck = MODELS.build(img_bev_encoder_neck) if img_bev_encoder_neck is not None else None
        head_cfg = copy.deepcopy(dict(pts_bbox_head))
        for name, cfg in (('train_cfg', train_cfg), ('test_cfg', test_cfg)):
            if cfg is None:
                continue
            if 'pts' not in cfg:
                raise ValueError(f"BEVDet's {name} must hold the head settings under 'pts' "
                                 f"(as in BEVDet / CenterPoint configs), got keys {sorted(cfg)}")
            head_cfg[name] = cfg['pts']
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.pts_bbox_head: nn.Module = MODELS.build(head_cfg)
        self._head_map_size = self._check_head_grid()
        head_classes = [name for task in getattr(self.pts_bbox_head, 'class_names', []) for name in task]
        if class_names is not None and head_classes and list(class_names) != head_classes:
            raise ValueError(f'CenterHead tasks give the label order {head_classes}, the dataset {list(class_names)}; '
                             f'CenterHead would train label k as the k-th task class. Reorder the dataset classes '
                             f"(metainfo=dict(classes=...)) or the tasks so that they agree")
        self.perspective_head: Optional[nn.Module] = None
        if self.perspective_loss_weight > 0:
            num_classes = len(head_classes) or (len(class_names) if class_names is not None else 0)
            if num_classes == 0:
                raise ValueError('perspective_loss_weight > 0 needs the class list: give class_names or CenterHead '
                                 'tasks with class_names')
            self.perspective_head = PerspectiveObjectnessHead(
                self.img_view_transformer.in_channels, num_classes, hidden_channels=perspective_head_channels,
                num_attributes=HEADING_BINS + 1 if self.perspective_attribute_weight > 0 else 0)

    def init_weights(self) -> None:
        """mmengine's recursive init, plus the heatmap prior of CenterHead's task heads, which it misses.

        CenterHead keeps its ``SeparateHead``s in a plain ``nn.ModuleList`` (mmdet3d issue #1554) that
        mmengine's ``BaseModule.init_weights`` does not descend into, so the heatmap bias prior
        (``init_bias`` = -2.19, p = 0.1) is never set: with logits around 0 every BEV cell predicts p = 0.5
        and the focal loss starts in the thousands. We set only that bias, as CenterPoint does; calling
        ``SeparateHead.init_weights`` instead would also Kaiming-initialise (fan-out) the last heatmap conv,
        whose logits then have a std of about 8 and swamp the prior.
        """
        super().init_weights()
        for head in getattr(self.pts_bbox_head, 'task_heads', ()):
            heatmap, init_bias = getattr(head, 'heatmap', None), getattr(head, 'init_bias', None)
            if isinstance(heatmap, nn.Sequential) and init_bias is not None and heatmap[-1].bias is not None:
                nn.init.constant_(heatmap[-1].bias, init_bias)

    # -- public helpers -----------------------------------------------------------------------
    @property
    def image_encoder(self) -> nn.Module:
        """The image backbone (``SparseViT``: hooks and the search call ``set_pruning_ratios`` on it)."""
        return self.img_backbone

    def _check_head_grid(self) -> Optional[Tuple[int, int]]:
        """Check that CenterHead's grid (targets and decoding) is the view transformer's BEV grid.

        A mismatch trains silently on shifted or rescaled targets, so it is an error. Returns the head's
        feature-map size ``(H, W) = (ny, nx) // bev stride`` when it can be derived, else ``None``.
        """
        grid = getattr(self.img_view_transformer, 'grid_config', None)
        if not grid or 'x' not in grid or 'y' not in grid:
            return None
        lower = np.array([grid['x'][0], grid['y'][0]], np.float64)
        extent = np.array([grid['x'][1] - grid['x'][0], grid['y'][1] - grid['y'][0]], np.float64)
        head = self.pts_bbox_head
        coder = getattr(head, 'bbox_coder', None)
        map_size = None
        if coder is not None and hasattr(coder, 'pc_range'):
            cell = np.asarray(coder.voxel_size[:2], np.float64) * coder.out_size_factor
            self._require(np.allclose(coder.pc_range[:2], lower), 'bbox_coder.pc_range[:2]', coder.pc_range[:2],
                          lower)
            nxy = extent / cell
            self._require(np.allclose(nxy, np.round(nxy)), 'grid extent / (bbox_coder.voxel_size * out_size_factor)',
                          nxy, np.round(nxy))
            map_size = (round(nxy[1]), round(nxy[0]))
        train = getattr(head, 'train_cfg', None)
        if train:
            pc_range = np.asarray(train['point_cloud_range'], np.float64)
            self._require(np.allclose(pc_range[:2], lower), "train_cfg.pts['point_cloud_range'][:2]", pc_range[:2],
                          lower)
            osf = train['out_size_factor']
            cell = np.asarray(train['voxel_size'][:2], np.float64) * osf
            fmap = np.asarray(train['grid_size'][:2]) // osf  # (W, H) as CenterHead computes it
            self._require(np.allclose(fmap * cell, extent), "train_cfg.pts grid_size // out_size_factor * "
                          'voxel_size * out_size_factor', fmap * cell, extent)
            train_size = (int(fmap[1]), int(fmap[0]))
            if map_size is not None and map_size != train_size:
                raise ValueError(f'CenterHead: train_cfg gives a {train_size} target map, bbox_coder a {map_size} one')
            map_size = train_size
        return map_size

    @staticmethod
    def _require(ok: bool, what: str, got: Any, expected: Any) -> None:
        if not ok:
            raise ValueError(f'CenterHead grid does not match the view transformer grid: {what} = {got}, '
                             f'expected {expected} (from img_view_transformer.grid_config)')

    # -- features -----------------------------------------------------------------------------
    def extract_img_feat(self, imgs: Tensor) -> Tensor:
        """``(B, N, 3, H, W)`` -> image features ``(B, N, C, fH, fW)`` for the view transformer."""
        if imgs.dim() != 5:
            raise ValueError(f'BEVDet expects multi-view images (B, N, 3, H, W), got {tuple(imgs.shape)}; '
                             f'each sample\'s inputs["img"] must be (N, 3, H, W)')
        b, n = imgs.shape[:2]
        feats = self.img_backbone(imgs.flatten(0, 1))
        if self.img_neck is not None:
            feats = self.img_neck(feats)
        if isinstance(feats, (list, tuple)):
            feats = feats[0] if self.img_neck is not None else feats[-1]
        return feats.view(b, n, *feats.shape[1:])

    def extract_feat(self, batch_inputs_dict: Dict[str, Any],
                     batch_data_samples: Sequence[Det3DDataSample]) -> List[Tensor]:
        """Images + metainfo -> ``[BEV feature map (B, C, ny', nx')]`` (the head's input list)."""
        return self._extract_bev_and_depth(batch_inputs_dict, batch_data_samples)[0]

    def _extract_bev_and_depth(self, batch_inputs_dict: Dict[str, Any], batch_data_samples: Sequence[Det3DDataSample]
                               ) -> Tuple[List[Tensor], Tensor, Tensor, Dict[str, Tensor]]:
        """``extract_feat`` plus the view transformer's depth distribution ``(B, N, D, fH, fW)``, the image
        features ``(B, N, C, fH, fW)`` and the camera matrices (:func:`collect_camera_matrices`)."""
        imgs, mats = self._inputs(batch_inputs_dict, batch_data_samples)
        bev, depth, img_feats = self._bev_features(imgs, *(mats[k] for k in VIEW_MATRICES))
        return [bev], depth, img_feats, mats

    def _bev_features(self, imgs: Tensor, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                      bev_aug_matrix: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Tensors only: images ``(B, N, 3, H, W)`` and matrices -> (BEV map for the head ``(B, C, ny', nx')``,
        depth ``(B, N, D, fH, fW)``, image features ``(B, N, C, fH, fW)``)."""
        img_feats = self.extract_img_feat(imgs)
        bev, depth = self.img_view_transformer(img_feats, cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
        x = self.img_bev_encoder_backbone(bev)
        x = self.img_bev_encoder_neck(x) if self.img_bev_encoder_neck is not None else x[0]
        if self._head_map_size is not None and tuple(x.shape[-2:]) != self._head_map_size:
            raise ValueError(f'the BEV encoder outputs {tuple(x.shape[-2:])} maps but CenterHead\'s grid is '
                             f'{self._head_map_size} (H, W); adjust out_size_factor or the BEV encoder')
        return x, depth, img_feats

    def head_outputs(self, imgs: Tensor, cam2img: Tensor, cam2ego: Tensor, img_aug_matrix: Tensor,
                     bev_aug_matrix: Tensor) -> Any:
        """CenterHead's raw outputs (one ``[dict(reg, height, dim, rot, vel, heatmap)]`` per task) from the images
        ``(B, N, 3, H, W)`` and the camera matrices (:func:`collect_camera_matrices`); replayed as a CUDA graph
        with ``cuda_graphs`` in inference on CUDA."""
        if self.cuda_graphs and imgs.is_cuda and not torch.is_grad_enabled():
            if self._graphs is None:
                self._graphs = GraphedModule(self._head_outputs, key=self._graph_key)
            return self._graphs(imgs, cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)
        return self._head_outputs(imgs, cam2img, cam2ego, img_aug_matrix, bev_aug_matrix)

    def _head_outputs(self, *inputs: Tensor) -> Any:
        return self.pts_bbox_head([self._bev_features(*inputs)[0]])

    def _graph_key(self) -> object:
        return getattr(self.image_encoder, 'pruning_ratios', None)

    def _inputs(self, batch_inputs_dict: Dict[str, Any],
                batch_data_samples: Sequence[Det3DDataSample]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The batch's images ``(B, N, 3, H, W)`` and camera matrices (:func:`collect_camera_matrices`), checked."""
        imgs = batch_inputs_dict.get('imgs')
        if imgs is None:
            raise KeyError(f'BEVDet needs batch_inputs_dict["imgs"] (Det3DDataPreprocessor output of '
                           f'inputs["img"]); got keys {sorted(batch_inputs_dict)}')
        if len(batch_data_samples) != imgs.shape[0]:
            raise ValueError(f'{imgs.shape[0]} image sets but {len(batch_data_samples)} data samples')
        return imgs, collect_camera_matrices(batch_data_samples, imgs.shape[1], imgs.device)

    def depth_loss(self, depth: Tensor, batch_data_samples: Sequence[Det3DDataSample],
                   pixel_weights: Optional[Tensor] = None) -> Tensor:
        """BEVDepth's depth loss: BCE of ``depth (B, N, D, fH, fW)`` against the one-hot bin of each
        feature pixel's ``gt_depth`` (metainfo, ``(N, fH, fW)`` metres, 0 = no LiDAR point), averaged over
        the pixels that have a target (weighted by ``pixel_weights (B, N, fH, fW)`` if given)."""
        targets = []
        for i, sample in enumerate(batch_data_samples):
            if 'gt_depth' not in sample.metainfo:
                raise KeyError(f'depth_loss_weight > 0 needs metainfo["gt_depth"] in data_samples[{i}]: add '
                               f"BEVDetDepthTarget to the training pipeline and 'gt_depth' to Pack3DDetInputs' "
                               f'meta_keys')
            targets.append(torch.as_tensor(np.asarray(sample.metainfo['gt_depth'], np.float32)))
        gt = torch.stack(targets).to(depth.device)
        if gt.shape != depth.shape[:2] + depth.shape[3:]:
            raise ValueError(f'gt_depth has shape {tuple(gt.shape)} but the depth distribution is '
                             f'{tuple(depth.shape)} (B, N, D, fH, fW); BEVDetDepthTarget.downsample must be the '
                             f"view transformer's downsample")
        d_lo, _, d_step = self.img_view_transformer.grid_config['depth']
        bins = torch.round((gt - d_lo) / d_step).long()
        valid = (gt > 0) & (bins >= 0) & (bins < depth.shape[2])
        if not valid.any():
            return depth.sum() * 0.0
        with torch.autocast(device_type=depth.device.type, enabled=False):
            prob = depth.float().permute(0, 1, 3, 4, 2)[valid]  # (P, D)
            onehot = torch.nn.functional.one_hot(bins[valid], depth.shape[2]).float()
            if pixel_weights is None:
                loss = torch.nn.functional.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), onehot, reduction='sum')
                return loss / valid.sum()
            per_pixel = torch.nn.functional.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), onehot,
                                                                 reduction='none').sum(1)  # (P,)
            weights = pixel_weights.to(per_pixel)[valid]
            return (per_pixel * weights).sum() / weights.sum()

    def object_pixel_weights(self, box_index: Tensor) -> Tensor:
        """``(B, N, fH, fW)`` depth-loss weights from :func:`~.perspective_aux.covering_box_index`:
        ``1 + depth_object_weight`` where a ground-truth box covers the feature pixel, 1 elsewhere."""
        return 1.0 + self.depth_object_weight * (box_index >= 0).float()

    # -- mmengine entry points ----------------------------------------------------------------
    def loss(self, batch_inputs_dict: Dict[str, Any], batch_data_samples: List[Det3DDataSample],
             **kwargs) -> Dict[str, Tensor]:
        """CenterHead losses (heatmap focal loss and box L1 per task) for ``gt_instances_3d`` in the ego frame, the
        optional depth and perspective losses, and the image backbone's auxiliary losses (e.g. DynamicTokenSwin's
        ``loss_keep_ratio``)."""
        if getattr(self.pts_bbox_head, 'train_cfg', None) is None:
            raise ValueError('BEVDet.loss needs train_cfg=dict(pts=dict(...)) (CenterHead targets)')
        feats, depth, img_feats, mats = self._extract_bev_and_depth(batch_inputs_dict, batch_data_samples)
        outs = self.pts_bbox_head(feats)
        batch_gt_instances_3d = [sample.gt_instances_3d for sample in batch_data_samples]
        losses = self.pts_bbox_head.loss_by_feat(outs, batch_gt_instances_3d)
        object_weights = self.depth_loss_weight > 0 and self.depth_object_weight > 0
        box_index = None
        if object_weights or self.perspective_head is not None:
            # which box covers each image-feature pixel (depth and image features share the feature grid): one
            # projection of the boxes into every camera serves the depth weights and the perspective targets
            box_index = covering_box_index([gt.bboxes_3d.corners for gt in batch_gt_instances_3d], mats,
                                           img_feats.shape[-2:], self.img_view_transformer.downsample)
        if self.depth_loss_weight > 0:
            weights = self.object_pixel_weights(box_index) if object_weights else None
            losses['loss_depth'] = self.depth_loss_weight * self.depth_loss(depth, batch_data_samples, weights)
        if self.perspective_head is not None:
            losses['loss_perspective'] = self.perspective_loss_weight * self.perspective_loss(
                img_feats, mats, batch_gt_instances_3d, box_index)
        return add_backbone_losses(losses, self.img_backbone)

    def perspective_loss(self, img_feats: Tensor, mats: Dict[str, Tensor], batch_gt_instances_3d: Sequence[Any],
                         box_index: Tensor) -> Tensor:
        """Focal loss of the perspective head on ``img_feats (B, N, C, fH, fW)`` against the class targets of the
        ground-truth boxes (``box_index``: their :func:`~.perspective_aux.covering_box_index`), plus the attribute
        losses when ``perspective_attribute_weight`` > 0."""
        b, n, c, fh, fw = img_feats.shape
        logits = self.perspective_head(img_feats.reshape(b * n, c, fh, fw))
        num_classes = self.perspective_head.num_classes
        targets = class_targets(box_index, [gt.labels_3d for gt in batch_gt_instances_3d], num_classes)
        loss = sigmoid_focal_loss(logits[:, :num_classes], targets.reshape(b * n, -1, fh, fw))
        if self.perspective_attribute_weight == 0:
            return loss
        heading, moving = perspective_attribute_targets([gt.bboxes_3d.tensor for gt in batch_gt_instances_3d],
                                                        box_index, mats)
        attributes = logits[:, num_classes:].float().permute(0, 2, 3, 1).reshape(-1, HEADING_BINS + 1)
        heading, moving = heading.flatten(), moving.flatten()
        terms = []
        if (heading >= 0).any():
            terms.append(F.cross_entropy(attributes[heading >= 0, :HEADING_BINS], heading[heading >= 0]))
        if (moving >= 0).any():
            terms.append(F.binary_cross_entropy_with_logits(attributes[moving >= 0, HEADING_BINS],
                                                            moving[moving >= 0]))
        attribute_loss = sum(terms) if terms else attributes.sum() * 0.0  # keeps the head in the graph (DDP)
        return loss + self.perspective_attribute_weight * attribute_loss

    def predict(self, batch_inputs_dict: Dict[str, Any], batch_data_samples: List[Det3DDataSample],
                **kwargs) -> List[Det3DDataSample]:
        """Data samples with ``pred_instances_3d`` = ``bboxes_3d`` (LiDARInstance3DBoxes, 9 dims, ego frame,
        bottom centre), ``scores_3d`` ``(K,)`` and ``labels_3d`` ``(K,)`` long."""
        if getattr(self.pts_bbox_head, 'test_cfg', None) is None:
            raise ValueError('BEVDet.predict needs test_cfg=dict(pts=dict(...)) (CenterHead decoding and NMS)')
        imgs, mats = self._inputs(batch_inputs_dict, batch_data_samples)
        outs = self.head_outputs(imgs, *(mats[k] for k in VIEW_MATRICES))
        # CenterHead builds boxes with metainfo['box_type_3d']; our boxes are ego-frame LiDAR-style boxes
        metas = [{**sample.metainfo, 'box_type_3d': sample.metainfo.get('box_type_3d', LiDARInstance3DBoxes)}
                 for sample in batch_data_samples]
        results = self.pts_bbox_head.predict_by_feat(outs, metas)
        for res in results:
            res.labels_3d = res.labels_3d.long()
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs_dict: Dict[str, Any],
                 batch_data_samples: Optional[List[Det3DDataSample]] = None, **kwargs) -> Tuple[List[dict], ...]:
        """Raw CenterHead outputs: one ``[dict(reg, height, dim, rot, vel, heatmap)]`` per task."""
        if batch_data_samples is None:
            raise ValueError('BEVDet needs data_samples (camera matrices in metainfo) in tensor mode too')
        imgs, mats = self._inputs(batch_inputs_dict, batch_data_samples)
        return self.head_outputs(imgs, *(mats[k] for k in VIEW_MATRICES))
