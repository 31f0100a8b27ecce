"""Training: targets, patches and augmentation, the loss, and the loop (pretrain, then fine-tune)."""
