"""int8 post-training quantisation of the OpenVINO stage graph with NNCF, on the project's tiles."""

from __future__ import annotations

import logging

import numpy as np

from embeddings.errors import RuntimeUnavailableError

__all__ = ["quantize_int8", "require_nncf"]

#: Inputs per calibration batch.
CALIBRATION_BATCH = 8


def require_nncf():
    """The ``nncf`` module, or :class:`RuntimeUnavailableError` naming how to install it."""
    try:
        import nncf
    except ImportError as exc:
        msg = "precision='int8' needs NNCF: pip install 'hubcat[int8]' (or pip install nncf)"
        raise RuntimeUnavailableError(msg) from exc
    return nncf


def quantize_int8(model, calibration: np.ndarray):
    """Quantise an OpenVINO model (the stage graph) to int8 with NNCF.

    Parameters
    ----------
    model : openvino.Model
        An fp32 graph: the stage graph (tiles in) or the plain network (normalised images in).
    calibration : numpy.ndarray, shape (N, C, H, W), float32
        Its input made from the project's own tiles; all of it is used.

    Returns
    -------
    openvino.Model
        Weights and activations in int8 (mixed preset: asymmetric activation ranges), except
        the most sensitive layers, kept in fp32: the depthwise convolutions and the first and
        last convolution. Measured on real HST tiles against fp32 (``docs/benchmarks.md``):
        recall@10 0.72 with everything int8, 0.80 with the first/last convolution in fp32,
        0.88 with the depthwise ones too. Pooling and normalisation are always fp32.

    Raises
    ------
    RuntimeUnavailableError
        If ``nncf`` is not installed.
    """
    nncf = require_nncf()
    logging.getLogger("nncf").setLevel(logging.WARNING)  # not its per-layer INFO lines
    batches = [
        np.ascontiguousarray(calibration[i : i + CALIBRATION_BATCH])
        for i in range(0, len(calibration), CALIBRATION_BATCH)
    ]
    convs = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Convolution"
    ]
    keep = nncf.IgnoredScope(
        names=[convs[0], convs[-1]] if convs else [],
        types=["GroupConvolution"],
        validate=False,
    )
    return nncf.quantize(
        model,
        nncf.Dataset(batches),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(batches),
        ignored_scope=keep,
    )
