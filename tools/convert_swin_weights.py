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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', type=Path, help='checkpoint to convert (.pth/.pt, or .safetensors)')
    parser.add_argument('dst', type=Path, help='where to write the converted checkpoint')
    parser.add_argument('--format', required=True, choices=['official', 'timm'], help='layout of SRC')
    args = parser.parse_args()

    import torch

    import projects.sparsevit_bevdet  # noqa: F401  (safe checkpoint loading)
    from projects.sparsevit_bevdet.backbones.weight_converters import (
        convert_official_swin,
        convert_timm_swin,
        extract_state_dict,
        save_state_dict,
    )

    if not args.src.is_file():
        sys.exit(f'error: {args.src} does not exist')
    if args.src.suffix == '.safetensors':
        try:
            from safetensors.torch import load_file
        except ImportError:
            sys.exit('error: reading .safetensors needs the safetensors package (pip install safetensors)')
        raw = load_file(str(args.src))
    else:
        raw = torch.load(args.src, map_location='cpu', weights_only=True)
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
