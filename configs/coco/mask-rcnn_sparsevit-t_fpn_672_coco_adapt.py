# Sparsity-aware adaptation (SparseViT, Sec. 3.3) of the dense COCO model: fine-tune the checkpoint of
# mask-rcnn_sparsevit-t_fpn_672_coco.py while every training iteration samples one pruning ratio per
# W-MSA/SW-MSA group (0.0-0.8, sorted within each stage), on the stock 1x schedule; shorten it with
# --cfg-options train_cfg.max_epochs=N. Validation runs at the config's ratios (dense); the searched
# configurations (*_r30/_r60/_r70) are then evaluated with the adapted weights.
#   python tools/train.py configs/coco/mask-rcnn_sparsevit-t_fpn_672_coco_adapt.py \
#       --cfg-options load_from=work_dirs/mask-rcnn_sparsevit-t_fpn_672_coco/epoch_12.pth
_base_ = ['./mask-rcnn_sparsevit-t_fpn_672_coco.py']

custom_hooks = [
    dict(type='SparsityAdaptationHook', ratio_choices=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], seed=0,
         sandwich_prob=0.0),
]
# the fine-tuning starts from a trained detector: the ImageNet initialisation would be overwritten anyway
model = dict(backbone=dict(init_cfg=None))
