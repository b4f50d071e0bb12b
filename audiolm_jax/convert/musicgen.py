"""MusicGen from a Hugging Face `MusicgenForConditionalGeneration` directory.

    python -m audiolm_jax.convert musicgen HF_DIR OUT_DIR

`HF_DIR` is what `save_pretrained` writes (e.g. facebook/musicgen-small):
`config.json` with the `text_encoder` (T5), `audio_encoder` (EnCodec 32 kHz) and
`decoder` sub-configs, the weights in `model.safetensors` (or shards with an
index; a `pytorch_model.bin` only through `torch.load(weights_only=True)`), and
`tokenizer.json` (T5's). The export holds everything `models.musicgen.load`
needs: `{"musicgen": {"params"}, "codec": codec variables}`, both configs, and a
copy of `tokenizer.json`.

Key map (PyTorch `Linear` weights are `[out, in]`, transposed here):

    text_encoder.*                          -> params/text_encoder (convert.t5)
    enc_to_dec_proj.{weight,bias}           -> params/text_projection/{kernel,bias}
    decoder.model.decoder.embed_tokens.q    -> params/lm/codebooks/embedding[q]
    ...layers.i.self_attn.{q,k,v}_proj      -> params/lm/decoder/layer_i/attn/qkv[:, 0|1|2]
    ...layers.i.self_attn.out_proj          -> .../attn/out
    ...layers.i.encoder_attn.q_proj         -> .../cross_attn/q
    ...layers.i.encoder_attn.{k,v}_proj     -> .../cross_attn/kv[:, 0|1]
    ...layers.i.encoder_attn.out_proj       -> .../cross_attn/out
    ...layers.i.{self_attn,encoder_attn,final}_layer_norm -> attn_norm, cross_norm, mlp_norm
    ...layers.i.fc1, fc2                    -> .../mlp/wi, mlp/wo/kernel
    decoder.model.decoder.layer_norm        -> params/lm/decoder/final_norm
    decoder.lm_heads.q                      -> params/lm/decoder/logits[:, q*C:(q+1)*C]
    audio_encoder.*                         -> the codec (convert.encodec)
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from audiolm_jax.convert.hf import read_hf_config, read_safetensors_dir, read_torch_file
from audiolm_jax.models.musicgen.model import MODEL_NAME, MusicGen, MusicGenConfig
from audiolm_jax.training.checkpointing import CheckpointMismatchError

TOKENIZER_FILE = "tokenizer.json"
DECODER_PREFIX = "decoder.model.decoder."
_LAYER = re.compile(r"layers\.(\d+)\.(.+)$")


def expected_shapes(config: MusicGenConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax path -> shape of every MusicGen param (text encoder included)."""
    abstract = jax.eval_shape(
        lambda: __import__("flax").linen.unbox(MusicGen(config).init(
            jax.random.key(0), np.zeros((1, 2, config.num_codebooks), np.int32),
            np.ones((1, 3), np.int32), np.ones((1, 3), bool))["params"]))
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _linear_in_heads(w: np.ndarray, heads: int) -> np.ndarray:
    """torch [out = heads * d, in] -> [in, heads, d]."""
    return w.T.reshape(w.shape[1], heads, -1)


def _decoder_params(state: Mapping[str, np.ndarray], config: MusicGenConfig, source: str
                    ) -> dict[tuple[str, ...], np.ndarray]:
    """The decoder's and projection's params from the `decoder.` / `enc_to_dec_proj.`
    keys; every such key placed or named."""
    heads, e = config.num_heads, config.embed_dim
    out: dict[tuple[str, ...], np.ndarray] = {}
    pending: dict[tuple[str, ...], dict[int, np.ndarray]] = {}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return np.asarray(state[key], np.float32)

    def stack(path, index, value, size, key):
        pending.setdefault(path, {})[index] = (value, size, key)

    for key in sorted(state):
        if key.startswith("enc_to_dec_proj."):
            leaf = "kernel" if key.endswith("weight") else "bias"
            w = take(key)
            out[("text_projection", leaf)] = w.T if leaf == "kernel" else w
        elif key.startswith("decoder.lm_heads."):
            q = int(key.split(".")[2])
            stack(("lm", "decoder", "logits"), q, take(key).T, config.num_codebooks, key)
        elif key.startswith(DECODER_PREFIX + "embed_tokens."):
            q = int(key[len(DECODER_PREFIX):].split(".")[1])
            stack(("lm", "codebooks", "embedding"), q, take(key), config.num_codebooks, key)
        elif key.startswith(DECODER_PREFIX + "layer_norm."):
            leaf = "scale" if key.endswith("weight") else "bias"
            out[("lm", "decoder", "final_norm", leaf)] = take(key)
        elif key.startswith(DECODER_PREFIX + "embed_positions."):
            used.add(key)                              # fixed sinusoids, recomputed
        elif key.startswith(DECODER_PREFIX + "layers."):
            match = _LAYER.match(key[len(DECODER_PREFIX):])
            i, rest = int(match.group(1)), match.group(2)
            block = ("lm", "decoder", f"layer_{i}")
            w = take(key)
            norms = {"self_attn_layer_norm": "attn_norm", "encoder_attn_layer_norm": "cross_norm",
                     "final_layer_norm": "mlp_norm"}
            name, _, leaf = rest.rpartition(".")
            if name in norms:
                out[block + (norms[name], "scale" if leaf == "weight" else "bias")] = w
            elif name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                stack(block + ("attn", "qkv"), "qkv".index(name[10]),
                      _linear_in_heads(w, heads), 3, key)
            elif name == "self_attn.out_proj":
                out[block + ("attn", "out")] = w.T.reshape(heads, -1, e)
            elif name == "encoder_attn.q_proj":
                out[block + ("cross_attn", "q")] = _linear_in_heads(w, heads)
            elif name in ("encoder_attn.k_proj", "encoder_attn.v_proj"):
                stack(block + ("cross_attn", "kv"), "kv".index(name[13]),
                      _linear_in_heads(w, heads), 2, key)
            elif name == "encoder_attn.out_proj":
                out[block + ("cross_attn", "out")] = w.T.reshape(heads, -1, e)
            elif name == "fc1":
                out[block + ("mlp", "wi")] = w.T[:, None, :]
            elif name == "fc2":
                out[block + ("mlp", "wo", "kernel")] = w.T
            else:
                raise CheckpointMismatchError(f"{source}: unexpected MusicGen decoder key {key!r}")
        elif key.startswith(("decoder.", "enc_to_dec_proj")):
            raise CheckpointMismatchError(f"{source}: unexpected MusicGen key {key!r}")
    for path, parts in pending.items():
        size = next(iter(parts.values()))[1]
        missing = sorted(set(range(size)) - set(parts))
        if missing:
            raise CheckpointMismatchError(f"{source}: missing MusicGen weights for "
                                          f"{'/'.join(path)} parts {missing}")
        values = [parts[i][0] for i in range(size)]
        odd = [parts[i][2] for i in range(size) if values[i].shape != values[0].shape]
        if odd:
            raise CheckpointMismatchError(
                f"{source}: {odd[0]!r} has another shape than {parts[0][2]!r} "
                f"({parts[[i for i in range(size) if parts[i][2] == odd[0]][0]][0].shape} after "
                f"conversion, not {values[0].shape}); both feed {'/'.join(path)}")
        if path[-1] == "logits":
            out[path] = np.concatenate(values, axis=1)
        elif path[-1] == "embedding":
            out[path] = np.stack(values)
        else:
            out[path] = np.stack(values, axis=1)
    return out


def musicgen_params(state: Mapping[str, Any], config: MusicGenConfig, *,
                    source: str = "MusicGen checkpoint") -> dict:
    """The `MusicGen` params tree (numpy float32) from a full state dict.

    Raises:
      CheckpointMismatchError: a key with no place, a missing weight or a wrong
        shape, named.
    """
    from audiolm_jax.convert.t5 import t5_encoder_params

    state = {k: np.asarray(v) for k, v in state.items()}
    flat = _decoder_params(state, config, source)
    text = t5_encoder_params(state, config.text, prefix="text_encoder.")
    for path, leaf in jax.tree_util.tree_flatten_with_path(text)[0]:
        flat[("text_encoder",) + tuple(k.key for k in path)] = np.asarray(leaf, np.float32)
    expected = expected_shapes(config)
    for path, value in flat.items():
        if path not in expected:
            raise CheckpointMismatchError(f"{source}: a weight for {'/'.join(path)} has no place "
                                          f"in a model with this config")
        if value.shape != expected[path]:
            raise CheckpointMismatchError(f"{source}: {'/'.join(path)} has shape {value.shape} "
                                          f"after conversion; config.json implies "
                                          f"{expected[path]}")
    missing = sorted("/".join(p) for p in expected if p not in flat)
    if missing:
        raise CheckpointMismatchError(f"{source}: missing MusicGen weights for {missing[:5]}"
                                      f"{' ...' if len(missing) > 5 else ''}")
    params: dict = {}
    for path, value in flat.items():
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return params


def read_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """model.safetensors (or shards), else pytorch_model.bin through weights_only."""
    bins = sorted(hf_dir.glob("pytorch_model*.bin"))
    if not any(hf_dir.glob("model*.safetensors")) and bins:
        state: dict[str, np.ndarray] = {}
        for file in bins:
            state.update({k: v.float().numpy() if hasattr(v, "float") else np.asarray(v)
                          for k, v in read_torch_file(file).items()})
        return state
    return read_safetensors_dir(hf_dir)


def load_hf_musicgen(hf_dir: str | os.PathLike) -> tuple[MusicGenConfig, dict, Any, Any]:
    """(config, params, codec config, codec variables) from a Hugging Face directory."""
    from audiolm_jax.convert.encodec import encodec_from_state

    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    if hf.get("model_type") != "musicgen":
        raise ValueError(f"{hf_dir}/config.json describes model_type {hf.get('model_type')!r}, "
                         "not 'musicgen' (MusicgenForConditionalGeneration); MusicGen-Melody "
                         "('musicgen_melody') is not supported yet")
    config = MusicGenConfig.from_hf(hf)
    state = read_weights(hf_dir)
    params = musicgen_params(state, config, source=str(hf_dir))
    codec_config, codec_variables = encodec_from_state(state, hf["audio_encoder"],
                                                       prefix="audio_encoder.")
    return config, params, codec_config, codec_variables


def convert_musicgen(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                     ) -> tuple[dict, dict, Path]:
    """Writes the export (see the module docstring).

    Returns:
      (config {"musicgen", "codec"} dicts, variables, the export directory).
    """
    from audiolm_jax.training.export import save_exported

    hf_dir = Path(hf_dir)
    tokenizer = hf_dir / TOKENIZER_FILE
    config, params, codec_config, codec_variables = load_hf_musicgen(hf_dir)
    fields = {"musicgen": config.to_dict(), "codec": codec_config.to_dict()}
    variables = {"musicgen": {"params": params}, "codec": codec_variables}
    out = save_exported(out_dir, MODEL_NAME, fields, variables,
                        source=f"huggingface:{hf_dir.absolute()}")
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, out / TOKENIZER_FILE)
    else:
        print(f"note: {hf_dir} has no {TOKENIZER_FILE}; the export takes token ids only "
              "(save the T5 tokenizer there with save_pretrained to caption by text)")
    return fields, variables, out
