"""merv: video language models from several frozen visual encoders, a fusion projector and any causal LM."""

__version__ = "0.1.0"
__all__ = ["available_models", "load_vid"]


def __getattr__(name: str):
    # Lazy, so `import merv.data` (e.g. in DataLoader workers) does not pull in the model stack.
    if name == "load_vid":
        from merv.models.loading import load_vid

        return load_vid
    if name == "available_models":
        from merv.models.registry import available_models

        return available_models
    raise AttributeError(f"module 'merv' has no attribute {name!r}")
