"""Weights from every source, and every way they can be wrong. No test touches the network:
the hub path runs offline against a local cache laid out exactly like the Hugging Face cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings import (
    CorruptWeightsError,
    EmbeddingModel,
    UnknownModelError,
    WeightsMismatchError,
    WeightsUnavailableError,
    embed_tiles,
    load_model,
)
from embeddings._weights import fetch_hub_file

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def timm_weights(model: EmbeddingModel, tmp_path_factory) -> Path:
    """The default model's tensors under timm's names, as a safetensors file."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(path))
    return path


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch):
    """An empty Hugging Face cache in offline mode; returns a function that adds a repo file."""
    import huggingface_hub.constants as hf

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def add(repo: str, filename: str, data: bytes) -> Path:
        base = cache / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text(REVISION)
        path = base / "snapshots" / REVISION / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return add


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match=r"did you mean.*'tf_efficientnet_lite0'"):
        load_model("tf_efficientnet_lite")


def test_unknown_tag_lists_the_available_ones():
    with pytest.raises(UnknownModelError, match=r"no such pretrained tag.*resnet18\.a1_in1k"):
        load_model("resnet18.not_a_tag")


def test_local_safetensors_file(model: EmbeddingModel, timm_weights: Path, tiles):
    local = load_model(None, weights=timm_weights)
    assert local.weights_path == timm_weights
    assert local.weights_sha256 != model.weights_sha256  # another file, same tensors
    assert local.digest != model.digest
    assert _same_tensors(local.net, model.net)
    np.testing.assert_array_equal(embed_tiles(local, tiles[:1]), embed_tiles(model, tiles[:1]))


def test_weights_of_another_architecture_name_the_tensors(tmp_path: Path):
    import timm
    from safetensors.torch import save_file

    other = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    path = tmp_path / "resnet10t.safetensors"
    save_file(other.state_dict(), str(path))
    with pytest.raises(WeightsMismatchError, match=r"resnet10t\.safetensors.*conv_stem\.weight"):
        load_model("tf_efficientnet_lite0", weights=path)


def test_one_wrong_shape_is_named(tmp_path: Path, timm_weights: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(timm_weights))
    state["conv_head.weight"] = torch.zeros(1000, 320, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsMismatchError, match=r"conv_head\.weight.*1000x320x1x1"):
        load_model(None, weights=path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"PK\x03\x04garbage"])
def test_corrupt_file(tmp_path: Path, content: bytes):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptWeightsError, match=r"broken\.pth is corrupt"):
        load_model(None, weights=path)


def test_truncated_safetensors(tmp_path: Path, timm_weights: Path):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(timm_weights.read_bytes()[:100_000])
    with pytest.raises(CorruptWeightsError, match=r"truncated\.safetensors"):
        load_model(None, weights=path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(WeightsUnavailableError, match=r"nope\.pth does not exist"):
        load_model(None, weights=tmp_path / "nope.pth")


def test_hub_path_from_the_local_cache(offline_hub, timm_weights: Path, model: EmbeddingModel):
    """``arch.tag`` names go through timm's pretrained loading with the hub's file."""
    cached = offline_hub(
        "timm/tf_efficientnet_lite0.in1k", "model.safetensors", timm_weights.read_bytes()
    )
    hub = load_model("tf_efficientnet_lite0.in1k")
    assert hub.weights_path == cached
    assert hub.weights_sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert hub.spec.weights_source == "hf-hub:timm/tf_efficientnet_lite0.in1k"
    assert hub.spec.mean == (0.5, 0.5, 0.5)
    assert _same_tensors(hub.net, model.net)


def test_hf_hub_name_from_the_local_cache(offline_hub, timm_weights: Path, model: EmbeddingModel):
    """``hf-hub:owner/repo`` names read config.json and weights from the cache."""
    config = {
        "architecture": "tf_efficientnet_lite0",
        "num_classes": 1000,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "classifier": "classifier",
            "num_classes": 1000,
        },
    }
    offline_hub("hubcat/lite0-test", "config.json", json.dumps(config).encode())
    offline_hub("hubcat/lite0-test", "model.safetensors", timm_weights.read_bytes())
    hub = load_model("hf-hub:hubcat/lite0-test")
    assert hub.name == "hf-hub:hubcat/lite0-test"
    assert hub.dim == 1280
    assert _same_tensors(hub.net, model.net)


def test_hub_file_with_a_missing_tensor_is_refused(offline_hub, timm_weights: Path, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(timm_weights))
    del state["bn2.running_var"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    offline_hub("timm/tf_efficientnet_lite0.in1k", "model.safetensors", path.read_bytes())
    with pytest.raises(WeightsMismatchError, match=r"bn2\.running_var"):
        load_model("tf_efficientnet_lite0.in1k")


def test_hub_unreachable_says_how_to_provide_weights(offline_hub):
    with pytest.raises(WeightsUnavailableError, match=r"resnet18\.a1_in1k.*--weights FILE"):
        load_model("resnet18.a1_in1k")


def test_hf_hub_name_unreachable(offline_hub):
    with pytest.raises(WeightsUnavailableError, match=r"zoobot-encoder-convnext_nano.*HF_HOME"):
        load_model("zoobot-encoder-convnext_nano")


def test_no_weights_source_at_all():
    with pytest.raises(WeightsUnavailableError, match="has no pretrained weights"):
        fetch_hub_file("mystery", "")


def test_package_format_file_given_as_weights(model: EmbeddingModel):
    """The packaged file's own tensor names map by position when passed explicitly."""
    again = load_model(None, weights=model.weights_path)
    assert again.weights_sha256 == model.weights_sha256
    assert _same_tensors(again.net, model.net)
