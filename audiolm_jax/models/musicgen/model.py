"""MusicGen (Copet et al. 2023): a T5 text encoder and one decoder over delayed
EnCodec codebooks that cross-attends to the text.

    text ids [b, C] -> T5 -> [b, C, text_dim] -> text_projection -> context [b, C, embed]
    codes [b, T, K] -> delay pattern (book q lags q steps), after one all-pad start step
      -> sum of K codebook embeddings + fixed sinusoidal positions
      -> num_layers x (self-attention, cross-attention to the context, GELU MLP),
         pre-LayerNorm, no biases but the norms'
      -> final LayerNorm -> K heads -> logits [b, T, K, codebook_size]

The decoder is the shared `layers.streams.StreamDecoder` (delayed layout): the
start step (every book's pad id, Hugging Face's `decoder_start_token_id`) is its
one-step prefix, so step s of the sequence holds book q's frame `s - q` exactly as
`MusicgenForCausalLM.build_delay_pattern_mask` lays it out after its start column.

The context of a row is its projected T5 states times its text mask (padding is
zero, as in transformers); the null condition of classifier-free guidance is an
all-zero, all-masked context (`null_context`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.streams import DELAYED, StreamDecoder, StreamLayout
from audiolm_jax.models.t5.model import T5Config, T5Encoder

MODEL_NAME = "musicgen"


@dataclasses.dataclass(frozen=True)
class MusicGenConfig:
    """MusicGen's text encoder and decoder (the codec is its own export).

    Attributes:
      text: the T5 encoder's config.
      num_codebooks: K, the codec's books (4 for the 32 kHz EnCodec).
      codebook_size: codes per book (2048); the pad / start id is `codebook_size`.
      embed_dim, num_layers, num_heads, mlp_dim: the decoder (musicgen-small: 1024,
        24, 16, 4096).
      project_text: a `text_projection` (with bias) from the T5 width to `embed_dim`;
        transformers adds one whenever the widths differ.
      frame_rate: codec frames per second (50 at 32 kHz).
      sample_rate: the codec's audio rate.
      max_frames: the longest generation the model was trained for (30 s at 50 Hz:
        1500, transformers' `generation_config.max_length`).
      max_text_tokens: captions are cut to this many T5 tokens (T5's 512).
      norm_eps: the LayerNorms' epsilon.
    """

    text: T5Config
    num_codebooks: int = 4
    codebook_size: int = 2048
    embed_dim: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    project_text: bool = True
    frame_rate: int = 50
    sample_rate: int = 32_000
    max_frames: int = 1500
    max_text_tokens: int = 512
    norm_eps: float = 1e-5

    def __post_init__(self):
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", T5Config(**self.text))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MusicGenConfig: embed_dim {self.embed_dim} is not a multiple of "
                             f"num_heads {self.num_heads}")
        if not self.project_text and self.text.d_model != self.embed_dim:
            raise ValueError(f"MusicGenConfig: a T5 width of {self.text.d_model} needs "
                             f"project_text to reach the decoder's {self.embed_dim}")

    @property
    def pad_id(self) -> int:
        return self.codebook_size

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(DELAYED, self.num_codebooks, self.codebook_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_hf(cls, hf: dict) -> MusicGenConfig:
        """From a `MusicgenForConditionalGeneration` `config.json` (its `text_encoder`,
        `audio_encoder` and `decoder` sub-dicts)."""
        dec, audio = hf["decoder"], hf["audio_encoder"]
        text = T5Config.from_hf(hf["text_encoder"])
        if dec.get("audio_channels", 1) != 1:
            raise ValueError("stereo MusicGen (audio_channels 2) is not supported yet")
        if dec.get("scale_embedding", False):
            raise ValueError("a MusicGen decoder with scale_embedding is not supported")
        if dec.get("activation_function", "gelu") != "gelu":
            raise ValueError(f"MusicGen decoder activation {dec['activation_function']!r}: "
                             "only 'gelu' is supported")
        if dec.get("cross_attention_hidden_size") not in (None, text.d_model):
            raise ValueError("cross_attention_hidden_size must be the T5 width or null")
        ratios = audio.get("upsampling_ratios", [8, 5, 4, 4])
        hop = 1
        for r in ratios:
            hop *= r
        sample_rate = audio.get("sampling_rate", 32_000)
        return cls(text=text, num_codebooks=dec["num_codebooks"],
                   codebook_size=dec["vocab_size"], embed_dim=dec["hidden_size"],
                   num_layers=dec["num_hidden_layers"], num_heads=dec["num_attention_heads"],
                   mlp_dim=dec["ffn_dim"],
                   project_text=(text.d_model != dec["hidden_size"]
                                 and dec.get("cross_attention_hidden_size") is None),
                   frame_rate=round(sample_rate / hop), sample_rate=sample_rate)

    @classmethod
    def tiny(cls, **overrides: Any) -> MusicGenConfig:
        """A CPU-test size: 2 blocks of width 32 over 4 books of 64 codes."""
        text = T5Config(vocab_size=100, d_model=24, d_kv=6, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="relu")
        base = dict(text=text, num_codebooks=4, codebook_size=64, embed_dim=32, num_layers=2,
                    num_heads=4, mlp_dim=64)
        return cls(**{**base, **overrides})


class MusicGen(nn.Module):
    """T5 text encoder, text projection and the delayed-stream decoder.

    Params: `text_encoder` (T5), `text_projection` (when `project_text`), `lm` (the
    `StreamDecoder`: `codebooks` [K, C + 1, embed], `decoder` blocks, final norm and
    the K heads as one `[embed, K * C]` matrix).
    """

    config: MusicGenConfig
    dtype: jnp.dtype = jnp.float32
    remat: bool = False

    def setup(self):
        c = self.config
        self.text_encoder = T5Encoder(c.text, dtype=self.dtype)
        if c.project_text:
            self.text_projection = nn.Dense(
                c.embed_dim, dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                         (None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))
        self.lm = StreamDecoder(
            layout=c.layout, vocab_size=c.codebook_size + 1, output_vocab_size=c.codebook_size,
            embed_dim=c.embed_dim, num_layers=c.num_layers, num_heads=c.num_heads,
            head_dim=c.embed_dim // c.num_heads, mlp_dim=c.mlp_dim, dtype=self.dtype,
            remat=self.remat, position_embedding="sinusoidal", norm="layer", use_bias=False,
            norm_bias=True, gated=False, exact_gelu=True, norm_eps=c.norm_eps,
            cross_attention=True)

    # ------------------------------------------------------------------ text

    def encode_text(self, text_ids: jax.Array, text_mask: jax.Array) -> jax.Array:
        """[b, C] T5 ids and [b, C] mask -> context [b, C, embed]: projected T5 states,
        zero where the mask is."""
        states = self.text_encoder(text_ids, text_mask)
        return self.project(states, text_mask)

    def project(self, text_states: jax.Array, text_mask: jax.Array) -> jax.Array:
        """T5 states [b, C, text_dim] -> context [b, C, embed], zero where masked."""
        if self.config.project_text:
            text_states = self.text_projection(text_states)
        return text_states * jnp.asarray(text_mask, text_states.dtype)[..., None]

    # ------------------------------------------------------------------ decoder

    def _start(self, batch: int) -> jax.Array:
        """The all-pad start step's embedding, the decoder's one-step prefix [b, 1, embed]."""
        start = jnp.full((batch, 1, self.config.num_codebooks), self.config.pad_id, jnp.int32)
        return self.lm.embed_steps(start)

    def __call__(self, codes: jax.Array, text_ids: jax.Array, text_mask: jax.Array
                 ) -> jax.Array:
        """Teacher-forced logits from text ids: [b, T, K] codes -> [b, T, K, C] float32."""
        return self.logits(codes, self.encode_text(text_ids, text_mask), text_mask)

    def logits(self, codes: jax.Array, context: jax.Array, context_mask: jax.Array
               ) -> jax.Array:
        """Teacher-forced logits given the context: entry (t, q) scores frame t's code of
        book q after every earlier step of the delay pattern. [b, T, K] -> [b, T, K, C]."""
        return self.lm(codes, prefix_embeddings=self._start(codes.shape[0]), context=context,
                       context_mask=context_mask)

    def prefill(self, context: jax.Array, context_mask: jax.Array, steps: jax.Array,
                step_lengths: jax.Array | None = None) -> jax.Array:
        """Writes the start step, `steps` [b, S, K] and the context into the cache;
        returns the next step's logits [b, K, C]. Apply with `mutable=["cache"]`."""
        return self.lm.prefill(None, None, steps, step_lengths,
                               prefix_embeddings=self._start(steps.shape[0]),
                               context=context, context_mask=context_mask)

    def decode(self, step: jax.Array) -> jax.Array:
        """[b, K] ids of one step -> [b, K, C] logits of the next. `mutable=["cache"]`."""
        return self.lm.decode(step)

    def init_cache(self, batch_size: int, max_steps: int, context_length: int) -> dict:
        """An empty cache for `max_steps` sequence steps after the start step and a
        context of `context_length` entries (boxed, like `Decoder.init_cache`). Call on
        the unbound module; nothing is computed."""
        c = self.config

        def make() -> dict:
            steps = jnp.zeros((batch_size, max_steps, c.num_codebooks), jnp.int32)
            context = jnp.zeros((batch_size, context_length, c.embed_dim), self.dtype)
            return self.init(jax.random.key(0), context, jnp.ones(context.shape[:2], bool),
                             steps, method=MusicGen.prefill)["cache"]

        abstract = jax.eval_shape(make)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)


def null_context(context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The unconditional input of classifier-free guidance: zeros, all masked."""
    return jnp.zeros_like(context), jnp.zeros(context.shape[:2], bool)


def init_params(config: MusicGenConfig, key: jax.Array, dtype: jnp.dtype = jnp.float32
                ) -> dict:
    """Random params (plain arrays) for `config`, e.g. for tests and benchmarks."""
    model = MusicGen(config, dtype)
    codes = jnp.zeros((1, 2, config.num_codebooks), jnp.int32)
    text = jnp.ones((1, 3), jnp.int32)
    return nn.unbox(model.init(key, codes, text, jnp.ones((1, 3), bool))["params"])


__all__ = ["MODEL_NAME", "MusicGen", "MusicGenConfig", "init_params",
           "null_context"]
