"""Losses and memories: TMP's multi-positive contrastive loss, the cluster-centroid memory,
label-smoothed cross-entropy and batch-hard triplet; GCL's GAN and reconstruction losses, instance
memory and view-invariant losses (docs/gcl-networks.md); DG-Net's losses (docs/dgnet.md)."""
from .contrastive import multi_positive_contrastive_loss
from .memory import ClusterMemory
from .metric import batch_hard_triplet_loss, cross_entropy_label_smoothing
from .gan import GAN_TYPES, DiscriminatorLoss, discriminator_loss, generator_adversarial_loss, r1_penalty
from .reconstruction import feature_reconstruction_loss, image_reconstruction_loss, l1_reconstruction
from .dgnet import (fine_grained_loss, generated_identity_loss, paired_discriminator_loss, paired_generator_loss,
                    soft_label_kl, teacher_soft_labels, to_gray)
from .view_contrast import (VIEW_CONTRAST_PRESETS, ViewContrastLoss, ViewMemory, ViewSample, contrast_only_loss,
                            sample_view_contrast, view_invariant_losses)

__all__ = ["multi_positive_contrastive_loss", "ClusterMemory", "batch_hard_triplet_loss",
           "cross_entropy_label_smoothing",
           "GAN_TYPES", "DiscriminatorLoss", "discriminator_loss", "generator_adversarial_loss", "r1_penalty",
           "image_reconstruction_loss", "feature_reconstruction_loss", "l1_reconstruction",
           "VIEW_CONTRAST_PRESETS", "ViewMemory", "ViewSample", "ViewContrastLoss", "sample_view_contrast",
           "view_invariant_losses", "contrast_only_loss",
           "to_gray", "soft_label_kl", "teacher_soft_labels", "generated_identity_loss", "fine_grained_loss",
           "paired_discriminator_loss", "paired_generator_loss"]
