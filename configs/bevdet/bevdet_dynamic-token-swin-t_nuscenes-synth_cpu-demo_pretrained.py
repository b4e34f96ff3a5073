# The CPU demo recipe (bevdet_sparsevit-t_nuscenes-synth_cpu-demo_pretrained.py) with DynamicViT-style token
# pruning instead of SparseViT's window pruning: the image encoder is DynamicTokenSwin (same Swin-T layout at
# embed_dims 32, same pretrained weights; its token predictors are extra and start initialised), everything
# else is the recipe's. Training computes every token with a Gumbel-softmax keep mask and adds
# `loss_keep_ratio` (DynamicViT's ratio loss) to BEVDet's losses; inference computes only the kept tokens.
# Predictor settings and ratios: configs/_base_/models/dynamic_token_swin.py.
#   python tools/train.py configs/bevdet/bevdet_dynamic-token-swin-t_nuscenes-synth_cpu-demo_pretrained.py \
#       --cfg-options model.img_backbone.init_cfg.checkpoint=work_dirs/demo/pretrain/iter_600.pth
_base_ = ['./bevdet_sparsevit-t_nuscenes-synth_cpu-demo_pretrained.py', '../_base_/models/dynamic_token_swin.py']

model = dict(img_backbone={{_base_.dynamic_token_swin}})
