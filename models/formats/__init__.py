"""Low-bit formats for LoRA adapters and base weights, behind one interface (`WeightFormat`).

Adapter formats act on a LoRA pair (A [r, in], B [out, r], scaling): lora-fp16, lordba, and ternary /
trit-plane LoRA (each factor ternarised). Base-weight formats act on a dense W [out, in]: fp16/fp32
(kept dense), dbf, mdbf, ternary, tritplane.
"""

from models.formats.base import FitReport, Packed, WeightFormat, packed_bits, rel_error
from models.formats.binary_factor import Dbf, Mdbf
from models.formats.lora import LoraFp16, Lordba, peft_scaling
from models.formats.ternary import Ternary, TritPlane

BASE_FORMATS = ("fp32", "fp16", "dbf", "mdbf", "ternary", "tritplane")

__all__ = [
           "BASE_FORMATS",
           "Dbf",
           "FitReport",
           "LoraFp16",
           "Lordba",
           "Mdbf",
           "Packed",
           "Ternary",
           "TritPlane",
           "WeightFormat",
           "packed_bits",
           "peft_scaling",
           "rel_error",
]
