"""``--pruning-ratios`` of tools/train.py and tools/test.py: put searched (or any) SparseViT ratios into a config.

The "searched" configs are templates: their ``model.img_backbone.pruning_ratios`` is the string
``'searched'``, which the tools refuse until ratios are given, e.g. tools/search.py's ``best.json``::

    python tools/train.py configs/bevdet/bevdet_sparsevit-t-searched_8xb8-cbgs-12e_nuscenes-256x704.py \
        --pruning-ratios work_dirs/search/best.json
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from mmengine.config import Config

__all__ = ['SEARCHED_PLACEHOLDER', 'apply_pruning_ratios', 'config_pruning_ratios', 'pruning_settings', 'ratio_label',
           'read_pruning_ratios']

SEARCHED_PLACEHOLDER = 'searched'


def _ratio_form_problem(data: Any) -> Optional[str]:
    """Why ``data`` is not SparseViT's ratio format (a number, or one list of numbers per stage); None if it is."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if number(data):
        return None
    if not isinstance(data, list) or not data:
        return f'{json.dumps(data)[:80]} is neither a number nor a non-empty list of stages'
    for i, stage in enumerate(data):
        if not isinstance(stage, list) or not stage or not all(number(r) for r in stage):
            return (f'stage {i} is {json.dumps(stage)[:80]}; every stage must be a non-empty list of numbers '
                    f'(one ratio per block)')
    return None


def read_pruning_ratios(spec: str) -> Any:
    """Ratios from a JSON file (a list, a number, or an object with ``pruning_ratios`` such as best.json) or from
    a literal (``0.6``, ``[[0.3, 0.3], [0.0, 0.0], [...], [...]]``). The form is checked here (errors name the file
    and value); the values' ranges when SparseViT is built.

    Raises:
        FileNotFoundError: ``spec`` names a .json file that does not exist.
        ValueError: the file is not JSON (truncated, corrupt) or does not hold ratios in that form.
    """
    path = Path(spec)
    if path.suffix == '.json' or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f'--pruning-ratios: no file {spec}')
        where = f'--pruning-ratios {spec}'
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f'{where}: not valid JSON ({err}); expected tools/search.py\'s best.json, a number or '
                             f'one list of ratios per stage (truncated file?)') from err
        if isinstance(data, dict):
            if 'pruning_ratios' not in data:
                raise ValueError(f"{where}: no 'pruning_ratios' key (keys: {sorted(data)}); "
                                 f"tools/search.py's best.json has one")
            data = data['pruning_ratios']
            where += " field 'pruning_ratios'"
    else:
        where = f'--pruning-ratios {spec!r}'
        try:
            data = json.loads(spec)
        except json.JSONDecodeError as err:
            raise ValueError(f'{where} is neither a file nor a JSON number / list: {err}') from err
    problem = _ratio_form_problem(data)
    if problem is not None:
        raise ValueError(f'{where}: {problem}. Expected a ratio such as 0.6 or one list per stage, e.g. '
                         '[[0.3, 0.3], [0.0, 0.0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0.0, 0.0]]')
    return data


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


def config_pruning_ratios(path: Path) -> list[list[float]]:
    """The per-stage, per-block ``pruning_ratios`` of the SparseViT backbone (``model.backbone`` or
    ``model.img_backbone``) of the config at ``path``, e.g. one of the paper's searched configurations.

    Raises:
        ValueError: no such file, no SparseViT backbone, or ratios that are not per-stage lists.
    """
    if not Path(path).is_file():
        raise ValueError(f'{path} is not a file')
    model = Config.fromfile(str(path)).get('model', {})
    for key in ('backbone', 'img_backbone'):
        backbone = model.get(key)
        if backbone is not None and str(backbone.get('type', '')).split('.')[-1] == 'SparseViT':
            ratios = backbone.get('pruning_ratios')
            if not isinstance(ratios, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in ratios):
                raise ValueError(f'{path}: model.{key}.pruning_ratios must be per-stage lists of per-block ratios, '
                                 f'got {ratios!r}')
            return [[float(r) for r in stage] for stage in ratios]
    raise ValueError(f"{path} has no SparseViT backbone (model.backbone or model.img_backbone with type='SparseViT')")


def ratio_label(ratio: float) -> str:
    """How the benchmark tools name a uniform ratio (``r=0.60``)."""
    return f'r={ratio:.2f}'


def pruning_settings(ratios: list[float], configs: list[Path]) -> list[tuple[str, Any]]:
    """The benchmark tools' settings: ``(label, ratios)`` for each uniform ratio, then ``(config name, per-block
    ratios)`` for each config (:func:`config_pruning_ratios`).

    Raises:
        ValueError: ``ratios`` without 0 (every setting is reported against dense), or a bad config.
    """
    if 0.0 not in ratios:
        raise ValueError(f'the ratios must include 0 (every setting is reported against dense), got {ratios}')
    return [(ratio_label(r), r) for r in ratios] + [(Path(c).stem, config_pruning_ratios(c)) for c in configs]
