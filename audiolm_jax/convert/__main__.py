"""Command line: convert public checkpoints into this project's exports.

    python -m audiolm_jax.convert codec HF_DIR OUT_DIR      # EnCodec (alias: encodec)
    python -m audiolm_jax.convert hubert HF_DIR OUT_DIR
    python -m audiolm_jax.convert w2v_bert HF_DIR OUT_DIR   # (alias: w2v-bert)
    python -m audiolm_jax.convert bert HF_DIR OUT_DIR
    python -m audiolm_jax.convert vocoder SRC_DIR OUT_DIR  # Vocos (alias: vocos)
    python -m audiolm_jax.convert bark HF_DIR OUT_DIR      # suno/bark, suno/bark-small
    python -m audiolm_jax.convert f5tts SRC OUT_DIR        # F5TTS_v1_Base (alias: f5-tts)
    python -m audiolm_jax.convert musicgen HF_DIR OUT_DIR  # facebook/musicgen-small ... -large

One subcommand per model family, named as the family. Each reads
files the user already has (nothing downloads) and writes an export that
`audiolm_jax.training.export.load_exported` (and the model's own loader, e.g.
`audiolm_jax.convert.encodec.load_codec`) reads. The BERT export also holds
the checkpoint's `tokenizer.json` (`audiolm_jax.convert.bert.load_bert`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from audiolm_jax.training.state import count_params


def _describe_codec(config, variables) -> list[str]:
    seanet = config.seanet
    window = ("whole signal" if config.chunk_length_s is None else
              f"{config.chunk_length_s:g} s windows, overlap {config.overlap or 0:g}")
    return [
        f"params:      {count_params(variables['params']):,} "
        f"(+ {count_params(variables['codebook']):,} codebook values)",
        f"sample rate: {config.sample_rate} Hz, {seanet.audio_channels} channel(s), "
        f"{config.frame_rate} frames/s (hop {config.hop_length})",
        f"bandwidths:  {', '.join(f'{b:g}' for b in config.target_bandwidths)} kbps "
        f"({config.num_quantizers} codebooks of {config.codebook_size})",
        f"encoding:    {window}; normalize={config.normalize}, causal={seanet.causal}, "
        f"norm={seanet.norm_type}",
    ]


def _describe_hubert(config, variables) -> list[str]:
    return [f"params:  {count_params(variables['params']):,}",
            f"layers:  {config.num_hidden_layers} x {config.hidden_size} "
            f"({'pre' if config.do_stable_layer_norm else 'post'}-norm), hop "
            f"{config.hop_length} samples"]


def _describe_w2v_bert(config, variables) -> list[str]:
    return [f"params:  {count_params(variables['params']):,}",
            f"layers:  {config.num_hidden_layers} x {config.hidden_size} Conformer, "
            f"{config.position_embeddings_type} positions, {config.frame_rate:g} frames/s"]


def _describe_bert(config, variables) -> list[str]:
    return [f"params:        {count_params(variables['params']):,}",
            f"layers:        {config.num_hidden_layers} x {config.hidden_size} "
            f"({config.num_attention_heads} heads, {config.hidden_act})",
            f"vocab size:    {config.vocab_size:,} (tokenizer.json copied)",
            f"max positions: {config.max_position_embeddings}"]


def _describe_vocoder(config, variables) -> list[str]:
    if config.features == "mel":
        features = (f"{config.n_mels} log-mel bands, n_fft {config.n_fft}, hop "
                    f"{config.hop_length} ({config.padding})")
    else:
        features = f"EnCodec codes, {config.num_codebooks} codebooks of {config.codebook_size}"
    return [f"params:   {count_params(variables['params']):,}",
            f"features: {features} at {config.sample_rate} Hz",
            f"backbone: {config.num_layers} ConvNeXt blocks x {config.dim}"
            f"{', AdaLayerNorm' if config.adanorm_num_embeddings else ''}; ISTFT head n_fft "
            f"{config.istft_n_fft}, hop {config.istft_hop_length}"]


def _describe_bark(config, variables) -> list[str]:
    lines = []
    for stage in ("semantic", "coarse", "fine"):
        c = config[stage]
        lines.append(f"{stage + ':':9s} {count_params(variables[stage]['params']):,} params, "
                     f"{c['num_layers']} x {c['hidden_size']} ({c['num_heads']} heads), "
                     f"vocab {c['input_vocab_size']} -> {c['output_vocab_size']}, "
                     f"context {c['block_size']}")
    codec = config["codec"]
    lines.append(f"codec:    {count_params(variables['codec']['params']):,} params, "
                 f"{codec['sample_rate']} Hz EnCodec")
    return lines


def _describe_f5tts(config, variables) -> list[str]:
    return [f"params:   {count_params(variables['params']):,}",
            f"DiT:      {config.depth} x {config.dim} ({config.heads} heads), feed-forward "
            f"{config.ff_dim}, text {config.text_dim} ({config.conv_layers} ConvNeXt-V2 blocks)",
            f"vocab:    {config.text_num_embeds} entries (vocab.txt copied)",
            f"mel:      {config.mel_dim} vocos bins at {config.sample_rate} Hz, hop "
            f"{config.hop_length}, log floor {config.mel_floor:g}"]


def _describe_musicgen(config, variables) -> list[str]:
    c, text, codec = config["musicgen"], config["musicgen"]["text"], config["codec"]
    params = variables["musicgen"]["params"]
    lm = {k: v for k, v in params.items() if k != "text_encoder"}
    return [f"decoder:  {count_params(lm):,} params, {c['num_layers']} x {c['embed_dim']} "
            f"({c['num_heads']} heads), {c['num_codebooks']} books of {c['codebook_size']}",
            f"text:     T5 encoder, {count_params(params['text_encoder']):,} params, "
            f"{text['num_layers']} x {text['d_model']}",
            f"codec:    {count_params(variables['codec']['params']):,} params, "
            f"{codec['sample_rate']} Hz EnCodec"]


class Converter(NamedTuple):
    """One subcommand: the family it converts into and how."""

    family: str                 # the subcommand, the family's one name
    aliases: tuple[str, ...]    # earlier subcommand names, still accepted
    title: str                  # what the checkpoint is, for messages
    module: str                 # `audiolm_jax.convert.<module>` holds `convert_<module>`
    hf_files: str               # what HF_DIR must hold
    description: str
    describe: Callable[[Any, Any], list[str]]


CONVERTERS = (
    Converter("codec", ("encodec",), "EnCodec", "encodec", "config.json and model.safetensors",
              "Convert a Hugging Face EnCodec directory as save_pretrained writes it.",
              _describe_codec),
    Converter("hubert", (), "HuBERT", "hubert", "config.json and model.safetensors",
              "Convert a Hugging Face HuBERT directory (HubertModel or HubertForCTC) as "
              "save_pretrained writes it.", _describe_hubert),
    Converter("w2v_bert", ("w2v-bert",), "w2v-BERT", "w2v_bert",
              "config.json and model.safetensors",
              "Convert a Hugging Face Wav2Vec2BertModel directory (e.g. facebook/w2v-bert-2.0) "
              "as save_pretrained writes it.", _describe_w2v_bert),
    Converter("bert", (), "BERT", "bert",
              "config.json, model.safetensors and tokenizer.json (or vocab.txt)",
              "Convert a Hugging Face BertModel directory (BertModel, BertForMaskedLM, or a "
              "sentence-transformers model such as all-MiniLM-L6-v2) and its WordPiece "
              "tokenizer.", _describe_bert),
    Converter("vocoder", ("vocos",), "Vocos", "vocos",
              "config.yaml and pytorch_model.bin (or model.safetensors)",
              "Convert a directory of the `vocos` package (e.g. a download of "
              "charactr/vocos-mel-24khz): config.yaml plus its weights. A .bin is read "
              "with torch.load(weights_only=True).", _describe_vocoder),
    Converter("bark", (), "Bark", "bark",
              "config.json, model.safetensors (or pytorch_model.bin), generation_config.json "
              "and the BERT tokenizer",
              "Convert a Hugging Face BarkModel directory (suno/bark, suno/bark-small): the "
              "semantic, coarse and fine stages, the EnCodec codec and the tokenizer, into "
              "one export. A .bin is read with torch.load(weights_only=True).", _describe_bark),
    Converter("f5tts", ("f5-tts",), "F5-TTS", "f5tts",
              "model_*.safetensors (or .pt) and vocab.txt",
              "Convert an F5-TTS release (e.g. F5TTS_v1_Base/ of SWivid/F5-TTS): the EMA "
              "weights under ema_model. and vocab.txt; a .pt is read with "
              "torch.load(weights_only=True). HF_DIR may also be the weights file itself.",
              _describe_f5tts),
    Converter("musicgen", (), "MusicGen", "musicgen",
              "config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json",
              "Convert a Hugging Face MusicgenForConditionalGeneration directory "
              "(facebook/musicgen-small, -medium, -large): the T5 text encoder, the decoder "
              "and the EnCodec 32 kHz codec into one export, with the T5 tokenizer.json. A "
              ".bin is read with torch.load(weights_only=True).", _describe_musicgen),
)


def _run(converter: Converter, args: argparse.Namespace) -> int:
    module = importlib.import_module(f"audiolm_jax.convert.{converter.module}")
    start = time.perf_counter()
    config, variables, out = getattr(module, f"convert_{converter.module}")(args.hf_dir,
                                                                             args.out_dir)
    print(f"converted {converter.title} {args.hf_dir} in {time.perf_counter() - start:.1f} s")
    for line in converter.describe(config, variables) + [f"wrote: {out}"]:
        print(f"  {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audiolm_jax.convert",
        description="Convert public checkpoints (safetensors, no torch needed) into "
                    "audiolm_jax exports.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="FAMILY")
    for converter in CONVERTERS:
        command = commands.add_parser(
            converter.family, aliases=list(converter.aliases),
            help=f"a Hugging Face {converter.title} directory ({converter.hf_files})",
            description=converter.description)
        command.add_argument("hf_dir", metavar="HF_DIR",
                             help=f"directory with {converter.hf_files}")
        command.add_argument("out_dir", metavar="OUT_DIR", help="export directory to write")
        command.set_defaults(run=functools.partial(_run, converter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (errors print one line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:  # CheckpointMismatchError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
