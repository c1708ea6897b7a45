"""Frame sampling and decoding: midpoint indices, one union decode, segments, backends, failures, timeouts."""

import math
import pickle
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from merv.data.synthetic import write_video
from merv.video import (
    VideoDecodeError,
    backend_available,
    gather_frames,
    read_frames,
    sample_indices,
)
from merv.video import decode as video_mod

NUM_FRAMES, FPS, LEVEL_STEP = 40, 10, 6
BACKENDS = [b for b in ("pyav", "decord", "torchcodec") if backend_available(b)]


def _coded_frames(n: int = NUM_FRAMES, size: int = 64) -> np.ndarray:
    """Frame i is a flat grey of level 6*i, so a decoded frame tells its own index."""
    return np.stack([np.full((size, size, 3), LEVEL_STEP * i, np.uint8) for i in range(n)])


def _indices_of(frames: torch.Tensor) -> list[int]:
    return [round(float(f.float().mean()) / LEVEL_STEP) for f in frames]


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "coded.mp4"
    write_video(path, _coded_frames(), fps=FPS)
    return path


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory):
    """Textured colour content (gradients and a moving square) for backend pixel comparisons."""
    yy, xx = np.mgrid[0:48, 0:80]
    frames = []
    for t in range(24):
        frame = np.stack([(xx * 4 + t * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2 + t * 7) % 256], -1).astype(np.uint8)
        frame[10:26, 2 * t : 2 * t + 16] = (250, 40, 30)
        frames.append(frame)
    path = tmp_path_factory.mktemp("video") / "colour.mp4"
    write_video(path, np.stack(frames), fps=12)
    return path


# ---- sampling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [8, 16, 32])
def test_sample_indices_are_segment_midpoints(k):
    got = sample_indices(300, k)
    assert got == [math.floor((Fraction(j) + Fraction(1, 2)) * 300 / k) for j in range(k)]
    if k == 8:
        assert got == [18, 56, 93, 131, 168, 206, 243, 281]
    assert len(set(got)) == k and got == sorted(got)


def test_sample_indices_pad_short_videos_by_repetition():
    assert sample_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sample_indices(1, 4) == [0, 0, 0, 0]
    assert sample_indices(5, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="num_available"):
        sample_indices(0, 4)
    with pytest.raises(ValueError, match="num_samples"):
        sample_indices(10, 0)


def test_gather_frames_takes_each_count_subset():
    frames = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 2, 2, 3).contiguous()
    out = gather_frames(frames, [4, 8])
    assert [tuple(o.shape) for o in out] == [(4, 2, 2, 3), (8, 2, 2, 3)]
    assert out[0][:, 0, 0, 0].tolist() == sample_indices(20, 4)
    assert out[1][:, 0, 0, 0].tolist() == sample_indices(20, 8)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        gather_frames(frames[..., :2], [4])


# ---- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_union_decode_equals_decoding_each_count_alone(coded_video, backend):
    counts = [4, 8, 16, 32]
    together = read_frames(coded_video, counts, backend=backend)
    for k, frames in zip(counts, together):
        assert frames.shape == (k, 64, 64, 3) and frames.dtype == torch.uint8
        alone = read_frames(coded_video, [k], backend=backend)[0]
        assert torch.equal(frames, alone)
        assert _indices_of(frames) == sample_indices(NUM_FRAMES, k)


def test_auto_backend_and_short_video_padding(coded_video):
    frames = read_frames(coded_video, [64])[0]  # 40 frames available, 64 wanted: repeats
    assert frames.shape[0] == 64
    assert _indices_of(frames) == sample_indices(NUM_FRAMES, 64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_restricts_sampling(coded_video, backend):
    # Frames are on screen for 0.1 s each: [1.0, 2.0) s holds frames 10..19.
    frames = read_frames(coded_video, [4, 10], start=1.0, end=2.0, backend=backend)
    assert _indices_of(frames[0]) == [10 + i for i in sample_indices(10, 4)]
    assert _indices_of(frames[1]) == list(range(10, 20))
    # Negative starts clamp to 0; an open end runs to the last frame.
    assert _indices_of(read_frames(coded_video, [2], start=-3.0, end=0.35, backend=backend)[0]) == [1, 3]
    assert _indices_of(read_frames(coded_video, [2], start=3.0, backend=backend)[0]) == [32, 37]
    # A zero-length segment gets the frame on screen at that time.
    assert _indices_of(read_frames(coded_video, [3], start=1.25, end=1.25, backend=backend)[0]) == [12, 12, 12]
    with pytest.raises(VideoDecodeError, match="holds no frame"):
        read_frames(coded_video, [4], start=10.0, end=11.0, backend=backend)
    with pytest.raises(ValueError, match="before its start"):
        read_frames(coded_video, [4], start=2.0, end=1.0, backend=backend)


@pytest.mark.skipif(not backend_available("decord"), reason="decord2 is not installed")
def test_decord_and_pyav_agree(colour_video, coded_video):
    """Same indices, and pixels within 2 grey levels (observed: identical; both convert with FFmpeg's swscale)."""
    counts = [3, 8, 24]
    by_decord = read_frames(colour_video, counts, backend="decord")
    by_pyav = read_frames(colour_video, counts, backend="pyav")
    for a, b in zip(by_decord, by_pyav):
        assert a.shape == b.shape
        diff = (a.int() - b.int()).abs()
        assert diff.max() <= 2 and diff.float().mean() <= 0.5
    for start, end in [(None, None), (0.55, 2.05), (2.5, None)]:
        got_decord = read_frames(coded_video, [5, 16], start=start, end=end, backend="decord")
        got_pyav = read_frames(coded_video, [5, 16], start=start, end=end, backend="pyav")
        assert [_indices_of(f) for f in got_decord] == [_indices_of(f) for f in got_pyav]


def test_images_load_as_static_video(tmp_path):
    array = np.zeros((20, 30, 3), np.uint8)
    array[5:15, 10:20] = (200, 30, 90)
    for suffix in ("png", "jpg"):
        path = tmp_path / f"still.{suffix}"
        Image.fromarray(array).save(path)
        a, b = read_frames(path, [3, 5])
        assert a.shape == (3, 20, 30, 3) and b.shape == (5, 20, 30, 3)
        assert all(torch.equal(a[0], f) for f in [*a, *b])
        if suffix == "png":  # lossless
            assert torch.equal(a[0], torch.from_numpy(array))
        else:  # lossy: check colours away from the square's edges
            assert (a[0, 10, 15].int() - torch.tensor([200, 30, 90])).abs().max() <= 12
            assert a[0, 1, 1].int().max() <= 12


def test_gif_decodes_as_video(tmp_path):
    path = tmp_path / "anim.gif"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb8"
        for frame in _coded_frames(6, 16):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    frames = read_frames(path, [3])[0]
    assert frames.shape == (3, 16, 16, 3)
    assert frames.float().mean((1, 2, 3)).diff().gt(0).all()  # later frames are brighter


def test_frame_folders_read_as_videos(tmp_path):
    """A folder of extracted frames is one video at FRAME_FOLDER_FPS, in number order, read only where sampled."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(_coded_frames(30, 8)):  # 10 s at 3 fps; names are not zero-padded
        Image.fromarray(frame).save(folder / f"frame_{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    assert video_mod.FRAME_FOLDER_FPS == 3.0
    four, eight = read_frames(folder, [4, 8])
    assert _indices_of(four) == sample_indices(30, 4) and _indices_of(eight) == sample_indices(30, 8)
    (segment,) = read_frames(folder, [4], start=2.0, end=4.0)  # frames 6..11
    assert _indices_of(segment) == [6 + i for i in sample_indices(6, 4)]
    opened = []
    real_open = Image.open
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
        read_frames(folder, [2])
    assert len(opened) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="directory holds no frame images"):
        read_frames(empty, [4])
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "frame_30.png")  # another size
    with pytest.raises(VideoDecodeError, match="differ in size"):
        read_frames(folder, [31])
    (folder / "frame_31.png").write_bytes(b"not a png")
    with pytest.raises(VideoDecodeError, match="cannot read frame 'frame_31.png'"):
        read_frames(folder, [32], end=100.0)


# ---- failures -------------------------------------------------------------------------------------


def _bad_files(tmp_path, coded_video):
    data = coded_video.read_bytes()
    files = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "truncated.mp4": data[: len(data) // 2],  # moov atom at the end: the container cannot open
        "random.mp4": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "notes.mp4": b"this is a text file, not a video\n" * 40,
    }
    for name, content in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    return [tmp_path / name for name in files]


@pytest.mark.parametrize("backend", [None, *BACKENDS])
def test_bad_files_raise_video_decode_error(tmp_path, coded_video, backend):
    for path in _bad_files(tmp_path, coded_video):
        with pytest.raises(VideoDecodeError) as info:
            read_frames(path, [4], backend=backend)
        assert info.value.path == str(path)
        assert path.name in str(info.value)
    with pytest.raises(VideoDecodeError, match="empty"):
        read_frames(tmp_path / "empty.mp4", [4], backend=backend)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        read_frames(tmp_path / "missing.mp4", [4], backend=backend)
    with pytest.raises(VideoDecodeError, match="directory"):
        read_frames(tmp_path, [4], backend=backend)


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoDecodeError, match="no video stream"):
        read_frames(path, [4], backend="pyav")
    with pytest.raises(VideoDecodeError, match="audio.mp4"):
        read_frames(path, [4])


def test_errors_pickle_and_bad_arguments(coded_video):
    error = pickle.loads(pickle.dumps(VideoDecodeError("/x/clip.mp4", "broken")))
    assert isinstance(error, VideoDecodeError) and error.path == "/x/clip.mp4" and "clip.mp4': broken" in str(error)
    with pytest.raises(ValueError, match="unknown video backend"):
        read_frames(coded_video, [4], backend="ffmpeg-cli")
    with pytest.raises(ValueError, match="frame_counts"):
        read_frames(coded_video, [0])
    if not backend_available("torchcodec"):
        with pytest.raises(ImportError, match="pip install torchcodec"):
            read_frames(coded_video, [4], backend="torchcodec")


def test_auto_falls_back_to_pyav_and_reports_both(monkeypatch, coded_video, tmp_path):
    class Broken:
        def __init__(self, path):
            raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(video_mod, "backend_available", lambda name: True)
    monkeypatch.setitem(video_mod._READERS, "decord", Broken)
    assert _indices_of(read_frames(coded_video, [4])[0]) == sample_indices(NUM_FRAMES, 4)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 500)
    with pytest.raises(VideoDecodeError, match=r"decord: RuntimeError: simulated decord failure; pyav: "):
        read_frames(junk, [4])


def test_replans_when_decoder_delivers_fewer_frames(monkeypatch, tmp_path):
    """Container says 10 frames, the decoder stops after 6: indices are planned again over 6."""
    decoded = []

    class Short:
        num_frames = 10

        def __init__(self, path):
            pass

        def timestamps(self):
            return np.arange(10) / 10

        def decode(self, indices):
            if max(indices) >= 6:
                raise video_mod._ShortStream(6)
            decoded.append(list(indices))
            return np.stack([np.full((2, 2, 3), i, np.uint8) for i in indices])

        def close(self):
            pass

    monkeypatch.setitem(video_mod._READERS, "pyav", Short)
    path = tmp_path / "short.mp4"
    path.write_bytes(b"x")
    out = read_frames(path, [4, 3], backend="pyav")
    assert [f[:, 0, 0, 0].tolist() for f in out] == [sample_indices(6, 4), sample_indices(6, 3)]
    assert decoded == [sorted(set(sample_indices(6, 4)) | set(sample_indices(6, 3)))]


def test_hung_decode_times_out(monkeypatch, coded_video):
    # The decoder returns only when released (or after a minute, which then fails the test as "did not raise"):
    # the error can only come from read_frames giving up on it, however slow the machine.
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        return []

    monkeypatch.setattr(video_mod, "_decode", hang)
    try:
        with pytest.raises(VideoDecodeError, match="did not finish within 0.2 s") as info:
            read_frames(coded_video, [4], timeout=0.2)
    finally:
        release.set()  # the abandoned decoder thread ends now instead of outliving the test
    assert info.value.path == str(coded_video)
