"""Cached pipeline stages: a trained model (or any result) kept in a directory under a fingerprint of what it
depends on, reused by a rerun, resumed after a kill, and moved aside when its inputs changed.

``tools/demo.py`` and ``tools/ablate.py`` build their pipelines from these pieces:

- :func:`stage_key`: the fingerprint of a stage (its config text and its upstream stages' fingerprints);
- :func:`claim_stage_dir`: make a directory the home of one fingerprint (work of another is moved aside to
  ``<dir>.stale-<time>``, never reused as if it were current);
- :func:`train_cached`: train an mmengine config in its work dir under a fingerprint: a finished run is reused,
  an interrupted one resumed from its newest complete checkpoint;
- :class:`TrainedDetector`: a trained detector loaded once, tested at given pruning ratios on a cached loader
  (decoded samples kept in memory), its image encoder at hand for timing.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ['STAGE_FILE', 'TrainedDetector', 'claim_stage_dir', 'final_checkpoint', 'stage_key', 'train_cached']

STAGE_FILE = 'demo_stage.json'  # the name the demo's work dirs already use


def stage_key(*parts: str) -> str:
    """Fingerprint of what a stage's result depends on (its config text, its inputs' fingerprints)."""
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]


def final_checkpoint(work_dir: Path, max_iters: int) -> Path:
    """The checkpoint an iteration-based training of ``max_iters`` iterations ends with."""
    return work_dir / f'iter_{max_iters}.pth'


def claim_stage_dir(work_dir: Path, key: str, log: Callable[[str], None] = print) -> None:
    """Make ``work_dir`` the home of the stage with fingerprint ``key``.

    Finished or interrupted work of the same fingerprint stays (reused, resumed). Work of another
    fingerprint (the config, the data root or an upstream stage changed since) is moved aside to
    ``<dir>.stale-<time>``, never reused as if it were current.
    """
    from ..utils.atomic_io import atomic_write_json

    record = work_dir / STAGE_FILE
    if work_dir.is_dir() and any(work_dir.iterdir()):
        recorded = json.loads(record.read_text()).get('key') if record.is_file() else None
        if recorded == key:
            return
        stamp = time.strftime('%Y%m%d_%H%M%S')
        stale = work_dir.with_name(f'{work_dir.name}.stale-{stamp}')
        suffix = 1
        while stale.exists():
            stale, suffix = work_dir.with_name(f'{work_dir.name}.stale-{stamp}-{suffix}'), suffix + 1
        work_dir.rename(stale)
        log(f'{work_dir} holds the results of another configuration (fingerprint {recorded}, now {key}): '
            f'moved it to {stale}; starting afresh')
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, dict(key=key), indent=1)


def train_cached(name: str, cfg: Any, config: Path | str, key: str,
                 log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Train ``cfg`` in its work dir under fingerprint ``key``; reuse a finished run, resume an interrupted one.

    ``config`` names the config file in the log. Returns the final checkpoint and ``key``.
    """
    from ..utils.entrypoint import build_runner
    from ..utils.run_checkpoints import prepare_training_run
    from .finite_loss import add_finite_loss_hook

    work_dir = Path(cfg.work_dir)
    claim_stage_dir(work_dir, key, log)
    done = final_checkpoint(work_dir, cfg.train_cfg.max_iters)
    # finished only when last_checkpoint names the final checkpoint and it is complete; else resume from the
    # newest complete checkpoint (checkpoints are written atomically; broken ones are moved aside)
    if prepare_training_run(cfg, work_dir, done):
        log(f'{done} is complete: reusing the finished {name} training')
        return done, key
    log(f'training {_short(config)} for {cfg.train_cfg.max_iters} iterations '
        f'(batch {cfg.train_dataloader.batch_size}) in {work_dir}')
    start = time.perf_counter()
    add_finite_loss_hook(cfg)  # a stage whose loss turns NaN fails instead of caching NaN weights
    build_runner(cfg).train()
    log(f'{name} training took {time.perf_counter() - start:.0f} s')
    return done, key


def _short(config: Path | str) -> str:
    path = Path(config)
    root = Path(__file__).resolve().parents[3]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


class TrainedDetector:
    """One trained detector, ready to test at given ratios and to time (same process, same data).

    Args:
        cfg: the detector's config (``cfg.work_dir`` receives its logs and the metric's outputs).
        checkpoint: its weights; a checkpoint that does not fit the model is refused.
    """

    def __init__(self, cfg: Any, checkpoint: Path) -> None:
        from ..search import CachedLoader
        from ..utils.checkpoint_fit import add_checkpoint_fit_hook
        from ..utils.entrypoint import build_runner
        from .sparsity_adaptation import find_image_encoder

        cfg.load_from = str(checkpoint)
        add_checkpoint_fit_hook(cfg, str(checkpoint))  # never evaluate weights that do not fit
        self.runner = build_runner(cfg)
        self.runner.load_checkpoint(str(checkpoint), map_location='cpu')
        # the test loop runs outside runner.test(): start the hooks' run as runner.test() would
        self.runner.call_hook('before_run')
        # several rows test the same weights on the same samples: decode and resize them once
        self.runner.test_loop.dataloader = CachedLoader(self.runner.test_loop.dataloader)
        self.model = self.runner.model.eval()
        self.checkpoint = checkpoint
        self.encoder = find_image_encoder(self.model)

    def test(self, ratios: Any) -> dict:
        """The test metrics with the encoder at ``ratios`` (anything ``set_pruning_ratios`` takes)."""
        self.encoder.set_pruning_ratios(ratios)
        metrics = self.runner.test_loop.run()
        return {k: float(v) for k, v in metrics.items()}
