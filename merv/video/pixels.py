"""An encoder's pixel contract (`FrameSpec`): frame count, input size, normalisation; uint8 resizing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FrameSpec:
    """An encoder's input contract: frame count, square size and normalisation (picklable, weight-free)."""

    num_frames: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize(self, frames: torch.Tensor) -> torch.Tensor:
        """`(T, H, W, 3)` uint8 → `(T, 3, S, S)` uint8, the whole frame squashed to a square.

        The aspect ratio is not kept and nothing is cropped, as in the SigLIP processor. The CLIP and DINOv2
        processors differ: they resize the short edge and centre-crop, so on non-square video those encoders
        see here the full, squashed frame where their own processors would show a centre crop. Resizing
        uint8 with antialiasing (torch's fast CPU kernel) is ~20x cheaper than resizing floats and matches a
        PIL bilinear resize to one grey level.
        """
        x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return x

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 `(..., 3, S, S)` → float32 `(pixels / 255 - mean) / std` in one pass, on the pixels' device.

        Raises:
            TypeError: `pixels` are not uint8 (float pixels are taken as already normalised elsewhere, and
                normalising them twice would be silently wrong).
        """
        if pixels.dtype != torch.uint8:
            raise TypeError(f"FrameSpec.normalize expects uint8 pixels (0-255), got {pixels.dtype}")
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
        # `.float()` of uint8 is a new tensor, so the in-place ops never touch the caller's pixels.
        return pixels.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)


__all__ = ["FrameSpec"]
