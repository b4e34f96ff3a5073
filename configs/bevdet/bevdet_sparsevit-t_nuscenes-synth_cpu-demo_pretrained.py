# The CPU recipe (bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py) starting from a pretrained image encoder, as
# real BEVDet starts from ImageNet Swin weights. No ImageNet weights of this width exist (and none can be
# downloaded here), so `make demo` pretrains SparseViT at the recipe's width (embed_dims 32, Swin-T layout)
# inside Mask R-CNN on the embedded synthetic COCO (configs/coco/mask-rcnn_sparsevit-t_fpn_synth-coco.py, its
# `pretrain` stage) and points `checkpoint` at that detector's checkpoint; SparseViT keeps its `backbone.*`
# tensors. Any Swin / SparseViT checkpoint of this layout works the same way:
#   python tools/train.py configs/bevdet/bevdet_sparsevit-t_nuscenes-synth_cpu-demo_pretrained.py \
#       --cfg-options model.img_backbone.init_cfg.checkpoint=work_dirs/demo/pretrain/iter_600.pth
_base_ = ['./bevdet_sparsevit-t_nuscenes-synth_cpu-demo.py']

pretrained = 'work_dirs/demo/pretrain/iter_600.pth'
model = dict(img_backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
