"""Training: targets, patches and augmentation, the loss, validation, hard negatives, the loop, and recipes
(pretrain, then fine-tune)."""
