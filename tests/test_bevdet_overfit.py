"""Can BEVDet + SparseViT learn at all? The documented overfit check, end to end: train the CPU recipe on
the 16 samples of the train scenes of a 2-key-frame synthetic set (no augmentation) with ``tools/train.py``
and score those same samples through the nuScenes devkit (eval set mini_train).

About 30 minutes on 2 cores, so it is marked ``long`` and deselected by default; run it with
``.venv/bin/python -m pytest -m long tests/test_bevdet_overfit.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_overfit.py'
DATA = REPO / 'data/nuscenes-synth-overfit'


@pytest.mark.long
def test_overfit_reaches_map_0_8(tmp_path: Path) -> None:
    if not (DATA / 'nuscenes_infos_train.pkl').is_file():
        subprocess.run([sys.executable, str(REPO / 'tools/make_synthetic_nuscenes.py'), '--out-dir', str(DATA),
                        '--samples-per-scene', '2', '--create-infos'], cwd=REPO, check=True)
    proc = subprocess.run([sys.executable, str(REPO / 'tools/train.py'), str(CONFIG), '--work-dir', str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for path in tmp_path.glob('*/vis_data/scalars.json')
               for line in path.read_text().splitlines()]
    final = [r for r in records if 'NuScenes/mAP' in r][-1]
    assert final['NuScenes/mAP'] >= 0.8, final
