"""Command line: convert public checkpoints into this project's exports.

    python -m audiolm_jax.convert encodec HF_DIR OUT_DIR
    python -m audiolm_jax.convert hubert HF_DIR OUT_DIR
    python -m audiolm_jax.convert w2v-bert HF_DIR OUT_DIR
    python -m audiolm_jax.convert bert HF_DIR OUT_DIR

One subcommand per model family. Each reads
files the user already has (nothing downloads) and writes an export that
`audiolm_jax.training.export.load_exported` (and the model's own loader, e.g.
`audiolm_jax.convert.encodec.load_codec`) reads. The BERT export also holds
the checkpoint's `tokenizer.json` (`audiolm_jax.convert.bert.load_bert`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _encodec(args: argparse.Namespace) -> int:
    from audiolm_jax.convert.encodec import convert_encodec, count_params

    start = time.perf_counter()
    config, variables, out = convert_encodec(args.hf_dir, args.out_dir)
    seconds = time.perf_counter() - start
    seanet = config.seanet
    print(f"converted EnCodec {args.hf_dir} in {seconds:.1f} s")
    print(f"  params:      {count_params(variables['params']):,} "
          f"(+ {count_params(variables['codebook']):,} codebook values)")
    print(f"  sample rate: {config.sample_rate} Hz, {seanet.audio_channels} channel(s), "
          f"{config.frame_rate} frames/s (hop {config.hop_length})")
    print(f"  bandwidths:  {', '.join(f'{b:g}' for b in config.target_bandwidths)} kbps "
          f"({config.num_quantizers} codebooks of {config.codebook_size})")
    window = ("whole signal" if config.chunk_length_s is None else
              f"{config.chunk_length_s:g} s windows, overlap {config.overlap or 0:g}")
    print(f"  encoding:    {window}; normalize={config.normalize}, causal={seanet.causal}, "
          f"norm={seanet.norm_type}")
    print(f"  wrote:       {out}")
    return 0


def _hubert(args: argparse.Namespace) -> int:
    from audiolm_jax.convert.encodec import count_params
    from audiolm_jax.convert.hubert import convert_hubert

    start = time.perf_counter()
    config, variables, out = convert_hubert(args.hf_dir, args.out_dir)
    print(f"converted HuBERT {args.hf_dir} in {time.perf_counter() - start:.1f} s")
    print(f"  params:  {count_params(variables['params']):,}")
    print(f"  layers:  {config.num_hidden_layers} x {config.hidden_size} "
          f"({'pre' if config.do_stable_layer_norm else 'post'}-norm), hop "
          f"{config.hop_length} samples")
    print(f"  wrote:   {out}")
    return 0


def _w2v_bert(args: argparse.Namespace) -> int:
    from audiolm_jax.convert.encodec import count_params
    from audiolm_jax.convert.w2v_bert import convert_w2v_bert

    start = time.perf_counter()
    config, variables, out = convert_w2v_bert(args.hf_dir, args.out_dir)
    print(f"converted w2v-BERT {args.hf_dir} in {time.perf_counter() - start:.1f} s")
    print(f"  params:  {count_params(variables['params']):,}")
    print(f"  layers:  {config.num_hidden_layers} x {config.hidden_size} Conformer, "
          f"{config.position_embeddings_type} positions, {config.frame_rate:g} frames/s")
    print(f"  wrote:   {out}")
    return 0


def _bert(args: argparse.Namespace) -> int:
    from audiolm_jax.convert.bert import convert_bert
    from audiolm_jax.convert.encodec import count_params

    start = time.perf_counter()
    config, variables, out = convert_bert(args.hf_dir, args.out_dir)
    print(f"converted BERT {args.hf_dir} in {time.perf_counter() - start:.1f} s")
    print(f"  params:        {count_params(variables['params']):,}")
    print(f"  layers:        {config.num_hidden_layers} x {config.hidden_size} "
          f"({config.num_attention_heads} heads, {config.hidden_act})")
    print(f"  vocab size:    {config.vocab_size:,} (tokenizer.json copied)")
    print(f"  max positions: {config.max_position_embeddings}")
    print(f"  wrote:         {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audiolm_jax.convert",
        description="Convert public checkpoints (safetensors, no torch needed) into "
                    "audiolm_jax exports.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="MODEL")
    encodec = commands.add_parser(
        "encodec", help="a Hugging Face EnCodec directory (config.json + model.safetensors)",
        description="Convert a Hugging Face EnCodec directory as save_pretrained writes it.")
    encodec.add_argument("hf_dir", metavar="HF_DIR",
                         help="directory with config.json and model.safetensors")
    encodec.add_argument("out_dir", metavar="OUT_DIR", help="export directory to write")
    encodec.set_defaults(run=_encodec)
    hubert = commands.add_parser(
        "hubert", help="a Hugging Face HuBERT directory (config.json + model.safetensors)",
        description="Convert a Hugging Face HuBERT directory (HubertModel or HubertForCTC) "
                    "as save_pretrained writes it.")
    hubert.add_argument("hf_dir", metavar="HF_DIR",
                        help="directory with config.json and model.safetensors")
    hubert.add_argument("out_dir", metavar="OUT_DIR", help="export directory to write")
    hubert.set_defaults(run=_hubert)
    w2v_bert = commands.add_parser(
        "w2v-bert", help="a Hugging Face w2v-BERT 2.0 directory (config.json + model.safetensors)",
        description="Convert a Hugging Face Wav2Vec2BertModel directory (e.g. "
                    "facebook/w2v-bert-2.0) as save_pretrained writes it.")
    w2v_bert.add_argument("hf_dir", metavar="HF_DIR",
                          help="directory with config.json and model.safetensors")
    w2v_bert.add_argument("out_dir", metavar="OUT_DIR", help="export directory to write")
    w2v_bert.set_defaults(run=_w2v_bert)
    bert = commands.add_parser(
        "bert", help="a Hugging Face BERT directory (config.json + model.safetensors + "
                     "tokenizer.json or vocab.txt)",
        description="Convert a Hugging Face BertModel directory (BertModel, BertForMaskedLM, "
                    "or a sentence-transformers model such as all-MiniLM-L6-v2) and its "
                    "WordPiece tokenizer.")
    bert.add_argument("hf_dir", metavar="HF_DIR",
                      help="directory with config.json, model.safetensors and tokenizer.json "
                           "(or vocab.txt)")
    bert.add_argument("out_dir", metavar="OUT_DIR", help="export directory to write")
    bert.set_defaults(run=_bert)
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
