"""F5-TTS checkpoints (the `f5-tts` package's release layout) -> `models.f5tts` params.

    python -m audiolm_jax.convert f5tts SRC OUT_DIR

SRC is a directory (or the weights file itself, `vocab.txt` beside it) as the
release lays it out, e.g. a download of `F5TTS_v1_Base/` from the SWivid/F5-TTS
model repository:

    model_1250000.safetensors   the EMA weights, keys under `ema_model.`
                                (or model_*.pt: a dict whose `ema_model_state_dict`
                                holds them, read only through weights-only torch.load)
    vocab.txt                   one character (or pinyin syllable) a line; line i is id i
    *.yaml (optional)           the package's training config: its `model.arch`
                                block overrides what the weights cannot tell

As the package's `load_checkpoint` does, `ema_model.` is stripped and the EMA's
`initted` / `step` counters and old mel-extractor buffers are skipped. The
rotary `inv_freq` buffer is checked against the frequencies the JAX model
computes (it fixes `dim_head`), then dropped. Everything else must map:

| package (torch layout, under `transformer.`)         | here                               |
|------------------------------------------------------|------------------------------------|
| time_embed.time_mlp.0 / .2 .weight [out, in], .bias  | time_in, time_out kernel [in, out] |
| text_embed.text_embed.weight [V + 1, text_dim]       | text_embed/embedding               |
| text_embed.text_blocks.i.dwconv.weight [C, 1, 7]     | text_embed/block_i/dwconv_kernel [7, C] |
| text_embed.text_blocks.i.norm / pwconv1 / pwconv2    | norm (scale, bias), pwconv1, pwconv2 |
| text_embed.text_blocks.i.grn.gamma / beta [1, 1, C]  | grn_gamma / grn_beta [C]           |
| input_embed.proj                                     | input_proj                         |
| input_embed.conv_pos_embed.conv1d.0 / .2 [O, I/g, k] | conv_pos/conv_0 / conv_1 kernel [k, I/g, O] |
| transformer_blocks.i.attn_norm.linear                | block_i/modulation                 |
| transformer_blocks.i.attn.to_q / to_k / to_v         | block_i/attn/qkv [E, 3, H, D] (+ qkv_bias); q, k features permuted |
| transformer_blocks.i.attn.to_out.0                   | block_i/attn/out [H, D, E] (+ out_bias) |
| transformer_blocks.i.ff.ff.0.0 / ff.ff.2             | block_i/ff_in / ff_out             |
| norm_out.linear, proj_out, long_skip_connection      | final_modulation, proj_out, long_skip |

q and k are permuted per head from x_transformers' interleaved rotary pairs
(2i, 2i+1) to the shared RoPE's half-split pairs (i, i + D/2); see `models.f5tts.model`.

The architecture comes from the weights' shapes (width, depth, text width,
ConvNeXt blocks, vocabulary, feed-forward width, attention width / `dim_head`);
what they cannot tell (`text_mask_padding`: True as in every v1 model) comes from
the yaml when there is one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import _listing, map_state_dict, read_torch_file, require_complete
from audiolm_jax.models.f5tts.model import DiT, F5Config
from audiolm_jax.models.f5tts.pipeline import VOCAB_FILE, read_vocab
from audiolm_jax.training.checkpointing import CheckpointMismatchError

EMA_PREFIX = "ema_model."
MODEL_PREFIX = "transformer."
# EMA bookkeeping and the mel extractor's buffers (older checkpoints): not weights.
_SKIP = re.compile(r"initted|step|mel_spec\..*")
_INV_FREQ = "rotary_embed.inv_freq"
# yaml `model.arch` fields that map onto F5Config as they are.
_ARCH_FIELDS = ("dim", "depth", "heads", "ff_mult", "text_dim", "text_mask_padding", "qk_norm",
                "conv_layers", "pe_attn_head", "attn_mask_enabled", "long_skip_connection")


# ----------------------------------------------------------------------------- state dict


def _numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.detach().cpu().float().numpy() if hasattr(v, "detach") else v,
                          np.float32) for k, v in state_dict.items()}


def strip_release_prefixes(state_dict: Mapping[str, Any], source: str = "F5-TTS checkpoint"
                           ) -> dict[str, np.ndarray]:
    """The release's keys -> the DiT's own (`ema_model.transformer.` removed), float32 numpy.

    Raises:
      CheckpointMismatchError: a key outside `transformer.` that is not a known buffer.
    """
    out = {}
    for key, value in _numpy(state_dict).items():
        short = key.removeprefix(EMA_PREFIX)
        if _SKIP.fullmatch(short):
            continue
        if not short.startswith(MODEL_PREFIX):
            raise CheckpointMismatchError(f"{source}: unexpected key {key!r} (an F5-TTS "
                                          f"checkpoint holds the DiT under "
                                          f"{EMA_PREFIX}{MODEL_PREFIX})")
        out[short.removeprefix(MODEL_PREFIX)] = value
    return out


def dit_weights(state_dict: Mapping[str, Any], source: str = "F5-TTS checkpoint"
                ) -> dict[str, np.ndarray]:
    """The DiT's own keys and float32 arrays of a release's, a CFM's or a bare DiT's dict."""
    if any(k.startswith((EMA_PREFIX, MODEL_PREFIX)) for k in state_dict):
        return strip_release_prefixes(state_dict, source)
    return _numpy(state_dict)


def _block_count(keys, pattern: str, source: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if found and found != set(range(len(found))):
        raise CheckpointMismatchError(f"{source}: blocks {sorted(found)} of {pattern!r} are not "
                                      "numbered 0..n-1")
    return len(found)


def infer_config(weights: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None,
                 source: str = "F5-TTS checkpoint") -> F5Config:
    """The `F5Config` the DiT weights imply (see the module doc), with `overrides`."""
    def shape(key):
        if key not in weights:
            raise CheckpointMismatchError(f"{source}: missing {key!r}: not an F5-TTS DiT "
                                          f"(keys: {sorted(weights)[:5]} ...)")
        return weights[key].shape

    mel_dim, dim = shape("proj_out.weight")
    table, text_dim = shape("text_embed.text_embed.weight")
    inner = shape("transformer_blocks.0.attn.to_q.weight")[0]
    dim_head = 2 * shape(_INV_FREQ)[0] if _INV_FREQ in weights else 64
    conv_layers = _block_count(weights, r"text_embed\.text_blocks\.(\d+)\.", source)
    fields: dict[str, Any] = dict(
        dim=dim, depth=_block_count(weights, r"transformer_blocks\.(\d+)\.", source),
        heads=inner // dim_head, dim_head=dim_head, mel_dim=mel_dim,
        ff_mult=shape("transformer_blocks.0.ff.ff.0.0.weight")[0] / dim,
        text_num_embeds=table - 1, text_dim=text_dim, conv_layers=conv_layers,
        long_skip_connection="long_skip_connection.weight" in weights)
    if conv_layers:
        fields["conv_mult"] = shape("text_embed.text_blocks.0.pwconv1.weight")[0] // text_dim
    if inner % dim_head:
        raise CheckpointMismatchError(f"{source}: attention width {inner} is not a multiple of "
                                      f"dim_head {dim_head}")
    fields.update(overrides or {})
    if fields["ff_mult"] == int(fields["ff_mult"]):
        fields["ff_mult"] = float(int(fields["ff_mult"]))
    return F5Config(**fields)


def _expected_shapes(config: F5Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    model = DiT(config)
    x = jax.ShapeDtypeStruct((1, 4, config.mel_dim), np.float32)
    text = jax.ShapeDtypeStruct((1, 2), np.int32)
    t = jax.ShapeDtypeStruct((1,), np.float32)
    abstract = jax.eval_shape(lambda a, c, b, s: model.init(jax.random.key(0), a, c, b, s),
                              x, x, text, t)
    return {path: tuple(leaf.shape)
            for path, leaf in flatten_dict(nn.meta.unbox(abstract["params"])).items()}


def _map_key(key: str) -> tuple[tuple[str, ...], str] | None:
    kind = "weight" if key.endswith(".weight") else "bias" if key.endswith(".bias") else None
    if kind is None:
        grn = re.fullmatch(r"text_embed\.text_blocks\.(\d+)\.grn\.(gamma|beta)", key)
        if grn:
            return ("text_embed", f"block_{grn.group(1)}", f"grn_{grn.group(2)}"), "flat"
        return None
    stem = key.rsplit(".", 1)[0]
    linear = "transpose" if kind == "weight" else "copy"
    leaf = "kernel" if kind == "weight" else "bias"
    simple = {"time_embed.time_mlp.0": ("time_in",), "time_embed.time_mlp.2": ("time_out",),
              "input_embed.proj": ("input_proj",), "norm_out.linear": ("final_modulation",),
              "proj_out": ("proj_out",), "long_skip_connection": ("long_skip",)}
    if stem in simple:
        return (*simple[stem], leaf), linear
    if key == "text_embed.text_embed.weight":
        return ("text_embed", "embedding"), "copy"
    conv = re.fullmatch(r"input_embed\.conv_pos_embed\.conv1d\.([02])", stem)
    if conv:
        i = int(conv.group(1)) // 2
        return ("conv_pos", f"conv_{i}_{leaf}"), "conv" if kind == "weight" else "copy"
    text = re.fullmatch(r"text_embed\.text_blocks\.(\d+)\.(dwconv|norm|pwconv1|pwconv2)", stem)
    if text:
        block, part = f"block_{text.group(1)}", text.group(2)
        if part == "dwconv":
            return (("text_embed", block, f"dwconv_{leaf}"),
                    "depthwise" if kind == "weight" else "copy")
        if part == "norm":
            return ("text_embed", block, "norm", "scale" if kind == "weight" else "bias"), "copy"
        return ("text_embed", block, part, leaf), linear
    dit = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", stem)
    if dit:
        block, part = f"block_{dit.group(1)}", dit.group(2)
        table = {"attn_norm.linear": (("modulation", leaf), linear),
                 "ff.ff.0.0": (("ff_in", leaf), linear),
                 "ff.ff.2": (("ff_out", leaf), linear),
                 "attn.to_qkv": (("attn", "qkv" if kind == "weight" else "qkv_bias"),
                                 f"qkv_{kind}"),
                 "attn.to_out.0": (("attn", "out" if kind == "weight" else "out_bias"),
                                   "out" if kind == "weight" else "copy")}
        if part in table:
            path, how = table[part]
            return (block, *path), how
    return None


def _rotary_permutation(dim_head: int) -> np.ndarray:
    """Feature order taking interleaved rotary pairs to half-split ones."""
    return np.concatenate([np.arange(0, dim_head, 2), np.arange(1, dim_head, 2)])


def _transform(a: np.ndarray, how: str, config: F5Config) -> np.ndarray:
    heads, head = config.heads, config.dim_head
    if how in ("copy", "flat"):
        return a.reshape(-1) if how == "flat" else a
    if how == "transpose":
        return a.T
    if how == "conv":           # [out, in/groups, k] -> [k, in/groups, out]
        return a.transpose(2, 1, 0)
    if how == "depthwise":      # [C, 1, k] -> [k, C]
        return a[:, 0, :].T
    perm = _rotary_permutation(head)
    if how == "qkv_weight":     # [3, H*D, E] -> [E, 3, H, D], q and k permuted
        w = a.reshape(3, heads, head, a.shape[-1]).copy()
        w[:2] = w[:2][:, :, perm]
        return w.transpose(3, 0, 1, 2)
    if how == "qkv_bias":       # [3, H*D] -> [3, H, D]
        b = a.reshape(3, heads, head).copy()
        b[:2] = b[:2][:, :, perm]
        return b
    if how == "out":            # [E, H*D] -> [H, D, E]
        return a.T.reshape(heads, head, a.shape[0])
    raise AssertionError(how)


def _fuse_qkv(weights: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """`to_q`, `to_k`, `to_v` of each block -> one stacked `to_qkv` entry [3, ...]."""
    out = dict(weights)
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key in list(out):
        m = re.fullmatch(r"(transformer_blocks\.\d+\.attn)\.to_([qkv])\.(weight|bias)", key)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = out.pop(key)
    for (stem, kind), parts in groups.items():
        missing = [f"{stem}.to_{p}.{kind}" for p in "qkv" if p not in parts]
        if missing:
            raise CheckpointMismatchError(f"{source}: missing F5-TTS weights {missing}")
        shapes = {p: parts[p].shape for p in "qkv"}
        if len(set(shapes.values())) != 1:
            raise CheckpointMismatchError(f"{source}: {stem} q/k/v {kind}s differ in shape: "
                                          f"{shapes}")
        out[f"{stem}.to_qkv.{kind}"] = np.stack([parts[p] for p in "qkv"])
    return out


def dit_params(state_dict: Mapping[str, Any], config: F5Config | None = None, *,
               source: str = "F5-TTS checkpoint") -> tuple[F5Config, dict]:
    """(config, params of `DiT(config)`) from a DiT state dict.

    Args:
      state_dict: the release's (`ema_model.transformer.*`, EMA counters), a CFM's
        (`transformer.*`) or a bare DiT's keys; torch tensors or numpy arrays.
      config: the architecture; inferred from the shapes when None.

    Raises:
      CheckpointMismatchError: an unexpected key, a shape the config does not imply,
        a missing weight (each named), or a rotary buffer of other frequencies.
    """
    weights = dit_weights(state_dict, source)
    config = config or infer_config(weights, source=source)
    inv_freq = weights.pop(_INV_FREQ, None)
    if inv_freq is not None:
        expected = 1.0 / 10_000 ** (np.arange(0, config.dim_head, 2, dtype=np.float32)
                                    / config.dim_head)
        if inv_freq.shape != expected.shape or not np.allclose(inv_freq, expected, rtol=1e-5):
            raise CheckpointMismatchError(
                f"{source}: {MODEL_PREFIX}{_INV_FREQ} {inv_freq.shape} is not the rotary "
                f"frequencies of dim_head {config.dim_head} at base 10000")
    weights = _fuse_qkv(weights, source)
    expected_shapes = _expected_shapes(config)
    params = map_state_dict(weights, expected_shapes, map_key=_map_key,
                            transform=lambda a, how: _transform(a, how, config),
                            skip=lambda k: False, prefix="", source=source, family="F5-TTS")
    require_complete(params, expected_shapes, source, "F5-TTS")
    return config, unflatten_dict(params)


# ----------------------------------------------------------------------------- release files


def find_weights(src: Path) -> Path:
    """The weights file of SRC: itself, or the one `model_*.safetensors` / `*.pt` in it."""
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"F5-TTS checkpoint {src} does not exist")
    found = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.pt"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise FileNotFoundError(f"{src} has {what} .safetensors / .pt weights (expected one, "
                                f"e.g. model_1250000.safetensors); found: {_listing(src)}")
    return found[0]


def read_weights(file: Path) -> dict[str, np.ndarray]:
    """The EMA state dict of a release file: safetensors read without torch; a `.pt`
    only through `read_torch_file` (weights-only), its `ema_model_state_dict`."""
    if file.suffix == ".safetensors":
        from audiolm_jax.convert.hf import _safetensors_numpy

        try:
            return dict(_safetensors_numpy().load_file(str(file)))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read {file} as safetensors: {e}") from e
    if file.suffix not in (".pt", ".pth", ".ckpt", ".bin"):
        raise ValueError(f"{file}: expected a .safetensors or .pt checkpoint")
    data = read_torch_file(file)
    if isinstance(data, Mapping) and "ema_model_state_dict" in data:
        data = data["ema_model_state_dict"]
    elif isinstance(data, Mapping) and "model_state_dict" in data:
        logging.warning("%s has no ema_model_state_dict; converting model_state_dict", file)
        data = data["model_state_dict"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{file} holds a {type(data).__name__}, not a state dict")
    return _numpy({k: v for k, v in data.items() if hasattr(v, "shape")})


def yaml_overrides(directory: Path) -> dict[str, Any]:
    """`model.arch` fields of the (single) package config yaml in `directory`, if any."""
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        return {}
    if len(files) > 1:
        raise ValueError(f"{directory} has several yaml files ({[f.name for f in files]}); "
                         "keep the model's config only")
    import yaml

    data = yaml.safe_load(files[0].read_text()) or {}
    arch = (data.get("model") or {}).get("arch") if isinstance(data, Mapping) else None
    if not isinstance(arch, Mapping):
        raise ValueError(f"{files[0]} has no model.arch block (the f5-tts package's config "
                         "layout)")
    return {k: arch[k] for k in _ARCH_FIELDS if k in arch}


def load_release(src: str | os.PathLike) -> tuple[F5Config, dict, list[str]]:
    """(config, params, vocabulary) of a release directory or weights file.

    Raises:
      FileNotFoundError: no weights, or no vocab.txt beside them.
      ValueError: unreadable files, a vocabulary whose size does not fit the text
        table, or weights that do not fit (CheckpointMismatchError, named).
    """
    src = Path(src)
    file = find_weights(src)
    directory = file.parent
    vocab_file = directory / VOCAB_FILE
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{directory} has no {VOCAB_FILE} beside {file.name}: the "
                                "release ships one with each model (its ids are the text "
                                f"table's rows); found: {_listing(directory)}")
    vocab = read_vocab(vocab_file)
    source = str(file)
    weights = dit_weights(read_weights(file), source)
    config = infer_config(weights, yaml_overrides(directory), source)
    if len(vocab) != config.text_num_embeds:
        raise CheckpointMismatchError(
            f"{vocab_file} has {len(vocab)} entries but {file.name}'s text table has "
            f"{config.text_num_embeds} (+1 filler row): not this model's vocabulary")
    config, params = dit_params(weights, config, source=source)
    return config, params, vocab


def convert_f5tts(src: str | os.PathLike, out_dir: str | os.PathLike,
                  vocoder: str | os.PathLike | None = None) -> tuple[F5Config, dict, Path]:
    """Converts a release into an export (`models.f5tts.load` reads it); vocab.txt is
    kept in the export's config and copied beside it. `vocoder` (a vocos-mel-24khz
    export) is recorded as the one that decodes its mel (`F5TTS.tts` uses it).

    Returns:
      (config, variables, the absolute export directory).
    """
    from audiolm_jax.models.f5tts import MODEL_NAME
    from audiolm_jax.training.export import MODEL_FILE, save_exported

    config, params, vocab = load_release(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).unlink(missing_ok=True)     # a half-written export is not an export
    variables = {"params": params}
    fields = {"model": config.to_dict(), "vocab": vocab}
    if vocoder:
        fields["vocoder"] = str(Path(vocoder).absolute()) if Path(vocoder).exists() else str(
            vocoder)
    path = save_exported(out, MODEL_NAME, fields, variables,
                         source=f"f5-tts:{Path(src).absolute()}")
    shutil.copyfile(find_weights(Path(src)).parent / VOCAB_FILE, out / VOCAB_FILE)
    return config, variables, path
