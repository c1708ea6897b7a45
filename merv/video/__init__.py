"""The bottom layer: decoding (decord / PyAV / torchcodec / frame folders), frame sampling, an encoder's
pixel contract, and pixel caches. Used by models, data, eval and benchmarks; imports nothing of merv above it."""

from merv.video.cache import PixelCache, PixelMemory, VideoIdentity, VideoTensorCache
from merv.video.clips import video_clips
from merv.video.decode import (
    BACKENDS,
    FRAME_FOLDER_FPS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoDecodeError,
    backend_available,
    frame_folder_images,
    read_frames,
)
from merv.video.pixels import FrameSpec
from merv.video.sampling import gather_frames, sample_indices, segment_frames

__all__ = [
    "BACKENDS",
    "FRAME_FOLDER_FPS",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "FrameSpec",
    "PixelCache",
    "PixelMemory",
    "VideoDecodeError",
    "VideoIdentity",
    "VideoTensorCache",
    "backend_available",
    "frame_folder_images",
    "gather_frames",
    "read_frames",
    "sample_indices",
    "segment_frames",
    "video_clips",
]
