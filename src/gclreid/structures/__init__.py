"""Structure maps: the on-disk layout (GCL-release compatible) and the dataset that pairs images with
their structure at 0° and at a new angle. See docs/structures.md."""
from .dataset import StructureDataset, load_structure
from .layout import (ANGLES, OFFICIAL_ANGLES, angle_folder, missing_structures, parse_angles, structure_path,
                     structure_split)

__all__ = ["ANGLES", "OFFICIAL_ANGLES", "StructureDataset", "angle_folder", "load_structure",
           "missing_structures", "parse_angles", "structure_path", "structure_split"]
