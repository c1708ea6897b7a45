"""Frozen visual encoders: every registered id, library parity, and loading weights from local directories."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from safetensors.torch import save_file

from merv.models.encoders import VisionEncoder, build_encoder, list_encoders
from merv.models.encoders.base import CLIP_MEAN, CLIP_STD, HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD

TINY_IDS = list_encoders(tiny=True)
FULL_IDS = list_encoders(tiny=False)

# Output shapes of the published architectures, for the ids whose shape is known independently of the code.
PUBLISHED_SHAPES = {
    "siglip-b16-224": (16, 196, 768),
    "siglip-so400m-384": (16, 729, 1152),
    "clip-l14-224": (16, 256, 1024),
    "clip-l14-336": (16, 576, 1024),
    "dinov2-b14-224": (16, 256, 768),
    "dinov2-l14-224": (16, 256, 1024),
    "dinov2-reg4-l14-224": (16, 256, 1024),
    "videomae-b16-224": (8, 196, 768),
    "vivit-b16x2-224": (16, 196, 768),
    "timm-siglip-b16-224": (16, 196, 768),
    "timm-siglip-so400m-384": (16, 729, 1152),
    "timm-dinov2-reg4-l14-224": (16, 256, 1024),
    "timm-vit-b16-224": (16, 196, 768),
}
# Normalisation each Hugging Face family was trained with (timm ids take theirs from the weight tag).
FAMILY_NORM = {
    "siglip-": (HALF_MEAN, HALF_STD),
    "clip-": (CLIP_MEAN, CLIP_STD),
    "dinov2-": (IMAGENET_MEAN, IMAGENET_STD),
    "videomae-": (IMAGENET_MEAN, IMAGENET_STD),
    "vivit-": (HALF_MEAN, HALF_STD),
    "timm-siglip-": (HALF_MEAN, HALF_STD),
    "timm-dinov2-": (IMAGENET_MEAN, IMAGENET_STD),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pixels(encoder: VisionEncoder, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = encoder.image_size
    return torch.randn(batch, encoder.num_frames, 3, size, size, generator=generator)


def _encode(encoder: VisionEncoder, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder(pixels)


def test_merv_ids_are_registered() -> None:
    for encoder_id in PUBLISHED_SHAPES:
        assert encoder_id in FULL_IDS
    for encoder_id in ("siglip-tiny", "clip-tiny", "dinov2-tiny", "videomae-tiny", "vivit-tiny", "timm-vit-tiny"):
        assert encoder_id in TINY_IDS


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_tiny_output_matches_declared_shape(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    assert encoder.encoder_id == encoder_id and encoder.pretrained is None
    assert encoder.image_size == 32 and encoder.output_shape[1:] == (16, 32)
    features = _encode(encoder, _pixels(encoder))
    assert features.shape == (2, *encoder.output_shape)
    assert torch.isfinite(features).all()
    assert features.std() > 0


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_tiny_samples_are_encoded_independently_and_in_time_order(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    pixels = _pixels(encoder)
    features = _encode(encoder, pixels)
    torch.testing.assert_close(_encode(encoder, pixels[1:]), features[1:], atol=1e-5, rtol=1e-5)
    if encoder.temporal_tokens == encoder.num_frames:  # image model: frame t gives output step t
        reversed_features = _encode(encoder, pixels.flip(1))
        torch.testing.assert_close(reversed_features, features.flip(1), atol=1e-5, rtol=1e-5)


def _normalised(encoder: VisionEncoder, frames: torch.Tensor) -> torch.Tensor:
    """`(T, H, W, 3)` uint8 frames → the encoder's `(T, 3, S, S)` float input, as training prepares it."""
    return encoder.frame_spec.normalize(encoder.frame_spec.resize(frames))


@pytest.mark.parametrize("encoder_id", ["siglip-tiny", "vivit-tiny"])
def test_encode_aligned_normalises_uint8_and_pools(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id, num_frames=8)
    frames = torch.randint(0, 256, (8, 37, 50, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    resized = encoder.frame_spec.resize(frames).unsqueeze(0)  # uint8, what the data pipeline ships
    with torch.no_grad():
        aligned = encoder.encode_aligned(resized, temporal_tokens=2, tokens_per_frame=4)
        from_float = encoder.encode_aligned(_normalised(encoder, frames).unsqueeze(0), 2, 4)  # already normalised
        full = encoder(_normalised(encoder, frames).unsqueeze(0))  # (1, T', N, D)
    assert aligned.shape == (1, 2, 4, encoder.embed_dim)
    torch.testing.assert_close(aligned, from_float)
    # Pooling is a plain average: the first temporal token of the first 2x2 cell of the 4x4 grid.
    side = encoder.grid[0]
    cell = full.reshape(1, full.shape[1], side, side, -1)[:, : full.shape[1] // 2, : side // 2, : side // 2]
    torch.testing.assert_close(aligned[0, 0, 0], cell.mean(dim=(1, 2, 3))[0])


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_resize_and_normalise(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    frames = torch.randint(0, 256, (encoder.num_frames, 37, 50, 3), dtype=torch.uint8)
    pixels = _normalised(encoder, frames)
    assert pixels.shape == (encoder.num_frames, 3, encoder.image_size, encoder.image_size)
    assert pixels.dtype == torch.float32
    # A constant frame keeps its value through resizing, so the output is exactly (value - mean) / std.
    white = torch.full((encoder.num_frames, 37, 50, 3), 255, dtype=torch.uint8)
    expected = (1.0 - torch.tensor(encoder.mean)) / torch.tensor(encoder.std)
    torch.testing.assert_close(_normalised(encoder, white), expected.view(1, 3, 1, 1).expand_as(pixels))
    for prefix, (mean, std) in FAMILY_NORM.items():
        if encoder_id.startswith(prefix):
            assert encoder.mean == mean and encoder.std == std


def test_normalize_takes_uint8_and_never_changes_its_input() -> None:
    spec = build_encoder("siglip-tiny").frame_spec
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    before = pixels.clone()
    assert spec.normalize(pixels).dtype == torch.float32
    assert torch.equal(pixels, before)
    floats = pixels.float()
    with pytest.raises(TypeError, match="uint8"):
        spec.normalize(floats)
    assert torch.equal(floats, before.float())


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_encoder_stays_in_eval_mode(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    encoder.train()
    assert not any(module.training for module in encoder.modules())
    torch.nn.Sequential(encoder).train()
    assert not any(module.training for module in encoder.modules())


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_wrong_input_shape_raises(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    good = _pixels(encoder, batch=1)
    bad_inputs = [
        good[:, :-1],  # too few frames
        torch.nn.functional.pad(good, (0, 8, 0, 8)),  # wrong resolution
        good[:, 0],  # no time axis
        good[:, :, :2],  # two channels
        good[:, :, :, :-8],  # not square: only the height is wrong
    ]
    for bad in bad_inputs:
        with pytest.raises(ValueError, match=encoder_id):
            encoder(bad)


@pytest.mark.parametrize("encoder_id", TINY_IDS)
def test_num_frames_override_respects_tubelets(encoder_id: str) -> None:
    default = build_encoder(encoder_id)
    tubelet = default.num_frames // default.temporal_tokens
    if tubelet > 1:
        with pytest.raises(ValueError, match="multiple of"):
            build_encoder(encoder_id, num_frames=default.num_frames + 1)
    encoder = build_encoder(encoder_id, num_frames=2 * tubelet)
    assert encoder.num_frames == 2 * tubelet and encoder.temporal_tokens == 2
    assert _encode(encoder, _pixels(encoder, batch=1)).shape == (1, *encoder.output_shape)


@pytest.mark.parametrize("encoder_id", FULL_IDS)
def test_full_size_architecture_on_meta_device(encoder_id: str) -> None:
    # The meta device runs the real architecture on shapes only: nothing is allocated or downloaded.
    with torch.device("meta"):
        encoder = build_encoder(encoder_id)
        features = encoder(torch.empty(1, encoder.num_frames, 3, encoder.image_size, encoder.image_size))
    assert all(p.is_meta for p in encoder.parameters())
    assert features.shape == (1, *encoder.output_shape)
    if encoder_id in PUBLISHED_SHAPES:
        assert encoder.output_shape == PUBLISHED_SHAPES[encoder_id]
    for prefix, (mean, std) in FAMILY_NORM.items():
        if encoder_id.startswith(prefix):
            assert encoder.mean == mean and encoder.std == std


def test_siglip_matches_library_model() -> None:
    encoder = build_encoder("siglip-tiny")
    pixels = _pixels(encoder)
    frames = pixels.flatten(0, 1)
    with torch.no_grad():
        out = encoder.model(pixel_values=frames, output_hidden_states=True)
    expected = out.hidden_states[-2].reshape(2, encoder.num_frames, 16, 32)  # no prefix token in SigLIP
    torch.testing.assert_close(_encode(encoder, pixels), expected, atol=1e-6, rtol=0)
    encoder.layer = -1
    last = _encode(encoder, pixels)
    # The last hidden state is returned before the final norm, which the library applies on top.
    with torch.no_grad():
        normed = encoder.model.post_layernorm(last)
    torch.testing.assert_close(normed.flatten(0, 1), out.last_hidden_state, atol=1e-6, rtol=0)
    assert not torch.allclose(last, expected)


@pytest.mark.parametrize("encoder_id", ["clip-tiny", "dinov2-tiny", "vivit-tiny"])
def test_prefix_tokens_are_dropped(encoder_id: str) -> None:
    encoder = build_encoder(encoder_id)
    pixels = _pixels(encoder)
    model_input = pixels if encoder.temporal_tokens < encoder.num_frames else pixels.flatten(0, 1)
    with torch.no_grad():
        hidden = encoder.model(pixel_values=model_input, output_hidden_states=True).hidden_states[-2]
    expected = hidden[:, 1:].reshape(2, *encoder.output_shape)
    torch.testing.assert_close(_encode(encoder, pixels), expected, atol=1e-6, rtol=0)


def test_timm_matches_library_model() -> None:
    encoder = build_encoder("timm-vit-tiny")
    model = encoder.model
    assert model.num_prefix_tokens == 1
    pixels = _pixels(encoder)
    frames = pixels.flatten(0, 1)
    with torch.no_grad():
        x = model.norm_pre(model._pos_embed(model.patch_embed(frames)))
        x = model.blocks[0](x)  # the penultimate of two blocks
        expected = x[:, 1:].reshape(2, encoder.num_frames, 16, 32)
        torch.testing.assert_close(_encode(encoder, pixels), expected, atol=1e-6, rtol=0)
        encoder.layer = -1
        last = _encode(encoder, pixels)
        # forward_features is the last block followed by the final norm, prefix tokens included.
        normed = model.norm(last).flatten(0, 1)
        torch.testing.assert_close(normed, model.forward_features(frames)[:, 1:], atol=1e-6, rtol=0)
    assert not torch.allclose(last, expected)


def test_timm_rejects_layers_that_are_not_block_outputs() -> None:
    for layer in (0, 3, -3):
        encoder = build_encoder("timm-vit-tiny")
        encoder.layer = layer
        with pytest.raises(ValueError, match="not a block output"):
            encoder(_pixels(encoder))


@pytest.mark.parametrize("encoder_id", ["siglip-tiny", "dinov2-tiny", "videomae-tiny"])
def test_hf_weights_load_from_local_directory(encoder_id: str, tmp_path) -> None:
    saved = build_encoder(encoder_id)
    saved.model.save_pretrained(tmp_path)
    loaded = build_encoder(encoder_id, pretrained=str(tmp_path))
    assert loaded.pretrained == str(tmp_path)
    pixels = _pixels(saved)
    torch.testing.assert_close(_encode(loaded, pixels), _encode(saved, pixels), atol=0, rtol=0)
    # A fresh random init differs, so equality above comes from the loaded weights.
    assert not torch.allclose(_encode(build_encoder(encoder_id), pixels), _encode(saved, pixels))


def _full_checkpoint(encoder_id: str, tower_config):
    """A randomly initialised model in the layout the published hub checkpoint of this family has."""
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    if encoder_id == "siglip-tiny":  # image-text model with the vision pooling head
        vision = {**tower_config.to_dict(), "vision_use_head": True}
        return transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
    if encoder_id == "clip-tiny":  # image-text model
        return transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=tower_config.to_dict()))
    config = copy.deepcopy(tower_config)
    if encoder_id == "videomae-tiny":  # self-supervised pretraining model with its pixel decoder
        config.update({"decoder_hidden_size": 32, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64})
        return transformers.VideoMAEForPreTraining(config)
    return transformers.VivitForVideoClassification(config)  # Kinetics classifier


@pytest.mark.parametrize(
    ("encoder_id", "tower_name"),
    [
        ("siglip-tiny", "vision_model"),
        ("clip-tiny", "vision_model"),
        ("videomae-tiny", "videomae"),
        ("vivit-tiny", "vivit"),
    ],
)
def test_hf_vision_tower_loads_from_published_checkpoint_layout(encoder_id: str, tower_name: str, tmp_path) -> None:
    encoder = build_encoder(encoder_id)
    full = _full_checkpoint(encoder_id, encoder.model.config)
    full.save_pretrained(tmp_path)
    loaded = build_encoder(encoder_id, pretrained=str(tmp_path))
    pixels = _pixels(encoder)
    video = encoder.temporal_tokens < encoder.num_frames
    with torch.no_grad():
        tower = getattr(full, tower_name)
        hidden = tower(pixel_values=pixels if video else pixels.flatten(0, 1), output_hidden_states=True).hidden_states[
            -2
        ]
    patch_tokens = encoder.output_shape[0] * encoder.output_shape[1] if video else encoder.output_shape[1]
    expected = hidden[:, hidden.shape[1] - patch_tokens :].reshape(2, *encoder.output_shape)
    torch.testing.assert_close(_encode(loaded, pixels), expected, atol=1e-6, rtol=0)


def test_videomae_weights_load_at_another_frame_count(tmp_path) -> None:
    build_encoder("videomae-tiny").model.save_pretrained(tmp_path)
    encoder = build_encoder("videomae-tiny", pretrained=str(tmp_path), num_frames=4)
    assert encoder.output_shape == (2, 16, 32)
    assert _encode(encoder, _pixels(encoder)).shape == (2, 2, 16, 32)


def test_vivit_weights_only_load_at_their_frame_count(tmp_path) -> None:
    build_encoder("vivit-tiny").model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_frames=8 \\(expected 4\\)"):
        build_encoder("vivit-tiny", pretrained=str(tmp_path), num_frames=4)


def test_hf_checkpoint_of_another_architecture_is_rejected(tmp_path) -> None:
    build_encoder("siglip-tiny").model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden_size=32 \\(expected 1152\\)"):
        build_encoder("siglip-so400m-384", pretrained=str(tmp_path))


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_weights_load_from_local_directory(filename: str, tmp_path) -> None:
    saved = build_encoder("timm-vit-tiny")
    state = {k: v.contiguous() for k, v in saved.model.state_dict().items()}
    if filename.endswith(".safetensors"):
        save_file(state, str(tmp_path / filename))
    else:
        torch.save(state, tmp_path / filename)
    loaded = build_encoder("timm-vit-tiny", pretrained=str(tmp_path))
    assert loaded.pretrained == str(tmp_path)
    pixels = _pixels(saved)
    torch.testing.assert_close(_encode(loaded, pixels), _encode(saved, pixels), atol=0, rtol=0)
    assert not torch.allclose(_encode(build_encoder("timm-vit-tiny"), pixels), _encode(saved, pixels))


@pytest.mark.parametrize("encoder_id", ["siglip-tiny", "videomae-tiny", "timm-vit-tiny"])
def test_missing_local_directory_is_a_clear_error(encoder_id: str, tmp_path) -> None:
    missing = tmp_path / "no-such-weights"
    with pytest.raises(FileNotFoundError, match="no-such-weights"):
        build_encoder(encoder_id, pretrained=str(missing))
