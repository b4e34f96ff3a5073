"""Convert an official (Microsoft) or timm Swin checkpoint to SparseViT / mmdet parameter names.

The output holds ``{'state_dict': {'backbone.<name>': tensor}}`` and loads with
``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` (no ``convert_weights`` needed) or as
``load_from`` of a detector whose image encoder is SparseViT.

Examples::

    python tools/convert_swin_weights.py swin_tiny_patch4_window7_224.pth swin_t_mmdet.pth --format official
    python tools/convert_swin_weights.py timm_swin_tiny.pth swin_t_mmdet.pth --format timm
    python tools/convert_swin_weights.py model.safetensors swin_t_mmdet.pth --format timm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', type=Path, help='checkpoint to convert (.pth/.pt, or .safetensors)')
    parser.add_argument('dst', type=Path, help='where to write the converted checkpoint')
    parser.add_argument('--format', required=True, choices=['official', 'timm'], help='layout of SRC')
    args = parser.parse_args(argv)

    import projects.sparsevit_bevdet  # noqa: F401  (safe checkpoint loading)
    from projects.sparsevit_bevdet.backbones.weight_converters import (
        convert_official_swin,
        convert_timm_swin,
        extract_state_dict,
        save_state_dict,
    )
    from projects.sparsevit_bevdet.utils.safe_checkpoint import (
        CheckpointSecurityError,
        CorruptCheckpointError,
        safe_torch_load,
    )

    if not args.src.is_file():
        sys.exit(f'error: {args.src} does not exist')
    if args.src.stat().st_size == 0:
        sys.exit(f'error: {args.src} is empty (0 bytes); expected a Swin checkpoint (.pth/.pt or .safetensors)')
    if args.src.suffix == '.safetensors':
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            sys.exit('error: reading .safetensors needs the safetensors package (pip install safetensors)')
        try:
            raw = load_file(str(args.src))
        except SafetensorError as err:
            sys.exit(f'error: {args.src} is not a readable .safetensors file (truncated or corrupt: {err})')
    else:
        # the project's loader: weights only, with errors that name the file (corrupt, or unsafe globals)
        try:
            raw = safe_torch_load(args.src, map_location='cpu')
        except (CorruptCheckpointError, CheckpointSecurityError) as err:
            sys.exit(f'error: {err}')
    if not isinstance(raw, dict) or not isinstance(raw.get('state_dict', raw.get('model', raw)), dict):
        sys.exit(f'error: {args.src} holds a {type(raw).__name__}, expected a dict of weights (optionally under '
                 "'state_dict' or 'model')")
    state_dict = extract_state_dict(raw, prefix='')
    converted = convert_official_swin(state_dict) if args.format == 'official' else convert_timm_swin(state_dict)
    if not any(k.startswith('stages.') for k in converted):
        sys.exit(f'error: {args.src} holds no Swin stage weights in {args.format} layout '
                 f'(first keys: {list(state_dict)[:5]})')
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict({f'backbone.{k}': v for k, v in converted.items()}, str(args.dst))
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
