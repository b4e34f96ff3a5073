"""tools/search.py end to end on the small synthetic set: a detector checkpoint, real validation scoring
(full split and proxy subset), the latency table, the baselines, the outputs a person reads, resuming
from the state files, refusing another search's state, and the ratios in effect during validation."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import ValLoop

from projects.sparsevit_bevdet.backbones import SparseViT, expand_group_ratios
from projects.sparsevit_bevdet.engine import find_image_encoder
from projects.sparsevit_bevdet.search import StateMismatchError
from projects.sparsevit_bevdet.testing.configs import DEMO_CONFIG, small_search_cfg
from projects.sparsevit_bevdet.utils.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
SPACE_DEPTHS = [2, 2, 6, 2]
# per validation run, the image encoder's ratios before each batch (filled by SearchTestRatioRecorderHook)
RECORDED: list[list[list[list[float]]]] = []


@HOOKS.register_module(force=True)
class SearchTestRatioRecorderHook(Hook):
    """Records the ratios in effect before every validation batch, after every other hook ran."""

    priority = 'LOWEST'

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if batch_idx == 0:
            RECORDED.append([])
        RECORDED[-1].append(find_image_encoder(runner.model).pruning_ratios)


@pytest.fixture
def checkpoint(search_checkpoint: Path) -> Path:
    return search_checkpoint


@pytest.fixture(scope='module')
def tool():
    return load_tool('search')




SMALL_SEARCH = ['--population', '2', '--parents', '2', '--generations', '1', '--mutation-prob', '0.5',
                '--ratio-choices', '0.0', '0.4', '0.8', '--table-repeats', '1', '--check-samples', '2',
                '--check-repeats', '1', '--final-repeats', '2']


@pytest.fixture
def val_runs(monkeypatch) -> list:
    """Counts validation runs (each is one scored evaluation); not the one-sample run of every start that checks
    the evaluator produces --metric."""
    runs = []
    real = ValLoop.run

    def run(self):
        if len(self.dataloader.dataset) > 1:
            runs.append(1)
        return real(self)

    monkeypatch.setattr(ValLoop, 'run', run)
    return runs


def search(tool, cfg, checkpoint: Path, work_dir: Path, *extra: str) -> dict:
    args = tool.parse_args([str(DEMO_CONFIG), str(checkpoint), *SMALL_SEARCH, '--work-dir', str(work_dir), *extra])
    return tool.run_search(cfg, str(checkpoint), args)


def test_search_tool_runs_resumes_and_refuses_other_states(tool, synthetic_nuscenes, checkpoint, tmp_path,
                                                           val_runs, capsys):
    work = tmp_path / 'search'
    best = search(tool, small_search_cfg(synthetic_nuscenes, tmp_path), checkpoint, work, '--latency-budget-ms', '1e6',
                  '--uniform-ratios')
    history = json.loads((work / 'search_history.json').read_text())
    full = json.loads((work / 'scores_full.json').read_text())['scores']
    assert len(val_runs) == len(full)  # every candidate scored once, the random search included
    n = len(history['evolution'])
    assert n == 2 and len(history['random']) == n
    assert best['evolution']['evaluations'] == best['random']['evaluations'] == n
    for name in ('evolution', 'random', 'uniform'):
        entry = best[name]
        assert [len(s) for s in entry['pruning_ratios']] == SPACE_DEPTHS
        assert 0.0 <= entry['score'] <= 1.0
        assert entry['predicted_latency_ms'] > 0 and entry['measured_latency_ms'] > 0
        assert entry['meets_budget'] is True  # a 1e6 ms budget
    assert best['uniform']['ratio'] == 0.0  # the densest uniform ratio within the budget
    assert [u['ratio'] for u in best['uniform_scored']] == [0.0]
    assert best['group_ratios'] == best['evolution']['group_ratios'] and best['latency_budget_ms'] == 1e6
    assert best['measured_ratio'] == pytest.approx(best['latency_ms'] / best['dense_latency_ms'])
    check = json.loads((work / 'latency_table_check.json').read_text())
    assert len(check['configs']) == 2 and best['latency_table']['check']['max_abs_relative_error'] == \
        check['max_abs_relative_error']
    table = json.loads((work / 'latency_table.json').read_text())
    assert table['key']['input_shape'][0] == 6 and table['ratio_choices'] == [0.0, 0.4, 0.8]
    assert json.loads((work / 'best.json').read_text()) == best
    assert (work / 'search_pareto.png').read_bytes()[:4] == b'\x89PNG'
    out = capsys.readouterr().out
    assert 'evolution' in out and 'random' in out and 'uniform 0' in out and 'latency table error' in out

    # the same command again: everything is found done, nothing is scored again
    val_runs.clear()
    again = search(tool, small_search_cfg(synthetic_nuscenes, tmp_path), checkpoint, work, '--latency-budget-ms', '1e6',
                   '--uniform-ratios')
    assert val_runs == [] and again['group_ratios'] == best['group_ratios']
    assert again['evolution']['score'] == best['evolution']['score']

    # another budget: refused, naming the field, its old and new values and what to do
    with pytest.raises(StateMismatchError, match=r"budget: \{'latency_ratio': None, 'latency_budget_ms': 1000000\.0\} "
                                                 r"in the state, \{'latency_ratio': 0\.5, 'latency_budget_ms': None\}"
                       ) as err:
        search(tool, small_search_cfg(synthetic_nuscenes, tmp_path), checkpoint, work, '--latency-ratio', '0.5',
               '--check-samples', '0')
    assert 'search_state.json' in str(err.value) and 'delete' in str(err.value)
    assert val_runs == []

    # a budget below every configuration: stops before scoring, with the ratios that would be feasible
    with pytest.raises(SystemExit, match=r'no candidate within the latency budget .* budget is 0\.010 x the dense '
                                         r'encoder .* fastest configuration drawn is 0\.\d+ x\. Raise --latency-ratio'):
        search(tool, small_search_cfg(synthetic_nuscenes, tmp_path), checkpoint, tmp_path / 'infeasible',
               '--latency-ratio', '0.01', '--check-samples', '0')
    assert val_runs == []


def test_proxy_scoring_and_ratios_in_effect_during_validation(tool, synthetic_nuscenes, checkpoint, tmp_path):
    """With the adaptation config's hook installed, every validation batch runs with the candidate's ratios.

    Needs SparsityAdaptationHook to leave explicitly set ratios alone at validation time."""
    cfg = small_search_cfg(synthetic_nuscenes, tmp_path)
    cfg.custom_hooks = [dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.4, 0.8], eval_ratios=0.0, seed=0),
                        dict(type='SearchTestRatioRecorderHook')]
    RECORDED.clear()
    work = tmp_path / 'search'
    best = search(tool, cfg, checkpoint, work, '--latency-ratio', '10', '--proxy-samples', '3',
                  '--rescore-top', '1', '--uniform-ratios')
    space = SparseViT(arch='tiny').search_space()
    proxy = json.loads((work / 'scores_proxy.json').read_text())
    full = json.loads((work / 'scores_full.json').read_text())
    assert proxy['fingerprint']['eval_set']['samples'] == [0, 2, 5]  # 3 of 6, evenly spread
    # reported results come from full-split scores; the proxy score is kept beside them
    full_by_ratios = {json.dumps(s['ratios']): s['score'] for s in full['scores']}
    for name in ('evolution', 'random'):
        assert best[name]['score'] == full_by_ratios[json.dumps(best[name]['group_ratios'])]
        assert 'proxy_score' in best[name]
    assert best['budget']['latency_ratio'] == 10.0
    assert best['latency_budget_ms'] == pytest.approx(10 * best['budget']['dense_predicted_ms'])

    # one recorded validation run per scored evaluation: proxy runs have 3 batches, full-split runs 6; first the
    # one-sample run that checks the evaluator's keys
    assert len(RECORDED.pop(0)) == 1
    assert Counter(len(run) for run in RECORDED) == Counter({3: len(proxy['scores']), 6: len(full['scores'])})
    for run in RECORDED:
        assert all(ratios == run[0] for ratios in run)
    in_effect = Counter(json.dumps(run[0]) for run in RECORDED)
    scored = Counter(json.dumps(expand_group_ratios(space, s['ratios'])) for s in proxy['scores'] + full['scores'])
    assert in_effect == scored


def test_search_cli_errors(tool, checkpoint, capsys):
    base = [str(DEMO_CONFIG), str(checkpoint)]
    with pytest.raises(SystemExit):
        tool.parse_args(base)
    assert 'one of the arguments --latency-budget-ms --latency-ratio is required' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([*base, '--latency-budget-ms', '10', '--latency-ratio', '0.5'])
    assert 'not allowed with argument' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([*base, '--latency-ratio', '0.5', '--ratio-choices', '0', '0.5', '--uniform-ratios', '0.3'])
    assert '--uniform-ratios [0.3] are not among --ratio-choices' in capsys.readouterr().err
    args = tool.parse_args([*base, '--latency-ratio', '0.5', '--seed', '4'])
    assert args.random_seed == 5 and args.proxy_samples is None and args.final_repeats == 15
    assert tool.proxy_indices(6, 3) == [0, 2, 5] and tool.proxy_indices(100, 4) == [0, 33, 66, 99]
    with pytest.raises(ValueError, match='not fewer than the 6 validation samples'):
        tool.proxy_indices(6, 6)


def test_cached_inputs_give_the_uncached_predictions(synthetic_nuscenes, checkpoint, tmp_path):
    """A replayed batch is the loader's batch: same predictions; the loader is read only once."""
    from mmengine.runner import Runner

    from projects.sparsevit_bevdet.search import CachedLoader

    cfg = small_search_cfg(synthetic_nuscenes, tmp_path)
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(str(checkpoint), map_location='cpu')
    model = runner.model.eval()
    loader = runner.val_loop.dataloader
    reads = []

    class CountingLoader:
        dataset = loader.dataset
        collate_fn = loader.collate_fn

        def __len__(self):
            return len(loader)

        def __iter__(self):
            for batch in loader:
                reads.append(1)
                yield batch

    cached = CachedLoader(CountingLoader())
    assert cached.dataset is loader.dataset and cached.collate_fn is loader.collate_fn
    next(iter(cached))  # an abandoned pass caches nothing
    assert not cached.cached
    reads.clear()

    def boxes(batches) -> list[torch.Tensor]:
        with torch.no_grad():
            return [out.pred_instances_3d.bboxes_3d.tensor for b in batches for out in model.val_step(b)]

    first = boxes(cached)
    assert cached.cached and len(reads) == len(cached) == len(loader)
    second = boxes(cached)
    assert len(reads) == len(loader)  # the replay did not read the loader
    uncached = boxes(loader)
    for a, b, c in zip(first, second, uncached, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the replayed data samples are copies: the model's predictions from one pass do not leak into the next
    batch = next(iter(cached))
    assert all('pred_instances_3d' not in ds for ds in batch['data_samples'])
