"""Contrastive (SimCLR-style) encoding: augmentations, NT-Xent, pretraining and the labelled head."""
from model_opts.contrastive.augment import AugmentConfig, augment_raw, make_view
from model_opts.contrastive.finetune import HeadConfig, apply, label_subset
from model_opts.contrastive.ntxent import nt_xent
from model_opts.contrastive.pretrain import PretrainConfig, encoder_of, pretrain

__all__ = ["AugmentConfig", "HeadConfig", "PretrainConfig", "apply", "augment_raw", "encoder_of",
           "label_subset", "make_view", "nt_xent", "pretrain"]
