"""Networks: the ResNet backbone (torchvision-compatible names), ImageNet weight loading and GCL's
identity encoder Eid. See docs/models.md."""
from .identity_encoder import (IdentityEncoder, IdentityOutput, build_identity_encoder, flatten_parts,
                               map_official_eid_state)
from .resnet import RESNET_ARCHS, ResNet, build_resnet, resnet18, resnet34, resnet50, resnet101
from .weights import (IMAGENET_FILES, WeightsReport, find_imagenet_weights, hub_checkpoint_dir,
                      load_imagenet_weights, read_state_dict)

__all__ = [
    "ResNet", "RESNET_ARCHS", "build_resnet", "resnet18", "resnet34", "resnet50", "resnet101",
    "IMAGENET_FILES", "WeightsReport", "find_imagenet_weights", "hub_checkpoint_dir", "load_imagenet_weights",
    "read_state_dict",
    "IdentityEncoder", "IdentityOutput", "build_identity_encoder", "flatten_parts", "map_official_eid_state",
]
