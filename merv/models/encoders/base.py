"""The contract every frozen visual encoder follows, and the id registry that builds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from merv.models.projector import align_features
from merv.video.pixels import FrameSpec

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


class VisionEncoder(nn.Module):
    """A frozen visual backbone that maps a clip to a grid of features.

    Subclasses wrap one library model (Hugging Face or timm) and implement `encode`. The base class
    owns what is common: the declared input contract (frame count, square input size, normalisation),
    the declared output shape `(T', N, D)`, pixel preprocessing, and staying frozen in eval mode.

    Args:
        num_frames: frames this encoder samples from each video (T).
        image_size: square input resolution in pixels.
        mean: per-channel normalisation mean (RGB, 0-1 scale).
        std: per-channel normalisation std.
        embed_dim: feature width D of the returned layer.
        temporal_tokens: temporal length T' of the output (T, or T / tubelet size for video models).
        grid: spatial token grid (h, w) of the output, so N = h * w.
        layer: index into the model's hidden states that is returned (-2 = penultimate).
        pretrained: where the weights came from (hub id or local dir), None for random init. Kept so a
            checkpoint can store the encoder by reference instead of by value.
    """

    def __init__(
        self,
        *,
        num_frames: int,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        embed_dim: int,
        temporal_tokens: int,
        grid: tuple[int, int],
        layer: int = -2,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder_id = ""  # set by `build_encoder`
        self.num_frames = num_frames
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.embed_dim = embed_dim
        self.temporal_tokens = temporal_tokens
        self.grid = tuple(grid)
        self.layer = layer
        self.pretrained = pretrained

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Declared `(T', N, D)` of `forward`'s output per sample."""
        return self.temporal_tokens, self.grid[0] * self.grid[1], self.embed_dim

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Family-specific forward: `(B, T, 3, S, S)` -> `(B, T', N, D)`."""
        raise NotImplementedError

    def forward(
        self, pixels: torch.Tensor, temporal_tokens: int | None = None, tokens_per_frame: int | None = None
    ) -> torch.Tensor:
        """Pixels `(B, T, 3, S, S)` → features `(B, T', N, D)`, or pooled to `(B, temporal_tokens,
        tokens_per_frame, D)` when both are given (see `encode_aligned`).

        uint8 pixels (what the data pipeline ships) are normalised here, on the encoder's device; float
        pixels are taken as already normalised. Everything happens in `forward` so that callers go through
        `__call__`, which is where FSDP gathers a wrapped encoder's weights.
        """
        expected_shape = (self.num_frames, 3, self.image_size, self.image_size)
        if pixels.ndim != 5 or tuple(pixels.shape[1:]) != expected_shape:
            raise ValueError(
                f"encoder {self.encoder_id!r} expects (B, {self.num_frames}, 3, {self.image_size}, "
                f"{self.image_size}) pixels (batch, frames, channels first, height, width), got {tuple(pixels.shape)}"
            )
        weight = next(self.parameters())
        pixels = pixels.to(weight.device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            pixels = self.frame_spec.normalize(pixels)
        features = self.encode(pixels.to(weight.dtype))  # (B, T', N, D)
        expected = (pixels.shape[0], *self.output_shape)
        if tuple(features.shape) != expected:
            raise RuntimeError(f"encoder {self.encoder_id!r} returned {tuple(features.shape)}, declared {expected}")
        if temporal_tokens is None or tokens_per_frame is None:
            return features
        return align_features(features, temporal_tokens, tokens_per_frame)

    def encode_aligned(self, pixels: torch.Tensor, temporal_tokens: int, tokens_per_frame: int) -> torch.Tensor:
        """Processor pixels `(B, T, 3, S, S)` → features pooled to `(B, temporal_tokens, tokens_per_frame, D)`.

        Training (`VideoLM.encode_aligned`) and the feature cache builder both come through `forward`, so
        cached features are the ones training would compute.
        """
        return self(pixels, temporal_tokens, tokens_per_frame)

    @property
    def frame_spec(self) -> FrameSpec:
        """What the data pipeline needs to prepare this encoder's input, without the weights."""
        return FrameSpec(self.num_frames, self.image_size, self.mean, self.std)

    def train(self, mode: bool = True) -> VisionEncoder:
        # Encoders are frozen in every stage: dropout and stochastic depth must never switch on,
        # even when Lightning calls `model.train()` on the whole VideoLM.
        return super().train(False)

    def to_grid(self, tokens: torch.Tensor, prefix_tokens: int = 0) -> torch.Tensor:
        """Drop leading prefix tokens (CLS, registers) and reshape to `(B, T', N, D)`.

        Accepts image-model tokens `(B * T', prefix + N, D)` with time folded into the batch, or
        video-model tokens `(B, prefix + T' * N, D)` ordered time-major, as tubelet embeddings are.
        """
        tokens = tokens[:, prefix_tokens:]
        return tokens.reshape(-1, self.temporal_tokens, self.grid[0] * self.grid[1], tokens.shape[-1])


def tubelet_tokens(num_frames: int, tubelet: int, family: str) -> int:
    """Temporal token count of a video model that merges `tubelet` consecutive frames into one token.

    Raises:
        ValueError: if `num_frames` is not a positive multiple of `tubelet`.
    """
    if num_frames <= 0 or num_frames % tubelet:
        raise ValueError(
            f"{family} merges {tubelet} frames per token: num_frames must be a positive multiple of {tubelet}, "
            f"got {num_frames}"
        )
    return num_frames // tubelet


def resolve_pretrained(pretrained: str) -> str:
    """Check a weights source: an existing local directory, or else a hub id (`org/name`).

    A string that can only be a filesystem path (absolute, starting with `.` or `~`, more than one `/`,
    or an existing file) must name an existing directory, so a typo fails here, naming the path, instead
    of surfacing as a confusing hub lookup error.

    Returns:
        The directory path (user-expanded) or the hub id unchanged.

    Raises:
        FileNotFoundError: `pretrained` looks like a path but is not an existing directory.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or pretrained.startswith((".", "~")) or pretrained.count("/") > 1 or path.exists():
        raise FileNotFoundError(f"pretrained weights directory {pretrained!r} does not exist or is not a directory")
    return pretrained


# Config fields that fix the shape of an HF vision model's output or of its weights; a checkpoint that
# disagrees with the id's declared architecture on any of them is rejected.
_HF_ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "num_frames",
    "tubelet_size",
    "num_register_tokens",
)


def load_hf_model(
    model_cls: type[PreTrainedModel],
    config: PretrainedConfig,
    pretrained: str | None,
    overrides: Sequence[str] = (),
) -> PreTrainedModel:
    """Build a Hugging Face vision model: random init from `config`, or pretrained weights.

    Pretrained loading keeps the checkpoint's own config (activation, epsilons, ...) and checks that its
    architecture matches `config`, so an id always yields the output shape it declares.

    Args:
        model_cls: the transformers model class, e.g. `SiglipVisionModel`.
        config: the id's architecture.
        pretrained: hub id or local directory (a `save_pretrained` folder); None for random init.
        overrides: names of `config` fields forced onto the checkpoint's config, for settings that carry
            no weights (e.g. VideoMAE's frame count, whose position table is fixed sin-cos).

    Raises:
        FileNotFoundError: `pretrained` names a local directory that does not exist.
        ValueError: the checkpoint's architecture differs from `config`.
    """
    if pretrained is None:
        model = model_cls(config)
    else:
        source = resolve_pretrained(pretrained)
        # Check the checkpoint's config before reading any weights, so a wrong source fails fast.
        found = model_cls.config_class.from_pretrained(source, **{name: getattr(config, name) for name in overrides})
        mismatched = [
            f"{name}={getattr(found, name, None)} (expected {getattr(config, name)})"
            for name in _HF_ARCH_FIELDS
            if hasattr(config, name) and getattr(found, name, None) != getattr(config, name)
        ]
        if mismatched:
            raise ValueError(
                f"checkpoint {pretrained!r} does not match the {model_cls.__name__} architecture of this id: "
                + ", ".join(mismatched)
            )
        model = model_cls.from_pretrained(source, config=found, dtype=torch.float32)
    model.set_attn_implementation("sdpa")
    return model


EncoderBuilder = Callable[..., VisionEncoder]
_REGISTRY: dict[str, EncoderBuilder] = {}
_B = TypeVar("_B", bound=EncoderBuilder)


def register_encoder(encoder_id: str) -> Callable[[_B], _B]:
    """Register a builder `fn(pretrained: str | None = None, num_frames: int | None = None) -> VisionEncoder`.

    Ids are kebab-case with family, size and resolution (`siglip-so400m-384`); ids ending in `-tiny`
    are CPU-sized random variants used by tests and the quick start.
    """

    def decorator(fn: _B) -> _B:
        if encoder_id in _REGISTRY:
            raise ValueError(f"encoder id {encoder_id!r} is already registered")
        _REGISTRY[encoder_id] = fn
        return fn

    return decorator


def build_encoder(encoder_id: str, pretrained: str | None = None, num_frames: int | None = None) -> VisionEncoder:
    """Build a registered encoder.

    Args:
        encoder_id: a registered id (see `list_encoders()`).
        pretrained: hub id or local directory to load weights from; None builds a randomly
            initialised model and never touches the network.
        num_frames: override the id's default frame count (video models need a multiple of
            their tubelet size).
    """
    if encoder_id not in _REGISTRY:
        raise KeyError(f"unknown encoder id {encoder_id!r}; registered: {', '.join(sorted(_REGISTRY))}")
    kwargs = {} if num_frames is None else {"num_frames": num_frames}
    encoder = _REGISTRY[encoder_id](pretrained=pretrained, **kwargs)
    encoder.encoder_id = encoder_id
    return encoder


def list_encoders(tiny: bool | None = None) -> list[str]:
    """Registered ids, sorted; `tiny=True` keeps only the CPU-sized variants, `False` drops them."""
    ids = sorted(_REGISTRY)
    if tiny is None:
        return ids
    return [i for i in ids if i.endswith("-tiny") == tiny]
