"""Import weights trained with the authors' TensorFlow/Keras code.

``from_keras(arrays, name)`` takes a mapping of arrays named after the attributes of the official
classes (the layout of ``tests/golden/*.npz``: ``ae.<layer>.conv.kernel``, ``ae.<layer>.bn.gamma``,
``nca.<attribute>.kernel``, ...) and returns the reference model in its TF-faithful preset
(``latent-nafca-tf`` / ``latent-vitca-tf``) carrying those weights.

Exporting such a file from a model trained with the official code (TF 2.x, in the repo's
``Utils`` folder, ``model`` being the trained ``AutoEncoderDown2``)::

    import numpy as np
    arrays = {}
    for part, prefix in ((model.encoder, "ae"), (model.decoder, "ae"), (model.ca, "nca")):
        for w in part.weights:                         # e.g. 'conv_layer_1/conv2d/kernel:0'
            arrays[keras_name(prefix, w.name)] = w.numpy()
    np.savez("weights.npz", **arrays)

where ``keras_name`` maps each variable to ``ae.<layer>.conv.kernel|bias``,
``ae.<layer>.bn.gamma|beta|moving_mean|moving_variance`` or ``nca.<attribute>.kernel|bias|gamma|beta``
(the names listed by ``expected_keras_names(name)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from .factory import create_model
from .reference.lnca import LNCA

_AE_LAYERS = {
    "conv_layer_1": "encoder",
    "pass_through_layer_1": "encoder",
    "conv_layer_2": "encoder",
    "trans_conv_layer_2": "decoder",
    "mix_layer_2": "decoder",
    "trans_conv_layer_1": "decoder",
}
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

_NAFCA_CONVS = ("conv1", "conv3", "conv4", "conv5", "conv_out")
_VITCA_DENSE = ("cell_to_embedding", "to_out", "ff1", "ff2", "head")
_VITCA_NORMS = ("attn_norm", "ff_norm", "head_norm")

Converter = Callable[[np.ndarray], np.ndarray]


def _spatial(k: np.ndarray) -> np.ndarray:
    # Keras Conv2D (kh, kw, in, out) -> torch (out, in, kh, kw); Keras Conv2DTranspose
    # (kh, kw, out, in) -> torch ConvTranspose2d (in, out, kh, kw): the same permutation.
    return k.transpose(3, 2, 0, 1)


def _pointwise(k: np.ndarray) -> np.ndarray:
    return k.reshape(k.shape[-2], k.shape[-1]).T  # (1, 1, in, out) or (in, out) -> Linear (out, in)


def _flat(k: np.ndarray) -> np.ndarray:
    return k.reshape(-1)


def _same(k: np.ndarray) -> np.ndarray:
    return k


def _mapping(core: str) -> dict[str, tuple[str, Converter]]:
    """keras name -> (torch state_dict key, converter)."""
    table: dict[str, tuple[str, Converter]] = {}
    for layer, part in _AE_LAYERS.items():
        table[f"ae.{layer}.conv.kernel"] = (f"{part}.{layer}.conv.weight", _spatial)
        table[f"ae.{layer}.conv.bias"] = (f"{part}.{layer}.conv.bias", _same)
        for keras, torch_name in _BN.items():
            table[f"ae.{layer}.bn.{keras}"] = (f"{part}.{layer}.bn.{torch_name}", _same)
    if core == "nafca":
        for conv in _NAFCA_CONVS:
            table[f"nca.{conv}.kernel"] = (f"nca.{conv}.weight", _pointwise)
            table[f"nca.{conv}.bias"] = (f"nca.{conv}.bias", _same)
        table["nca.conv2.kernel"] = ("nca.conv2.weight", _flat)
        table["nca.conv2.bias"] = ("nca.conv2.bias", _same)
        table["nca.conv_attention.kernel"] = ("nca.conv_attention.weight", _spatial)
        table["nca.conv_attention.bias"] = ("nca.conv_attention.bias", _same)
        for norm in ("norm1", "norm2", "norm3"):
            table[f"nca.{norm}.gamma"] = (f"nca.{norm}.weight", _same)
            table[f"nca.{norm}.beta"] = (f"nca.{norm}.bias", _same)
        table["nca.beta"] = ("nca.beta", _flat)
        table["nca.gamma"] = ("nca.gamma", _flat)
    else:
        for dense in _VITCA_DENSE:
            table[f"nca.{dense}.kernel"] = (f"nca.{dense}.weight", _pointwise)
            table[f"nca.{dense}.bias"] = (f"nca.{dense}.bias", _same)
        table["nca.to_qkv.kernel"] = ("nca.to_qkv.weight", _pointwise)
        for norm in _VITCA_NORMS:
            table[f"nca.{norm}.gamma"] = (f"nca.{norm}.weight", _same)
            table[f"nca.{norm}.beta"] = (f"nca.{norm}.bias", _same)
    return table


_CORES = {"latent-nafca": "nafca", "latent-vitca": "vitca"}


def _core(name: str) -> str:
    core = _CORES.get(name.removesuffix("-tf"))
    if core is None:
        raise ValueError(f"from_keras supports 'latent-nafca' and 'latent-vitca' (or their -tf presets), got {name!r}")
    return core


def expected_keras_names(name: str) -> list[str]:
    """The array names ``from_keras`` expects for ``name``."""
    return sorted(_mapping(_core(name)))


def from_keras(arrays: Mapping[str, np.ndarray], name: str) -> LNCA:
    """The TF-faithful reference model for ``name`` carrying the Keras ``arrays``.

    Arrays that are not weights (test vectors such as ``cell.state_in`` or ``ae.skip`` in the
    golden files) are ignored; any other unexpected ``ae.<layer>.*``/``nca.*`` name, a missing weight or a wrong shape
    raises a ValueError naming every offending array and the expected shape.
    """
    core = _core(name)
    model = create_model(f"{name.removesuffix('-tf')}-tf")
    table = _mapping(core)
    target = model.state_dict()
    weights = {k: v for k, v in arrays.items() if _is_weight_name(k)}
    missing = sorted(set(table) - set(weights))
    unexpected = sorted(set(weights) - set(table))
    problems = [f"missing array {k!r} (for {table[k][0]}, shape {_keras_shape(table, target, k)})" for k in missing]
    problems += [f"unexpected array {k!r}" for k in unexpected]
    converted = {}
    for key in sorted(set(table) & set(weights)):
        torch_name, convert = table[key]
        value = np.asarray(weights[key])
        want = tuple(target[torch_name].shape)
        try:
            out = convert(value)
        except ValueError:
            out = None
        if out is None or tuple(out.shape) != want:
            problems.append(
                f"array {key!r} has shape {tuple(value.shape)}; expected {_keras_shape(table, target, key)} "
                f"(-> {torch_name} {want})"
            )
            continue
        if not np.isfinite(out).all():
            problems.append(f"array {key!r} contains NaN or inf")
            continue
        converted[torch_name] = torch.as_tensor(np.ascontiguousarray(out), dtype=target[torch_name].dtype)
    if problems:
        raise ValueError(f"cannot load Keras weights for {name!r}:\n  " + "\n  ".join(problems))
    model.load_state_dict(converted, strict=False)
    return model.eval()


def _is_weight_name(key: str) -> bool:
    """``nca.*`` and ``ae.<layer>.<conv|bn>.<variable>``; the golden files' test vectors
    (``ae.skip``, ``cell.state_in``, ...) are not weights."""
    parts = key.split(".")
    return parts[0] == "nca" or (parts[0] == "ae" and len(parts) == 4)


def _keras_shape(table, target, key: str) -> tuple[int, ...]:
    """The Keras shape that converts to the torch parameter's shape."""
    torch_name, convert = table[key]
    shape = tuple(target[torch_name].shape)
    if convert is _spatial:
        return (shape[2], shape[3], shape[1], shape[0])
    if convert is _pointwise:
        return (1, 1, shape[1], shape[0]) if key.split(".")[1] in _NAFCA_CONVS else (shape[1], shape[0])
    if convert is _flat:
        return (1, 1, 1, shape[0])
    return shape
