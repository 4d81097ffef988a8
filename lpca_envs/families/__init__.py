"""The built-in task families, one small file each."""

from lpca_envs.families.arithmetic import Arithmetic

__all__ = ["Arithmetic"]

#: Instances registered as ``lpca/<Name>-v0`` when `lpca_envs` is imported.
BUILTIN_FAMILIES = [Arithmetic()]
