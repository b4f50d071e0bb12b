"""`vocos` package checkpoints -> `audiolm_jax.models.vocoder.Vocos` variables.

A Vocos directory as the `vocos` package (and its Hugging Face repositories,
`charactr/vocos-mel-24khz`, `charactr/vocos-encodec-24khz`) lays it out:

    config.yaml          feature_extractor / backbone / head, each a class_path + init_args
    pytorch_model.bin    the state dict (or model.safetensors)

    python -m audiolm_jax.convert vocos SRC_DIR OUT_DIR

Supported: `MelSpectrogramFeatures` or `EncodecFeatures`, `VocosBackbone`
(plain or AdaLayerNorm-conditioned), `ISTFTHead`. The ResNet backbone and the
IMDCT heads are refused by name. Safetensors are read without torch; a `.bin`
only through `torch.load(weights_only=True)` (no arbitrary unpickling), which
needs torch installed. The EnCodec variant's file may carry the whole EnCodec
model under `feature_extractor.encodec.`; those weights are not the vocoder's
(import EnCodec with `convert codec`) and are skipped. Buffers the JAX model
recomputes (the STFT windows, the mel filterbank) are skipped as well.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import (
    SAFETENSORS_FILE,
    _listing,
    map_state_dict,
    read_safetensors_dir,
    read_torch_file,
    require_complete,
)
from audiolm_jax.files import resolve_weights
from audiolm_jax.models.vocoder.model import VocosConfig, init_vocos
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, load_exported, save_exported

MODEL_NAME = "vocoder"
CONFIG_YAML = "config.yaml"
TORCH_FILE = "pytorch_model.bin"

_FEATURES = {"MelSpectrogramFeatures": "mel", "EncodecFeatures": "encodec"}
# Buffers and foreign weights in a Vocos state dict that are not vocoder parameters.
_SKIP = re.compile(r"feature_extractor\.(mel_spec\..*|encodec\..*)|head\.istft\.window")
_NORM = r"(?:norm\.(?P<ln>weight|bias)|norm\.(?P<ada>scale|shift)\.weight)"


def _class_name(block: Mapping[str, Any], what: str, file: Path) -> str:
    try:
        return str(block["class_path"]).rsplit(".", 1)[-1]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{file}: `{what}` has no class_path") from e


def config_from_yaml(hparams: Mapping[str, Any], file: Path = Path(CONFIG_YAML),
                     num_codebook_rows: int | None = None) -> VocosConfig:
    """The `VocosConfig` of a `vocos` config.yaml (already parsed).

    Args:
      hparams: the YAML's mapping: `feature_extractor`, `backbone`, `head`.
      file: for messages.
      num_codebook_rows: rows of `feature_extractor.codebook_weights` (EnCodec
        features: num_codebooks * 1024); taken from the weights.

    Raises:
      ValueError: naming the block and class this importer does not support.
    """
    if isinstance(hparams, Mapping) and "model" in hparams:   # a training config (train.py's)
        hparams = (hparams["model"] or {}).get("init_args", {})
    try:
        fe, bb, head = hparams["feature_extractor"], hparams["backbone"], hparams["head"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{file} is not a Vocos config: it needs feature_extractor, backbone "
                         f"and head") from e
    fe_class, bb_class, head_class = (_class_name(fe, "feature_extractor", file),
                                      _class_name(bb, "backbone", file),
                                      _class_name(head, "head", file))
    if fe_class not in _FEATURES:
        raise ValueError(f"{file}: feature extractor {fe_class} is not supported "
                         f"(supported: {sorted(_FEATURES)})")
    if bb_class != "VocosBackbone":
        raise ValueError(f"{file}: backbone {bb_class} is not supported (only VocosBackbone, "
                         "the ConvNeXt one)")
    if head_class != "ISTFTHead":
        raise ValueError(f"{file}: head {head_class} is not supported (only ISTFTHead)")
    fe_args, bb_args, head_args = (fe.get("init_args", {}) or {}, bb["init_args"],
                                   head["init_args"])
    fields: dict[str, Any] = dict(
        dim=int(bb_args["dim"]), intermediate_dim=int(bb_args["intermediate_dim"]),
        num_layers=int(bb_args["num_layers"]),
        layer_scale_init_value=bb_args.get("layer_scale_init_value"),
        adanorm_num_embeddings=bb_args.get("adanorm_num_embeddings"),
        padding=str(head_args.get("padding", "same")),
        head_n_fft=int(head_args["n_fft"]), head_hop_length=int(head_args["hop_length"]))
    if _FEATURES[fe_class] == "mel":
        fields.update(features="mel", sample_rate=int(fe_args.get("sample_rate", 24_000)),
                      n_fft=int(fe_args.get("n_fft", 1024)),
                      hop_length=int(fe_args.get("hop_length", 256)),
                      n_mels=int(fe_args.get("n_mels", 100)))
        if str(fe_args.get("padding", "center")) != fields["padding"]:
            raise ValueError(f"{file}: the feature extractor pads {fe_args.get('padding')!r} but "
                             f"the head {fields['padding']!r}; one setting is supported")
    else:
        model = str(fe_args.get("encodec_model", "encodec_24khz"))
        sample_rate = {"encodec_24khz": 24_000, "encodec_48khz": 48_000}.get(model)
        if sample_rate is None:
            raise ValueError(f"{file}: unknown encodec_model {model!r}")
        rows = num_codebook_rows or 0
        fields.update(features="encodec", sample_rate=sample_rate, num_codebooks=rows // 1024,
                      codebook_size=1024, codebook_dim=int(bb_args["input_channels"]),
                      n_fft=fields["head_n_fft"], hop_length=fields["head_hop_length"])
    config = VocosConfig(**fields)
    if int(bb_args["input_channels"]) != config.input_channels:
        raise ValueError(f"{file}: backbone input_channels {bb_args['input_channels']} != the "
                         f"features' {config.input_channels} channels")
    return config


@functools.lru_cache(maxsize=8)
def _expected_shapes(config: VocosConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    shapes = jax.eval_shape(lambda: nn.unbox(init_vocos(config)))
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(shapes).items()}


def _norm_path(prefix: tuple[str, ...], match: re.Match) -> tuple[tuple[str, ...], str]:
    if match["ln"]:
        return prefix + ("layer_norm", "scale" if match["ln"] == "weight" else "bias"), ""
    return prefix + ("ada_norm", match["ada"]), ""


def _map_key(key: str) -> tuple[tuple[str, ...], str] | None:
    """(Flax path under "params", transform) of one Vocos key, or None."""
    if key == "feature_extractor.codebook_weights":
        return ("codebook_weights",), ""
    if key in ("backbone.embed.weight", "backbone.embed.bias"):
        return (f"embed_{key.rsplit('.', 1)[-1].replace('weight', 'kernel')}",), "conv"
    if key in ("head.out.weight", "head.out.bias"):
        return ("head", "kernel" if key.endswith("weight") else "bias"), "dense"
    match = re.fullmatch(r"backbone\.final_layer_norm\.(weight|bias)", key)
    if match:
        return ("final_layer_norm", "scale" if match[1] == "weight" else "bias"), ""
    match = re.fullmatch(r"backbone\." + _NORM, key)
    if match:
        return _norm_path(("norm",), match)
    match = re.fullmatch(r"backbone\.convnext\.(\d+)\.(.+)", key)
    if match is None:
        return None
    block, rest = (f"convnext_{match[1]}",), match[2]
    if rest in ("dwconv.weight", "dwconv.bias"):
        return block + ("dwconv_kernel" if rest.endswith("weight") else "dwconv_bias",), "dwconv"
    if rest == "gamma":
        return block + ("gamma",), ""
    sub = re.fullmatch(r"(pwconv[12])\.(weight|bias)", rest)
    if sub:
        return block + (sub[1], "kernel" if sub[2] == "weight" else "bias"), "dense"
    sub = re.fullmatch(_NORM, rest)
    if sub:
        return _norm_path(block + ("norm",), sub)
    return None


def _transform(value: np.ndarray, how: str) -> np.ndarray:
    if how == "conv" and value.ndim == 3:      # [out, in, k] -> [k, in, out]
        return value.transpose(2, 1, 0)
    if how == "dwconv" and value.ndim == 3:    # [dim, 1, k] -> [k, dim]
        return value[:, 0, :].T
    if how == "dense" and value.ndim == 2:     # torch Linear [out, in] -> [in, out]
        return value.T
    return value


def variables_from_state_dict(state_dict: Mapping[str, Any], config: VocosConfig,
                              source: str = "the checkpoint") -> dict:
    """A `vocos` state dict (numpy arrays or torch tensors) as `{"params": ...}`.

    Raises:
      CheckpointMismatchError: a key with no place, a wrong shape, or a missing weight.
    """
    expected = {path[1:]: shape for path, shape in _expected_shapes(config).items()}
    numpy_dict = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                  for k, v in state_dict.items()}
    params = map_state_dict(numpy_dict, expected, map_key=_map_key, transform=_transform,
                            skip=lambda key: _SKIP.fullmatch(key) is not None, prefix="",
                            source=source, family="Vocos")
    require_complete(params, expected, source, "Vocos")
    return {"params": unflatten_dict(params)}


def _read_yaml(file: Path) -> dict:
    import yaml  # PyYAML comes with ml_collections

    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{file} is not valid YAML: {e}") from e


def read_state_dict(src_dir: Path) -> dict[str, np.ndarray]:
    """The weights of a Vocos directory: `model.safetensors`, else `pytorch_model.bin`
    through `torch.load(weights_only=True)`."""
    if (src_dir / SAFETENSORS_FILE).is_file():
        return read_safetensors_dir(src_dir)
    file = src_dir / TORCH_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{src_dir} has neither {SAFETENSORS_FILE} nor {TORCH_FILE}; "
                                f"found: {_listing(src_dir)}")
    state = read_torch_file(file)
    if isinstance(state, Mapping) and "state_dict" in state:   # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def load_vocos_dir(src_dir: str | os.PathLike) -> tuple[VocosConfig, dict]:
    """(config, variables) of a `vocos` directory (config.yaml + weights).

    Raises:
      FileNotFoundError: naming the directory and what it lacks.
      ValueError: an unsupported architecture, named.
      CheckpointMismatchError: the weights do not fit config.yaml.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"Vocos directory {src_dir} does not exist")
    file = src_dir / CONFIG_YAML
    if not file.is_file():
        raise FileNotFoundError(f"{src_dir} has no {CONFIG_YAML}: expected a Vocos directory "
                                f"(config.yaml + pytorch_model.bin); found: {_listing(src_dir)}")
    hparams = _read_yaml(file)
    state = read_state_dict(src_dir)
    rows = state.get("feature_extractor.codebook_weights")
    config = config_from_yaml(hparams, file, None if rows is None else rows.shape[0])
    return config, variables_from_state_dict(state, config, source=str(src_dir))


def convert_vocos(src_dir: str | os.PathLike, out_dir: str | os.PathLike
                  ) -> tuple[VocosConfig, dict, Path]:
    """Converts a `vocos` directory into a `vocoder` export."""
    config, variables = load_vocos_dir(src_dir)
    out = save_exported(out_dir, MODEL_NAME, config.to_dict(), variables,
                        source=f"vocos:{Path(src_dir).absolute()}")
    return config, variables, out


def load_vocoder(path: str | os.PathLike) -> tuple[VocosConfig, dict]:
    """(config, variables) from a `vocoder` export, a training workdir holding one in
    `export/`, a `vocos` directory (converted in memory), or the name of a vocoder
    committed under `weights/` (`models.vocoder.DEFAULT_VOCODER`)."""
    path = resolve_weights(path)
    if not (path / MODEL_FILE).is_file() and (path / "export" / MODEL_FILE).is_file():
        path = path / "export"
    if (path / MODEL_FILE).is_file():
        config, variables = load_exported(path, expected_model=MODEL_NAME)
        return VocosConfig.from_dict(config), variables
    if (path / CONFIG_YAML).is_file():
        config, variables = load_vocos_dir(path)
        return config, jax.tree.map(jnp.asarray, variables)
    raise FileNotFoundError(f"{path} holds no vocoder: expected {path / MODEL_FILE} (an export), "
                            f"{path / 'export' / MODEL_FILE} (a training workdir) or a Vocos "
                            f"directory ({CONFIG_YAML} + {TORCH_FILE})")


__all__ = ["CheckpointMismatchError", "config_from_yaml", "convert_vocos", "load_vocoder",
           "load_vocos_dir", "read_state_dict", "variables_from_state_dict"]
