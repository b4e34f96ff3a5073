# The first of the three per-block pruning ratio configurations found by the SparseViT paper's
# latency-constrained search for Mask R-CNN on COCO at 672 x 672 (one ratio per block; a W-MSA/SW-MSA pair
# shares one ratio; stages 2 and 4 stay dense). Evaluate it with the weights of the sparsity-aware
# adaptation run (mask-rcnn_sparsevit-t_fpn_672_coco_adapt.py), or fine-tune from them with this config:
#   python tools/test.py configs/coco/mask-rcnn_sparsevit-t-r30_fpn_672_coco.py \
#       work_dirs/mask-rcnn_sparsevit-t_fpn_672_coco_adapt/epoch_12.pth
_base_ = ['./mask-rcnn_sparsevit-t_fpn_672_coco.py']

model = dict(backbone=dict(pruning_ratios=[[0.3, 0.3], [0, 0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0, 0]]))
