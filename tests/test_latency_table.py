"""The per-block latency table on a small SparseViT: structure, prediction = remainder + stage overheads + block
entries, caching keyed by the setting, and the interleaved check against measurement (no timing thresholds)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from projects.sparsevit_bevdet.backbones import SparseViT
from projects.sparsevit_bevdet.search import latency_table
from projects.sparsevit_bevdet.search.latency_table import (
    LatencyTable,
    load_or_profile,
    measure_interleaved,
    prediction_check,
    profile_encoder,
)

SMALL = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=7, drop_path_rate=0.0,
             out_indices=(2, 3))
CHOICES = [0.0, 0.5]
MIXED = [[0.0, 0.5], [0.0, 0.0], [0.5, 0.5], [0.0, 0.5]]


@pytest.fixture(scope='module')
def encoder() -> SparseViT:
    torch.manual_seed(0)
    model = SparseViT(**SMALL)
    model.eval()
    return model


@pytest.fixture(scope='module')
def images() -> torch.Tensor:
    return torch.randn(2, 3, 56, 56)


@pytest.fixture(scope='module')
def table(encoder, images) -> LatencyTable:
    return profile_encoder(encoder, images, CHOICES, repeats=1, warmup=0)


def test_table_structure_and_prediction(encoder, images, table):
    assert table.ratio_choices == CHOICES
    assert [len(stage) for stage in table.blocks_ms] == list(SMALL['depths'])
    assert all(len(block) == len(CHOICES) for stage in table.blocks_ms for block in stage)
    assert [len(stage) for stage in table.overhead_ms] == [len(CHOICES)] * 4
    assert len(table.uniform_total_ms) == len(CHOICES)
    entries = [table.remainder_ms, *table.uniform_total_ms, *(v for s in table.overhead_ms for v in s),
               *(v for s in table.blocks_ms for b in s for v in b)]
    assert all(math.isfinite(v) and v >= 0 for v in entries)
    assert table.key['input_shape'] == [2, 3, 56, 56] and table.key['ratio_choices'] == CHOICES
    idx = {0.0: 0, 0.5: 1}
    expected = table.remainder_ms + sum(
        table.overhead_ms[s][idx[max(ratios)]] + sum(table.blocks_ms[s][b][idx[r]] for b, r in enumerate(ratios))
        for s, ratios in enumerate(MIXED))
    assert table.predict(MIXED) == pytest.approx(expected)
    # profiling leaves the encoder as it found it: its ratios, and no hooks
    assert encoder.pruning_ratios == [[0.0, 0.0]] * 4
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in encoder.modules())
    with pytest.raises(KeyError, match='not among the latency table'):
        table.predict([[0.0, 0.3], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match='depths'):
        table.predict([[0.0], [0.0], [0.0], [0.0]])
    assert LatencyTable.from_json(json.loads(json.dumps(table.to_json()))) == table


def test_table_cached_per_setting(encoder, images, tmp_path, monkeypatch):
    calls = []
    real = latency_table.profile_encoder
    monkeypatch.setattr(latency_table, 'profile_encoder', lambda *a, **k: calls.append(a) or real(*a, **k))
    path, logs = tmp_path / 'latency_table.json', []
    first = load_or_profile(path, encoder, images, CHOICES, repeats=1, warmup=0, log=logs.append)
    again = load_or_profile(path, encoder, images, CHOICES, repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 1 and again == first and path.is_file()
    # each property of the key invalidates the cache
    load_or_profile(path, encoder, images[:1], CHOICES, repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 2 and 'input_shape' in logs[-2]
    load_or_profile(path, encoder, images[:1], [0.0, 0.5, 0.8], repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 3 and 'ratio_choices' in logs[-2]
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 7)
    load_or_profile(path, encoder, images[:1], [0.0, 0.5, 0.8], repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 4 and 'threads' in logs[-2]
    other = SparseViT(**dict(SMALL, depths=(2, 2, 4, 2), num_heads=(1, 1, 2, 2)))
    other.eval()
    table = load_or_profile(path, other, images[:1], [0.0, 0.5, 0.8], repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 5 and 'architecture' in logs[-2] and [len(s) for s in table.blocks_ms] == [2, 2, 4, 2]
    assert json.loads(path.read_text())['key']['threads'] == 7
    path.write_text('{broken')
    load_or_profile(path, other, images[:1], [0.0, 0.5, 0.8], repeats=1, warmup=0, log=logs.append)
    assert len(calls) == 6 and 'unreadable' in logs[-2]


def test_interleaved_measurement_and_check(encoder, images, table):
    configs = [[[0.0, 0.0]] * 4, MIXED]
    times = measure_interleaved(encoder, images, configs, repeats=2, warmup=0)
    assert [len(t) for t in times] == [2, 2] and all(v > 0 for t in times for v in t)
    assert encoder.pruning_ratios == [[0.0, 0.0]] * 4
    check = prediction_check(table, encoder, images, configs, repeats=1)
    assert [row['pruning_ratios'] for row in check['configs']] == configs
    for row in check['configs']:
        assert row['predicted_ms'] == pytest.approx(table.predict(row['pruning_ratios']))
        assert row['relative_error'] == pytest.approx((row['predicted_ms'] - row['measured_ms']) / row['measured_ms'])
    errors = [abs(row['relative_error']) for row in check['configs']]
    assert check['mean_abs_relative_error'] == pytest.approx(sum(errors) / 2)
    assert check['max_abs_relative_error'] == max(errors)
    assert check['meets_goal'] == (max(errors) <= check['goal'])
    assert check['key'] == table.key
