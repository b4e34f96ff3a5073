"""engine of the SparseViT-BEVDet plugin."""
