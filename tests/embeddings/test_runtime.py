"""Inference runtimes: the default, numerical classes, one stage graph, and every bad input."""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import pytest
import torch

from embeddings import (
    EmbedConfig,
    EmbeddingModel,
    IRCacheError,
    ModelConversionError,
    ModelSpec,
    PrecisionUnavailableError,
    RuntimeUnavailableError,
    class_min_cosine,
    class_resources,
    config_for_class,
    embed_tiles,
    load_model,
    native_precisions,
    numerical_class,
    resolve,
    runnable_classes,
)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_default_is_openvino_fp32(model: EmbeddingModel):
    assert model.config.runtime == "auto" and model.config.precision == "fp32"
    assert model.numerical_class == "openvino-fp32"
    assert numerical_class(model) == numerical_class(EmbedConfig()) == "openvino-fp32"
    assert numerical_class(EmbedConfig(runtime="torch")) == "torch-fp32"
    assert {"openvino-fp32", "torch-fp32"} <= set(runnable_classes())
    assert class_min_cosine("openvino-fp32") >= 0.99999
    assert class_resources()["class-openvino-fp32"] == 1.0


def test_config_for_class_round_trips():
    for cls in runnable_classes():
        config = config_for_class(cls, threads=1)
        assert numerical_class(config) == cls and config.threads == 1
    with pytest.raises(ValueError, match="not '<runtime>-<precision>"):
        config_for_class("openvino")
    with pytest.raises(PrecisionUnavailableError, match="computes 'openvino-fp32', not"):
        config_for_class("openvino-fp32-avx512")
    assert class_min_cosine("openvino-bf16-amx") == class_min_cosine("openvino-bf16")


def test_fp32_runtimes_give_the_same_vectors(model: EmbeddingModel, tiles: np.ndarray):
    """Same digest, another class: the vectors agree within fp32 rounding (cosine >= 0.99999)."""
    ref, ref_aug = embed_tiles(model, tiles, return_augmentations=True)
    for runtime in ("torch", "onnxruntime"):
        other = model.with_config(runtime=runtime)
        assert other.numerical_class == f"{runtime}-fp32"
        assert other.digest == model.digest
        got, got_aug = embed_tiles(other, tiles, return_augmentations=True)
        assert _cos(got, ref).min() >= 0.99999, runtime
        assert _cos(got_aug, ref_aug).min() >= 0.99999, runtime  # each augmentation, too


def test_stage_graph_augments_like_tiling(tiles: np.ndarray):
    """The converted stage makes the 8 views in the order of tiling.augment, then normalises."""
    from embeddings._convert import StageNet
    from tiling.augment import augment_all

    class Pixels(torch.nn.Module):  # features = the normalised pixels themselves
        def forward_features(self, x):
            return x.flatten(1)

        def forward_head(self, x, pre_logits=True):
            return x

    stage = StageNet(Pixels(), mean=(0.5,), std=(0.25,))
    out = stage(torch.from_numpy(tiles[:2, None])).numpy().reshape(2, 8, 224, 224)
    np.testing.assert_array_equal(out, (augment_all(tiles[:2]) - 0.5) / 0.25)


def test_openvino_is_deterministic_per_thread_count(model: EmbeddingModel, tiles: np.ndarray):
    one = model.with_config(threads=1)
    a = embed_tiles(one, tiles)
    np.testing.assert_array_equal(embed_tiles(one, tiles), a)
    assert _cos(a, embed_tiles(model, tiles)).min() >= class_min_cosine(model.numerical_class)


def test_one_model_embeds_from_several_threads(model: EmbeddingModel, tiles: np.ndarray):
    """A Dask worker with two threads shares one model between its tasks."""
    from concurrent.futures import ThreadPoolExecutor

    want = embed_tiles(model, tiles)
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: embed_tiles(model, tiles), range(3)))
    for out in outs:
        np.testing.assert_array_equal(out, want)


def test_features_of_normalised_images_match_torch(model: EmbeddingModel):
    from embeddings._embed import network_input

    rng = np.random.default_rng(3)
    images = torch.from_numpy(network_input(model, rng.uniform(size=(1, 224, 224)).astype("f4")))
    got = model.features(images).numpy()
    want = model.with_config(runtime="torch").features(images).numpy()
    assert got.shape == (8, model.dim)
    assert _cos(got, want).min() >= 0.99999


# ------------------------------------------------------------------ bad input


def test_runtime_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(RuntimeUnavailableError, match=r"'onnxruntime' is not installed.*pip"):
        load_model(config=EmbedConfig(runtime="onnxruntime"))
    assert issubclass(RuntimeUnavailableError, ImportError)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install openvino"):
        resolve(EmbedConfig(runtime="openvino"))
    assert resolve(EmbedConfig()).numerical_class == "torch-fp32"  # auto: torch without OpenVINO


def test_unknown_runtime_or_precision():
    with pytest.raises(ValueError, match="runtime 'tensorrt' is not supported"):
        EmbedConfig(runtime="tensorrt")
    with pytest.raises(ValueError, match="precision 'fp16' is not supported"):
        EmbedConfig(precision="fp16")


def test_environment_sets_the_defaults(monkeypatch):
    monkeypatch.setenv("HUBCAT_EMBED_RUNTIME", "torch")
    assert EmbedConfig().runtime == "torch"
    monkeypatch.setenv("HUBCAT_EMBED_PRECISION", "fp8")
    with pytest.raises(ValueError, match="HUBCAT_EMBED_PRECISION"):
        EmbedConfig()


def test_precision_this_machine_cannot_run_natively(caplog):
    if "bf16" in native_precisions("openvino"):
        pytest.skip("this CPU runs bf16 natively (AMX or AVX512-BF16)")
    for runtime in ("openvino", "torch"):
        with pytest.raises(PrecisionUnavailableError, match="cannot run bf16 natively"):
            load_model(config=EmbedConfig(runtime=runtime, precision="bf16"))
    with caplog.at_level(logging.WARNING, logger="embeddings"):
        fallback = resolve(EmbedConfig(precision="bf16"))  # auto: logged fall-back
    assert (fallback.runtime, fallback.precision) == ("openvino", "fp32")
    assert "falling back to openvino fp32" in caplog.text and fallback.note


def test_precision_a_runtime_does_not_implement():
    with pytest.raises(PrecisionUnavailableError, match=r"'torch' does not implement .*'int8'"):
        resolve(EmbedConfig(runtime="torch", precision="int8"))
    with pytest.raises(PrecisionUnavailableError, match="'onnxruntime' does not implement"):
        resolve(EmbedConfig(runtime="onnxruntime", precision="bf16"))


def test_ir_cache_whose_sha256_does_not_match(model: EmbeddingModel, tmp_path):
    source = model.backend.folders["stage"]
    copy = tmp_path / "openvino" / source.name
    shutil.copytree(source, copy)
    again = load_model(config=EmbedConfig(cache_dir=str(tmp_path)))
    assert again.backend.folders["stage"] == copy  # read from the cache, not converted again
    data = bytearray((copy / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(IRCacheError, match=r"model\.bin has sha256 \w+, its manifest records"):
        load_model(config=EmbedConfig(cache_dir=str(tmp_path)))
    (copy / "manifest.json").write_text("{")
    with pytest.raises(IRCacheError, match=r"unreadable manifest\.json.*delete"):
        load_model(config=EmbedConfig(cache_dir=str(tmp_path)))


class _Tiny(torch.nn.Module):
    """A small real network (one convolution) with timm's feature interface."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward_features(self, x):
        return self.conv(x).flatten(2)

    def forward_head(self, x, pre_logits=True):
        return x.mean(-1)


class _Spectral(_Tiny):
    def forward_features(self, x):  # singular values: no OpenVINO operation for them
        return torch.linalg.svdvals(self.conv(x).flatten(2)).unsqueeze(-1)


class _FrozenOffset(_Tiny):
    def forward_features(self, x):  # a Python float: the tracer freezes it to the example's
        y = self.conv(x)
        return (y - float(y.mean())).flatten(2)


@pytest.mark.parametrize(
    ("net", "match"),
    [(_Spectral, r"cannot convert tiny: OpConversionFailure"), (_FrozenOffset, "other features")],
)
def test_model_the_runtime_cannot_convert(net, match, tmp_path):
    spec = ModelSpec(name="tiny", timm_name="tiny", input_size=(3, 32, 32), mean=(0.5,) * 3)
    config = EmbedConfig(runtime="openvino", cache_dir=str(tmp_path))
    model = EmbeddingModel(net().eval(), spec, "0" * 64, tmp_path / "none", config)
    with pytest.raises(ModelConversionError, match=match) as info:
        model.backend  # noqa: B018
    assert "runtime='torch'" in str(info.value)
    assert not list(tmp_path.rglob("manifest.json"))  # nothing half-converted is cached
    in_torch = model.with_config(runtime="torch")  # the fix the message names works
    tiles = np.random.default_rng(0).uniform(size=(2, 32, 32)).astype(np.float32)
    assert embed_tiles(in_torch, tiles).shape == (2, 4)


def test_int8_needs_calibration_tiles_and_nncf(model: EmbeddingModel, tiles, monkeypatch):
    int8 = model.with_config(runtime="openvino", precision="int8")
    with pytest.raises(ValueError, match=r"int8' needs calibration tiles.*calibration=tiles"):
        int8.backend  # noqa: B018
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(RuntimeUnavailableError, match="pip install 'hubcat\\[int8\\]'"):
        load_model(config=EmbedConfig(runtime="openvino", precision="int8"), calibration=tiles)


@pytest.mark.slow
def test_int8_is_an_option_with_its_own_digest(model: EmbeddingModel, tiles):
    """Calibrated on tiles, recorded in the digest; close to fp32 but not the same vectors."""
    pytest.importorskip("nncf")
    if "int8" not in native_precisions("openvino"):
        pytest.skip("OpenVINO reports no INT8 capability on this CPU")
    config = EmbedConfig(runtime="openvino", precision="int8")
    int8 = load_model(config=config, calibration=tiles[:2])
    assert int8.numerical_class == "openvino-int8"
    assert int8.record()["precision"] == "int8" and int8.digest != model.digest
    assert "int8_calibration_sha256" in int8.record()
    vectors = embed_tiles(int8, tiles)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _cos(vectors, embed_tiles(model, tiles)).min() > 0.5


@pytest.mark.slow
def test_openvino_matches_torch_on_real_hst_tiles(model: EmbeddingModel, hst_dir):
    """The default runtime and torch fp32 agree on real Hubble tiles (cosine >= 0.99999)."""
    from tests.embeddings.test_embed import _hst_tile

    names = (
        "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits",
        "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits",
    )
    tiles = np.stack([_hst_tile(hst_dir / n) for n in names])
    got = embed_tiles(model, tiles)
    want = embed_tiles(model.with_config(runtime="torch"), tiles)
    assert _cos(got, want).min() >= 0.99999
