"""Loading the default model: genuine weights, strict mapping, recorded digest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embeddings import (
    DEFAULT_MODEL,
    CorruptWeightsError,
    EmbedConfig,
    EmbeddingModel,
    get_spec,
    preprocess,
    verify_weights,
)

PINNED = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_default_model_is_ready(model: EmbeddingModel):
    assert model.name == DEFAULT_MODEL == "tf_efficientnet_lite0"
    assert model.dim == 1280
    assert model.weights_sha256 == PINNED
    assert not model.net.training
    assert not any(p.requires_grad for p in model.net.parameters())
    assert model.spec.mean == model.spec.std == (0.5, 0.5, 0.5)
    assert len(model.digest) == 64


def test_every_tensor_comes_from_the_package_file(model: EmbeddingModel):
    """A broken mapping or a silent random init cannot pass: compare tensors one by one."""
    source = torch.load(model.weights_path, map_location="cpu", weights_only=True)
    target = model.net.state_dict()
    assert len(source) == len(target) == 296
    for (sk, sv), (tk, tv) in zip(source.items(), target.items(), strict=True):
        assert sv.shape == tv.shape, (sk, tk)
        assert torch.equal(sv, tv), (sk, tk)


def _photo(image: np.ndarray, model: EmbeddingModel) -> torch.Tensor:
    from skimage.transform import resize

    rgb = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    return preprocess(model, torch.from_numpy(rgb).permute(2, 0, 1)[None])


def test_weights_classify_real_photographs(model: EmbeddingModel):
    """ImageNet classes: 967 espresso, 968 cup; 281-285 domestic cats."""
    skdata = pytest.importorskip("skimage.data")
    coffee = int(model.classify(_photo(skdata.coffee(), model)).argmax())
    cat = int(model.classify(_photo(skdata.chelsea(), model)).argmax())
    assert coffee in (967, 968, 504), coffee  # espresso, cup, coffee mug
    assert cat in range(281, 286), cat


def test_digest_records_every_output_parameter(model: EmbeddingModel):
    record = model.record()
    assert record["weights_sha256"] == PINNED
    assert record["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert len(record["augmentations"]) == 8
    assert record["precision"] == model.resolved.precision == "fp32"
    # auto runtime: bf16 where this CPU has it natively, else a logged fall-back to fp32; the
    # digest records the precision that runs, so it changes exactly when bf16 runs
    bf16 = model.with_config(precision="bf16")
    assert bf16.record()["precision"] == bf16.resolved.precision
    assert (bf16.digest != model.digest) == (bf16.resolved.precision == "bf16")
    assert bf16.resolved.note or bf16.resolved.precision == "bf16"
    assert model.with_config(batch_size=16, threads=1).digest == model.digest
    # fp32 runtimes give the same vectors: same digest, another numerical class
    in_torch = model.with_config(runtime="torch")
    assert in_torch.digest == model.digest
    assert in_torch.numerical_class == "torch-fp32" != model.numerical_class


def test_verify_weights(model: EmbeddingModel):
    verify_weights(model, PINNED)
    with pytest.raises(CorruptWeightsError, match="expected 0000"):
        verify_weights(model, "0" * 64)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="precision 'fp8'"):
        EmbedConfig(precision="fp8")
    with pytest.raises(ValueError, match="batch_size 0"):
        EmbedConfig(batch_size=0)


def test_registry_default_spec():
    spec = get_spec(None)
    assert spec.weights_sha256 == PINNED
    assert spec.input_size == (3, 224, 224)
