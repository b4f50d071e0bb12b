"""Config blocks every family shares: data, optimizer, mesh and train.

One field a line with a comment, as in the Flax examples' `configs/default.py`.
A family's config calls these with the few fields it changes; a keyword that
is not a field of the block is an error.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def _block(defaults: dict[str, Any], overrides: dict[str, Any], what: str,
           extra: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """`defaults` with `overrides` (existing fields only) and a family's `extra` fields."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise KeyError(f"{what} config has no field(s) {unknown}; fields: {sorted(defaults)} "
                       "(a family's own fields go in `extra`)")
    return ml_collections.ConfigDict({**defaults, **overrides, **(extra or {})})


def data(extra: dict[str, Any] | None = None, **overrides: Any) -> ml_collections.ConfigDict:
    """Where batches come from (`audiolm_jax.data.builder`); `extra` holds a family's
    own fields (e.g. `crop_seconds`)."""
    defaults = dict(
        source="corpus",          # corpus | folder | tfds
        corpus="speech",          # the built-in corpus: speech | music
        corpus_size="default",    # the built-in corpus's size preset
        corpus_seed=0,            # seed the built-in corpus is rendered with
        corpus_root="",           # where the built-in corpus is cached ("" = default)
        folder="",                # source=folder: audio files (+ sidecar .txt) below it
        tfds_name="",             # source=tfds: a dataset prepared as array_record
        tfds_split="train",       # source=tfds: the split to read
        tfds_data_dir="",         # source=tfds: TFDS data dir ("" = TFDS default)
        tfds_sample_rate=16_000,  # source=tfds: the dataset's sample rate
        batch_size=8,             # global batch size (all hosts together)
        seed=0,                   # shuffling and cropping seed
        num_threads=2,            # Grain read threads per process
        eval_fraction=0.05,       # held-out share of the source for evaluation
        held_out_speakers=0,      # >0: hold out whole speakers instead (data.sources)
    )
    return _block(defaults, overrides, "data", extra)


def optimizer(**overrides: Any) -> ml_collections.ConfigDict:
    """`audiolm_jax.training.optimizers.make_optimizer`'s fields."""
    defaults = dict(
        name="adamw",             # adam | adamw
        lr=3e-4,                  # peak learning rate
        warmup_steps=0,           # linear warm-up from 0 to lr
        schedule="constant",      # constant | cosine (after warm-up)
        decay_steps=1,            # cosine: the step the decay ends at (warm-up included)
        end_lr_ratio=1.0,         # final lr / peak lr
        b1=0.9,                   # Adam beta1
        b2=0.98,                  # Adam beta2
        eps=1e-8,                 # Adam epsilon
        weight_decay=0.0,         # decoupled weight decay (adamw)
        grad_clip_norm=0.0,       # global-norm clipping (0 = off)
    )
    return _block(defaults, overrides, "optimizer")


def mesh(rules: str = "dp", data: int = -1, fsdp: int = 1, tensor: int = 1
         ) -> ml_collections.ConfigDict:
    """The ('data', 'fsdp', 'tensor') mesh and the logical-axis rule table."""
    return ml_collections.ConfigDict(dict(
        # Devices per mesh axis; -1 takes the remaining devices.
        shape=ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
        rules=rules,              # dp | fsdp | tp | fsdp_tp, or a list of (name, mesh axes)
    ))


def train(**overrides: Any) -> ml_collections.ConfigDict:
    """The step loop (`audiolm_jax.training.loop.LoopConfig`)."""
    defaults = dict(
        num_steps=100_000,        # total optimizer steps
        log_every=100,            # steps between metric lines
        save_every=5000,          # steps between Orbax checkpoints
        keep_checkpoints=3,       # checkpoints kept on disk
        eval_every=5000,          # steps between evaluations
        seed=0,                   # parameter-init and dropout seed
        profile_start=-1,         # first profiled step (-1 = no profile)
        profile_steps=5,          # steps in the jax.profiler trace
        async_checkpoints=True,   # write checkpoints in the background
        progress=True,            # tqdm progress bar
        init_from="",             # export dir: start from its params (warm start)
    )
    return _block(defaults, overrides, "train")
