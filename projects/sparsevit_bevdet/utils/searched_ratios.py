"""``--pruning-ratios`` of tools/train.py and tools/test.py: put searched (or any) SparseViT ratios into a config.

The "searched" configs are templates: their ``model.img_backbone.pruning_ratios`` is the string
``'searched'``, which the tools refuse until ratios are given, e.g. tools/search.py's ``best.json``::

    python tools/train.py configs/bevdet/bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py \
        --pruning-ratios work_dirs/search/best.json
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mmengine.config import Config

__all__ = ['SEARCHED_PLACEHOLDER', 'apply_pruning_ratios', 'read_pruning_ratios']

SEARCHED_PLACEHOLDER = 'searched'


def read_pruning_ratios(spec: str) -> Any:
    """Ratios from a JSON file (a list, a number, or an object with ``pruning_ratios`` such as best.json) or from
    a literal (``0.6``, ``[[0.3, 0.3], [0.0, 0.0], [...], [...]]``). Values are validated when SparseViT is built."""
    path = Path(spec)
    if path.suffix == '.json' or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f'--pruning-ratios: no file {spec}')
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            if 'pruning_ratios' not in data:
                raise KeyError(f"--pruning-ratios {spec}: no 'pruning_ratios' key (keys: {sorted(data)}); "
                               f"tools/search.py's best.json has one")
            data = data['pruning_ratios']
        return data
    try:
        return json.loads(spec)
    except json.JSONDecodeError as err:
        raise ValueError(f'--pruning-ratios {spec!r} is neither a file nor a JSON number / list: {err}') from err


def apply_pruning_ratios(cfg: Config, spec: Optional[str]) -> None:
    """Set ``model.img_backbone.pruning_ratios`` from ``spec`` (if given), then refuse a template whose ratios
    are still the ``'searched'`` placeholder.

    Raises:
        ValueError: ``spec`` given for a model without a SparseViT image backbone, or the placeholder left.
    """
    backbone = cfg.get('model', {}).get('img_backbone') or cfg.get('model', {}).get('backbone')
    is_sparsevit = backbone is not None and str(backbone.get('type', '')).split('.')[-1] == 'SparseViT'
    if spec is not None:
        if not is_sparsevit:
            raise ValueError(f'--pruning-ratios needs a SparseViT image backbone; the config has '
                             f'{backbone.get("type") if backbone else None!r}')
        backbone['pruning_ratios'] = read_pruning_ratios(spec)
    if is_sparsevit and backbone.get('pruning_ratios') == SEARCHED_PLACEHOLDER:
        raise ValueError(f"this config is a template for searched ratios (model.img_backbone.pruning_ratios="
                         f"'{SEARCHED_PLACEHOLDER}'): pass --pruning-ratios work_dirs/<search>/best.json "
                         f"(tools/search.py's output) or --cfg-options model.img_backbone.pruning_ratios=...")
