"""Networks: the ResNet and MobileNetV2 backbones (torchvision-compatible names, one entry point
:func:`build_backbone`), ImageNet weight loading and fetching (``gclreid weights``) and GCL's
identity encoder Eid (docs/models.md); the structure encoder, decoder, AdaIN MLPs and multi-scale
discriminator of the view generator (docs/gcl-networks.md); DG-Net's appearance encoder (docs/dgnet.md)."""
from .identity_encoder import (IdentityEncoder, IdentityOutput, build_identity_encoder, flatten_parts,
                               map_official_eid_state)
from .resnet import RESNET_ARCHS, ResNet, build_resnet, resnet18, resnet34, resnet50, resnet101
from .mobilenet import MobileNetV2, convert_original_mobilenet_state
from .backbone import BACKBONE_ARCHS, build_backbone
from .fetch import KNOWN_WEIGHTS, FetchError, fetch_weights
from .weights import (IMAGENET_FILES, WeightsReport, find_imagenet_weights, hub_checkpoint_dir,
                      load_imagenet_weights, read_state_dict)
from .blocks import (MLP, ASPP, AdaINResBlock, AdaptiveInstanceNorm2d, Conv2dBlock, LayerNorm, ResBlock,
                     init_weights)
from .decoder import AdaINParamMLPs, Decoder, Generator, build_generator
from .discriminator import MultiScaleDiscriminator, PatchDiscriminator, build_discriminator
from .structure_encoder import StructureEncoder
from .appearance_encoder import (AppearanceEncoder, AppearanceOutput, appearance_num_classes, build_appearance_encoder,
                                 is_appearance_state)
from .summary import (DGNET_SUMMARY_KEYS, SUMMARY_KEYS, build_dgnet_networks, build_gcl_networks, count_parameters,
                      dgnet_parameter_counts, format_parameter_table, gcl_parameter_counts, gcl_parameter_details,
                      parameter_counts, parameter_details)

__all__ = [
    "ResNet", "RESNET_ARCHS", "build_resnet", "resnet18", "resnet34", "resnet50", "resnet101",
    "MobileNetV2", "convert_original_mobilenet_state", "BACKBONE_ARCHS", "build_backbone",
    "KNOWN_WEIGHTS", "FetchError", "fetch_weights",
    "IMAGENET_FILES", "WeightsReport", "find_imagenet_weights", "hub_checkpoint_dir", "load_imagenet_weights",
    "read_state_dict",
    "IdentityEncoder", "IdentityOutput", "build_identity_encoder", "flatten_parts", "map_official_eid_state",
    "Conv2dBlock", "ResBlock", "AdaINResBlock", "AdaptiveInstanceNorm2d", "LayerNorm", "ASPP", "MLP", "init_weights",
    "StructureEncoder", "Decoder", "AdaINParamMLPs", "Generator", "build_generator",
    "PatchDiscriminator", "MultiScaleDiscriminator", "build_discriminator",
    "AppearanceEncoder", "AppearanceOutput", "build_appearance_encoder", "is_appearance_state", "appearance_num_classes",
    "SUMMARY_KEYS", "DGNET_SUMMARY_KEYS", "count_parameters", "build_gcl_networks", "gcl_parameter_counts",
    "gcl_parameter_details", "build_dgnet_networks", "dgnet_parameter_counts", "parameter_counts", "parameter_details",
    "format_parameter_table",
]
