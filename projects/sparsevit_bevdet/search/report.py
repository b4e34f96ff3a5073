"""What a finished search shows a person: the Pareto plot of its trials and the summary table of its record
(``best.json``), for ``tools/search.py`` and any other caller to print."""
from __future__ import annotations

from pathlib import Path

from .evolution import SearchResult

__all__ = ['format_summary', 'plot_search']


def plot_search(evolution: SearchResult, random_result: SearchResult, record: dict, path: Path) -> None:
    """Score vs predicted latency: every trial, uniform ratios, the random and evolutionary bests, dense and
    the budget."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..utils.atomic_io import atomic_save_figure

    trial_score = 'proxy score' if record['scoring']['proxy_samples'] else 'score'
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    points = ax.scatter([e.latency for e in evolution.history], [e.score for e in evolution.history],
                        c=[e.generation for e in evolution.history], cmap='viridis', s=18,
                        label=f'evolution trials ({trial_score})')
    fig.colorbar(points, ax=ax, label='generation')
    ax.scatter([e.latency for e in random_result.history], [e.score for e in random_result.history], marker='x',
               s=18, color='gray', label=f'random trials ({trial_score})')
    uni = record['uniform_scored']
    ax.plot([u['predicted_latency_ms'] for u in uni], [u['score'] for u in uni], 'o-', color='tab:green',
            label='uniform ratios')
    for u in uni:
        ax.annotate(f"{u['ratio']:g}", (u['predicted_latency_ms'], u['score']), fontsize=7,
                    textcoords='offset points', xytext=(3, 3))
    for name, marker, color in (('random', '^', 'tab:blue'), ('evolution', '*', 'tab:orange')):
        ax.scatter([record[name]['predicted_latency_ms']], [record[name]['score']], marker=marker, s=160,
                   color=color, label=f'{name} best', zorder=3)
    ax.axvline(record['latency_budget_ms'], color='tab:red', linestyle='--', label='latency budget')
    ax.axvline(record['budget']['dense_predicted_ms'], color='black', linestyle=':', label='dense (all ratios 0)')
    ax.set_xlabel('image-encoder latency (ms, predicted by the calibrated latency table)')
    ax.set_ylabel(record['metric'])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def format_summary(record: dict, best_path: Path) -> str:
    """The budget, the latency table's error, one row per method (score, predicted / measured latency, ratio
    to dense, budget met) and how to use the result."""
    budget = record['budget']
    spec = f"{budget['latency_ratio']:g} x dense = " if budget['latency_ratio'] is not None else ''
    lines = [f"\nbudget {spec}{budget['latency_budget_ms']:.1f} ms; dense {budget['dense_predicted_ms']:.1f} ms "
             f"predicted, {budget['dense_measured_ms']:.1f} ms measured"]
    check = record['latency_table']['check']
    if check is not None:
        lines.append(f"latency table error on random configurations: mean "
                     f"{100 * check['mean_abs_relative_error']:.1f}%, max {100 * check['max_abs_relative_error']:.1f}% "
                     f"(goal {100 * check['goal']:.0f}%)")
    lines.append(f"\n{'method':<14}{record['metric']:>14}{'pred ms':>10}{'meas ms':>10}{'vs dense':>9}{'budget':>8}  "
                 f'group ratios per stage')
    rows = [('evolution', record['evolution']), ('random', record['random'])]
    if record['uniform'] is not None:
        rows.append((f"uniform {record['uniform']['ratio']:g}", record['uniform']))
    for name, e in rows:
        lines.append(f"{name:<14}{e['score']:>14.4f}{e['predicted_latency_ms']:>10.1f}{e['measured_latency_ms']:>10.1f}"
                     f"{e['measured_ratio']:>9.2f}{'met' if e['meets_budget'] else 'MISSED':>8}  {e['group_ratios']}")
    lines.append(f"{'dense':<14}{'-':>14}{budget['dense_predicted_ms']:>10.1f}{budget['dense_measured_ms']:>10.1f}"
                 f"{1.0:>9.2f}")
    # --pruning-ratios sets model.img_backbone (BEVDet) or model.backbone (mmdet / mmseg) alike
    lines.append(f'\nuse: tools/test.py CONFIG CHECKPOINT --pruning-ratios {best_path}  '
                 f'(ratios: {record["pruning_ratios"]})')
    return '\n'.join(lines)
