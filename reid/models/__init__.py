"""Model architectures: `build_model(arch)` rebuilds a model from its ArchConfig alone."""

from reid.models.arch import ArchConfig
from reid.models.model import ReIDModel, build_model

__all__ = ["ArchConfig", "ReIDModel", "build_model", "load_checkpoint"]


def load_checkpoint(path, device="cpu", feature=None):
    """-> (model in eval mode, PreprocessSpec); see `reid.checkpoint.load_checkpoint`."""
    from reid.checkpoint import load_checkpoint as _load

    return _load(path, device, feature)
