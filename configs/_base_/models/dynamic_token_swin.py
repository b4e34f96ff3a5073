# DynamicTokenSwin settings shared by the token-pruning configs (merged into a SparseViT-T backbone entry of
# the inheriting config: `backbone={{_base_.dynamic_token_swin}}`). The ratios are a DynamicViT-style
# progressive schedule (keep 0.7, 0.5, 0.35 of the tokens over the three W-MSA / SW-MSA groups of the 6-block
# stage); the ablations set their own ratios at matched latency.
dynamic_token_swin = dict(
    type='DynamicTokenSwin',
    pruning_ratios=[[0.0, 0.0], [0.0, 0.0], [0.3, 0.3, 0.5, 0.5, 0.65, 0.65], [0.0, 0.0]],
    predictor_hidden_ratio=0.5,  # predictor MLP width / stage channels
    gumbel_tau=1.0,  # temperature of the training-time Gumbel-softmax
    keep_ratio_loss_weight=2.0)  # weight of loss_keep_ratio (DynamicViT's ratio loss)
# the predictors of unpruned groups take no part in a forward: distributed training must allow that
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
