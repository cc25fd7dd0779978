"""Workers and tuned models: found by weights sha256, verified before use, refused when altered."""

from __future__ import annotations

import shutil

import pytest

from grid._worker import MODEL_DIRS_ENV, resolve_model_dir, worker_model
from grid.errors import ModelVerificationError


@pytest.fixture(scope="module")
def tuned_dirs(tmp_path_factory):
    """Two tuned model folders (heads initialised with seeds 1 and 2, not trained)."""
    from embeddings import (
        EmbedConfig,
        TuneRecipe,
        load_model,
        read_model_config,
        save_tuned_model,
        trainable_state,
    )

    base = load_model(None, config=EmbedConfig(runtime="torch"))
    out = {}
    for seed in (1, 2):
        recipe = TuneRecipe(hidden=16, dim=8, seed=seed)
        record = {"tiles_merkle_root": "0" * 64, "objective": "infonce", "seed": seed, "steps": 0}
        path = tmp_path_factory.mktemp(f"tuned{seed}") / "model"
        save_tuned_model(path, base, trainable_state(base, recipe), recipe, record)
        out[seed] = (path, read_model_config(path)["weights_sha256"])
    return out


def _digest(path):
    from embeddings import EmbedConfig, load_model

    return load_model(str(path), config=EmbedConfig(runtime="torch")).digest


def test_a_worker_loads_a_tuned_model_and_checks_its_sha256(tuned_dirs):
    path, sha = tuned_dirs[1]
    model = worker_model(str(path), None, sha, _digest(path), 1, "torch-fp32")
    assert model.weights_sha256 == sha and model.name.startswith("tuned-")
    with pytest.raises(ModelVerificationError, match=r"sha256|digest"):
        worker_model(str(path), None, "0" * 64, "other-digest", 1, "torch-fp32")


def test_altered_tuned_weights_are_refused(tuned_dirs, tmp_path):
    from embeddings.errors import CorruptWeightsError

    path, sha = tuned_dirs[2]
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises((CorruptWeightsError, ModelVerificationError), match="sha256"):
        worker_model(str(copy), None, sha, "d", 1, "torch-fp32")


def test_a_volunteer_finds_the_operators_model_by_its_sha256(tuned_dirs, tmp_path, monkeypatch):
    path1, sha1 = tuned_dirs[1]
    path2, sha2 = tuned_dirs[2]
    installed = tmp_path / "models"
    installed.mkdir()
    shutil.copytree(path1, installed / "a")
    shutil.copytree(path2, installed / "b")
    monkeypatch.setenv(MODEL_DIRS_ENV, str(installed))
    operator_path = "/srv/operator/models/tuned-x"  # the operator's folder, absent here
    assert resolve_model_dir(operator_path, sha2) == str(installed / "b")
    assert resolve_model_dir(operator_path, sha1) == str(installed / "a")
    assert resolve_model_dir("tf_efficientnet_lite0", sha1) == "tf_efficientnet_lite0"
    with pytest.raises(ModelVerificationError, match=MODEL_DIRS_ENV):
        resolve_model_dir(operator_path, "f" * 64)  # not installed: refused, never guessed
