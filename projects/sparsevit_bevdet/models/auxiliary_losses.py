"""Auxiliary losses of a backbone in a detector's loss dict.

A backbone with losses of its own (``DynamicTokenSwin``'s ``loss_keep_ratio``) stores them during a training
forward and returns them once from ``auxiliary_losses()``. A detector's ``loss`` adds them with
:func:`add_backbone_losses` after its forward: BEVDet does; for mmdet configs, :class:`AuxLossMaskRCNN`
(registered in mmdet's ``MODELS``) is ``MaskRCNN`` that does. A segmentor (mmseg) would need the same call in
its ``loss``; none is provided yet.
"""
from __future__ import annotations

from mmdet.models.detectors import MaskRCNN
from torch import Tensor, nn


def add_backbone_losses(losses: dict[str, Tensor], backbone: nn.Module) -> dict[str, Tensor]:
    """Add ``backbone.auxiliary_losses()`` (if the backbone has the method) to ``losses``; returns ``losses``.

    Raises:
        KeyError: a backbone loss has the name of a loss already in ``losses``.
    """
    collect = getattr(backbone, 'auxiliary_losses', None)
    if not callable(collect):
        return losses
    for name, value in collect().items():
        if name in losses:
            raise KeyError(f'the backbone loss {name!r} clashes with a loss of the same name in the detector')
        losses[name] = value
    return losses


class AuxLossMaskRCNN(MaskRCNN):
    """mmdet's ``MaskRCNN`` whose loss dict also holds the backbone's auxiliary losses (e.g. ``loss_keep_ratio``
    of ``DynamicTokenSwin``)."""

    def loss(self, batch_inputs: Tensor, batch_data_samples: list) -> dict:
        """``MaskRCNN.loss`` plus :func:`add_backbone_losses` of ``self.backbone``."""
        return add_backbone_losses(super().loss(batch_inputs, batch_data_samples), self.backbone)
