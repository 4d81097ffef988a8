"""The built-in task families, one small file each."""

from lpca_envs.families.arithmetic import Arithmetic
from lpca_envs.families.csp import ConstraintSatisfaction
from lpca_envs.families.graph_path import GraphPath
from lpca_envs.families.kv_lookup import KVLookup
from lpca_envs.families.pin_relay import PinRelay
from lpca_envs.families.program_synthesis import ProgramSynthesis
from lpca_envs.families.relay import SecretRelay

__all__ = [
    "Arithmetic",
    "ConstraintSatisfaction",
    "GraphPath",
    "KVLookup",
    "PinRelay",
    "ProgramSynthesis",
    "SecretRelay",
]

#: Instances registered as ``lpca/<Name>-v0`` when `lpca_envs` is imported.
BUILTIN_FAMILIES = [
    Arithmetic(),
    KVLookup(),
    ConstraintSatisfaction(),
    GraphPath(),
    ProgramSynthesis(),
    SecretRelay(),
    PinRelay(),
]
