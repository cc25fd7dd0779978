"""A tuned model on disk (``MODEL_DIR``) and loading it as a first-class :class:`EmbeddingModel`.

Layout of ``MODEL_DIR``::

    hubcat-model.json   format, base model name and weights sha256, network shape (cut, hidden,
                        dim, pooling, pair_dim, base_weight), the weights file name and its
                        sha256, the recipe and its digest
    weights.safetensors the complete tuned network (frozen encoder part and trained head)
    training.json       the training record: Merkle root of the tiles it trained on, base
                        weights sha256, objective, seed, rounds and steps (and what the trainer
                        adds)

A tuned model is named by its digest: ``tuned-<first 16 hex of the weights sha256>``; its
``weights_sha256`` is that of ``weights.safetensors``, so provenance leaves (model name and
weights sha256) identify it exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings._config import EmbedConfig
from embeddings._model import EmbeddingModel
from embeddings._registry import get_spec
from embeddings._tune import TuneRecipe, build_tuned_net, check_delta
from embeddings._tunednet import POOLINGS, TunedNet
from embeddings._weights import load_strict, read_state_dict, sha256_file
from embeddings.errors import CorruptWeightsError, TuneError, WeightsUnavailableError

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "RECORD_FILE",
    "WEIGHTS_FILE",
    "is_model_dir",
    "load_tuned",
    "read_model_config",
    "save_tuned_model",
    "tuned_name",
]

FORMAT = "hubcat-tuned-model"
FORMAT_VERSION = 1
CONFIG_FILE = "hubcat-model.json"
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "training.json"
#: Keys every training record holds.
RECORD_KEYS = ("tiles_merkle_root", "base_weights_sha256", "objective", "seed", "steps")


def tuned_name(weights_sha256: str) -> str:
    """The name of a tuned model: ``tuned-`` and the first 16 hex digits of its weights sha256.

    Parameters
    ----------
    weights_sha256 : str
        sha256 (hex) of the tuned weights file.

    Returns
    -------
    str
    """
    return f"tuned-{weights_sha256[:16]}"


def is_model_dir(value: object) -> bool:
    """Whether ``value`` is a path to a folder holding a tuned model's ``hubcat-model.json``.

    Parameters
    ----------
    value : object
        A model name, a path, or anything else.

    Returns
    -------
    bool
    """
    if not isinstance(value, (str, os.PathLike)):
        return False
    path = Path(value)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_tuned_model(
    out_dir: str | os.PathLike[str],
    model: EmbeddingModel,
    state: dict[str, np.ndarray],
    recipe: TuneRecipe,
    record: dict[str, Any],
) -> Path:
    """Write a tuned model folder (``MODEL_DIR``) that :func:`embeddings.load_model` loads.

    Parameters
    ----------
    out_dir : path-like
        Folder to create (or to replace a tuned model in; any other non-empty folder is refused).
    model : EmbeddingModel
        The base model the head was trained on.
    state : dict of str to numpy.ndarray
        The trained weights (:func:`embeddings.trainable_state` layout).
    recipe : TuneRecipe
    record : dict
        Training record; must hold ``tiles_merkle_root``, ``objective``, ``seed`` and ``steps``
        (``base_weights_sha256`` is filled from ``model``). JSON-compatible.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    TuneError
        A bad ``state``, a record without its keys or that contradicts the model or recipe, or an
        ``out_dir`` that holds something other than a tuned model.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not is_model_dir(out):
        msg = f"{out} is a non-empty folder that is not a tuned model; choose an empty --out folder"
        raise TuneError(msg)
    net = build_tuned_net(model, recipe)
    check_delta(state, {k: v.numpy() for k, v in net.head.state_dict().items()})
    net.head.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    record = {"base_weights_sha256": model.weights_sha256, **dict(record)}
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        msg = f"training record lacks {missing}; expected the keys {list(RECORD_KEYS)}"
        raise TuneError(msg)
    if record["base_weights_sha256"] != model.weights_sha256:
        msg = (
            f"training record names base weights {record['base_weights_sha256']!r}, the model "
            f"has {model.weights_sha256}; pass the base model the head was trained on"
        )
        raise TuneError(msg)
    if record["objective"] != recipe.objective:
        msg = f"training record objective {record['objective']!r} != recipe's {recipe.objective!r}"
        raise TuneError(msg)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    with tempfile.NamedTemporaryFile(dir=out, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    save_file(tensors, str(tmp_path), metadata={"format": FORMAT})
    tmp_path.replace(out / WEIGHTS_FILE)
    weights_sha = sha256_file(out / WEIGHTS_FILE, cached=False)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": tuned_name(weights_sha),
        "base": recipe.base,
        "base_weights_sha256": model.weights_sha256,
        "architecture": {
            "kind": f"truncated encoder + local head, {recipe.pooling}-pooled",
            "cut": recipe.cut,
            "hidden": recipe.hidden,
            "dim": recipe.dim,
            "pooling": recipe.pooling,
            "pair_dim": recipe.pair_dim,
            "base_weight": float(recipe.base_weight),
        },
        "weights": WEIGHTS_FILE,
        "weights_sha256": weights_sha,
        "recipe": recipe.to_dict(),
        "recipe_digest": recipe.digest(),
    }
    _write_json(out / RECORD_FILE, record)
    _write_json(out / CONFIG_FILE, config)
    return out


def read_model_config(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``hubcat-model.json`` of a tuned model folder.

    Parameters
    ----------
    model_dir : str or path-like
        The tuned model's folder.

    Returns
    -------
    dict
        The parsed configuration (name, base, architecture, weights file and sha256, recipe).

    Raises
    ------
    WeightsUnavailableError
        No such folder or file.
    CorruptWeightsError
        The file is not a tuned model's configuration.
    """
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        msg = f"{model_dir} is not a tuned model folder (no {CONFIG_FILE}); pass a MODEL_DIR"
        raise WeightsUnavailableError(msg)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"{path} cannot be read as JSON ({exc}); the tuned model folder is damaged"
        raise CorruptWeightsError(msg) from exc
    keys = ("format", "base", "base_weights_sha256", "architecture", "weights", "weights_sha256")
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or any(k not in config for k in keys)
    ):
        msg = f"{path} is not a {FORMAT} configuration (expected the keys {list(keys)})"
        raise CorruptWeightsError(msg)
    if config.get("format_version") != FORMAT_VERSION:
        msg = (
            f"{path} has format version {config.get('format_version')!r}, this hubcat reads "
            f"{FORMAT_VERSION}; upgrade hubcat or re-run the tune"
        )
        raise CorruptWeightsError(msg)
    return config


def load_tuned(model_dir: str | os.PathLike[str], config: EmbedConfig) -> EmbeddingModel:
    """Load a tuned model folder (its runtime not built yet: :func:`load_model` builds it).

    Raises
    ------
    WeightsUnavailableError, CorruptWeightsError, WeightsMismatchError
        A missing or damaged folder, a weights file whose sha256 is not the recorded one, or a
        base model whose weights are not the ones the head was trained on.
    """
    from embeddings._model import load_base_net

    folder = Path(model_dir)
    cfg = read_model_config(folder)
    weights = folder / str(cfg["weights"])
    digest = sha256_file(weights)
    if digest != cfg["weights_sha256"]:
        msg = (
            f"tuned weights {weights} have sha256 {digest}, {CONFIG_FILE} records "
            f"{cfg['weights_sha256']}; the folder was modified or damaged. Copy it again."
        )
        raise CorruptWeightsError(msg)
    base = load_base_net(str(cfg["base"]), config)
    if base.weights_sha256 != cfg["base_weights_sha256"]:
        msg = (
            f"tuned model {folder} was trained on {cfg['base']} weights "
            f"{cfg['base_weights_sha256']}, this machine has {base.weights_sha256}; install the "
            "same base weights"
        )
        raise CorruptWeightsError(msg)
    arch = cfg["architecture"]
    pooling = str(arch.get("pooling", "mean"))
    if pooling not in POOLINGS:
        msg = (
            f"{folder / CONFIG_FILE} names pooling {pooling!r}, this hubcat knows {POOLINGS}; "
            "upgrade hubcat or re-run the tune"
        )
        raise CorruptWeightsError(msg)
    with torch.random.fork_rng(devices=[]):
        net = TunedNet(
            base.net,
            int(arch["cut"]),
            int(arch["hidden"]),
            int(arch["dim"]),
            float(arch.get("base_weight", 0.0)),
            pooling,
            int(arch.get("pair_dim", 0)),
        )
    name = tuned_name(digest)
    load_strict(net, read_state_dict(weights), origin=str(weights), model_name=name)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    spec = replace(
        get_spec(str(cfg["base"])),
        name=name,
        weights_source=f"file:{weights}",
        weights_sha256=digest,
        dim=int(net.num_features),
        num_classes=0,
    )
    if pooling in ("centred", "pairs"):
        # The per-channel median of 8,192 x 196 codes is the hot spot: torch runs this network at
        # 43 ms per image, the OpenVINO graph at 210 ms (its TopK), measured on 2 cores.
        spec = replace(
            spec,
            auto_runtime="torch",
            auto_runtime_reason=(
                f"its {pooling} pooling takes a per-channel median, which runs 5x faster on "
                "torch than on OpenVINO"
            ),
        )
    model = EmbeddingModel(net, spec, digest, weights, config)
    model.tuned = {
        "base": str(cfg["base"]),
        "base_weights_sha256": str(cfg["base_weights_sha256"]),
        "architecture": dict(arch),
        "recipe_digest": cfg.get("recipe_digest"),
        "model_dir": str(folder.resolve()),
    }
    return model
