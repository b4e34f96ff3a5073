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


# ----------------------------------------------------------------------------------------------------
# calibration against whole measured configurations, with a fake timer (no timing in these tests)

def _toy_table() -> LatencyTable:
    """2 stages x 2 blocks; each block 5 / 3.5 / 2.5 ms at ratio 0 / 0.4 / 0.8: dense 20 ms, uniform 0.4 14 ms,
    uniform 0.8 10 ms, every other configuration in between."""
    return LatencyTable(key=dict(device='fake'), ratio_choices=[0.0, 0.4, 0.8], remainder_ms=0.0,
                        overhead_ms=[[0.0] * 3] * 2, blocks_ms=[[[5.0, 3.5, 2.5]] * 2] * 2,
                        uniform_total_ms=[20.0, 14.0, 10.0], repeats=1)


def _true_ms(table: LatencyTable, config) -> float:
    """The fake machine: the profile over-predicts dense by 11 % and the sparsest configuration by 5 %, linearly
    in between (as the synthetic-COCO search saw)."""
    raw = table.predict_uncalibrated(config)
    return raw * (1 / 1.05 + (1 / 1.11 - 1 / 1.05) * (raw - 10.0) / 10.0)


def _fake_timer(table: LatencyTable, calls: list):
    def measure(configs, repeats):
        calls.append(len(configs))
        return [[_true_ms(table, c)] * repeats for c in configs]
    return measure


def test_calibration_arithmetic_and_relative_budget():
    table = _toy_table()
    calls = []
    calibrated = latency_table.calibrate(table, _fake_timer(table, calls), repeats=3)
    cal = calibrated.calibration
    assert calls == [3] and cal.ratios == [0.0, 0.4, 0.8] and cal.repeats == 3 and cal.key == table.key
    assert cal.predicted_ms == [20.0, 14.0, 10.0]
    assert cal.measured_ms == pytest.approx([_true_ms(table, table.uniform(r)) for r in cal.ratios])
    assert calibrated.predict(table.uniform(0.0)) == pytest.approx(20.0 / 1.11)  # dense: the measured dense
    # between the calibrated points the factor is linear in the predicted latency; beyond them, constant
    mixed = [[0.0, 0.0], [0.0, 0.4]]  # 18.5 ms uncalibrated
    f0, f1 = cal.factors[1], cal.factors[0]  # at 14 and 20 ms
    assert calibrated.predict(mixed) == pytest.approx(18.5 * (f0 + (f1 - f0) * (18.5 - 14.0) / 6.0))
    assert cal.factor(5.0) == cal.factors[2] and cal.factor(30.0) == cal.factors[0]
    assert table.predict(mixed) == 18.5  # an uncalibrated table predicts the profile's sum

    # 0.75 x dense: the slowest configuration predicted within the budget, re-measured on the fake machine
    configs = [[[a, b], [c, d]] for a in table.ratio_choices for b in table.ratio_choices
               for c in table.ratio_choices for d in table.ratio_choices]

    def pick_ratio(t: LatencyTable) -> float:
        budget = 0.75 * t.predict(t.uniform(0.0))
        pick = max((c for c in configs if t.predict(c) <= budget), key=t.predict)
        return _true_ms(table, pick) / _true_ms(table, table.uniform(0.0))

    assert pick_ratio(table) > 0.76  # the uncalibrated table's pick misses the budget (as on synthetic COCO)
    assert 0.74 < pick_ratio(calibrated) <= 0.75


def test_calibration_persisted_reloaded_and_redone_for_another_profile(encoder, images, tmp_path, monkeypatch):
    path, logs, calls = tmp_path / 'latency_table.json', [], []

    def measure(configs, repeats):  # a fake timer: the dense encoder 10 ms, uniform r (1 - r / 2) x
        calls.append(repeats)
        return [[10.0 * (1 - c[0][0] / 2)] * repeats for c in configs]

    def load() -> LatencyTable:
        table = load_or_profile(path, encoder, images, CHOICES, repeats=1, warmup=0, log=logs.append)
        return latency_table.ensure_calibrated(path, table, measure, repeats=2, log=logs.append)

    first = load()
    assert calls == [2] and first.predict(first.uniform(0.0)) == pytest.approx(10.0)
    saved = json.loads(path.read_text())
    assert saved['calibration']['key'] == saved['key'] == first.key
    assert saved['calibration']['measured_ms'] == [10.0, 7.5] and saved['calibration']['ratios'] == CHOICES
    assert saved['calibration']['profile_sha256'] == first.profile_sha256()
    # reloaded with the table: not measured again
    again = load()
    assert calls == [2] and again == first and 'reusing the calibration' in logs[-1]

    # a profile that changed since (its entries edited): the calibration is refused, then measured again
    saved['blocks_ms'][0][0][0] *= 2
    with pytest.raises(latency_table.CalibrationMismatchError, match='another profile'):
        LatencyTable.from_json(saved)
    path.write_text(json.dumps(saved))
    edited = load()
    assert calls == [2, 2] and any('dropping its calibration' in m for m in logs)
    assert edited.calibration.profile_sha256 == edited.profile_sha256() != first.profile_sha256()
    # another setting (here the thread count): a new profile, calibrated anew
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 7)
    other = load()
    assert calls == [2, 2, 2] and other.calibration.key['threads'] == 7
    assert json.loads(path.read_text())['calibration']['key']['threads'] == 7


def test_graph_replaying_encoder_profiled_eagerly_and_keyed_apart(images):
    """``cuda_graphs=True``: on CPU the encoder runs eagerly and its table is eager's; the profile itself always
    runs eagerly (replay would skip the per-block hooks) and leaves the flag as it was."""
    torch.manual_seed(0)
    graphed = SparseViT(**SMALL, cuda_graphs=True).eval()
    eager = SparseViT(**SMALL).eval()
    assert latency_table.table_key(graphed, images, CHOICES) == latency_table.table_key(eager, images, CHOICES)
    seen = []
    handle = graphed.stages[0].register_forward_hook(lambda *_: seen.append(graphed.cuda_graphs))
    try:
        table = profile_encoder(graphed, images, CHOICES, repeats=1, warmup=0)
    finally:
        handle.remove()
    assert seen and not any(seen) and graphed.cuda_graphs
    assert all(ms > 0 for stage in table.blocks_ms for block in stage for ms in block)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_graph_table_is_calibrated_against_replay(tmp_path):
    torch.manual_seed(0)
    encoder = SparseViT(**SMALL, cuda_graphs=True).eval().cuda()
    x = torch.randn(2, 3, 56, 56, device='cuda')
    table = load_or_profile(tmp_path / 't.json', encoder, x, CHOICES, repeats=2, warmup=1)
    assert table.key['cuda_graphs'] is True and encoder.cuda_graphs
    calibrated = latency_table.ensure_calibrated(
        tmp_path / 't.json', table, lambda configs, repeats: measure_interleaved(encoder, x, configs, repeats),
        repeats=3)
    # the dense prediction is the replayed dense encoder's measurement
    assert calibrated.predict(calibrated.uniform(0.0)) == pytest.approx(calibrated.calibration.measured_ms[0])
