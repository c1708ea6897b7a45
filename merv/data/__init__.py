"""Video decoding, frame sampling and annotation readers (the dataset classes live in `merv.data.dataset`)."""

from merv.data.formats import AnnotationError, load_annotations
from merv.video import VideoDecodeError, gather_frames, read_frames, sample_indices

__all__ = ["AnnotationError", "VideoDecodeError", "gather_frames", "load_annotations", "read_frames", "sample_indices"]
