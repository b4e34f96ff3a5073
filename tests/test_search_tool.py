"""tools/search.py end to end on the small synthetic set: a detector checkpoint, real validation scoring,
measured encoder latency, the outputs a person reads, and resuming from the state file."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from projects.sparsevit_bevdet.testing.configs import small_demo_config

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location('search_tool', ROOT / 'tools' / 'search.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_cfg(synthetic_nuscenes, tmp_path) -> Config:
    return small_demo_config(synthetic_nuscenes.root, synthetic_nuscenes.image_size, tmp_path / 'results')


def test_search_tool_runs_and_resumes(synthetic_nuscenes, tmp_path):
    from mmdet3d.registry import MODELS

    tool = load_tool()
    cfg = small_cfg(synthetic_nuscenes, tmp_path)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        model = MODELS.build(cfg.model)
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    args = argparse.Namespace(config='cpu-demo', latency_budget_ms=1e6, metric='NuScenes/NDS', population=2,
                              parents=1, generations=1, mutation_prob=0.5, ratio_choices=[0.0, 0.4, 0.8],
                              latency_repeats=1, threads=None, seed=0, work_dir=tmp_path / 'search')
    best = tool.run_search(cfg, str(ckpt), args)
    state = json.loads((tmp_path / 'search' / 'search_state.json').read_text())
    evaluated = len(state['evaluations'])
    # a second run with the same state file finds the work done and evaluates nothing new
    again = tool.run_search(small_cfg(synthetic_nuscenes, tmp_path), str(ckpt), args)
    assert evaluated >= 2
    assert len(json.loads((tmp_path / 'search' / 'search_state.json').read_text())['evaluations']) == evaluated
    assert again['group_ratios'] == best['group_ratios']
    assert best['latency_ms'] > 0 and 0.0 <= best['score'] <= 1.0
    assert [len(s) for s in best['pruning_ratios']] == [2, 2, 6, 2]
    assert json.loads((tmp_path / 'search' / 'best.json').read_text())['pruning_ratios'] == best['pruning_ratios']
    assert (tmp_path / 'search' / 'search_pareto.png').read_bytes()[:4] == b'\x89PNG'
