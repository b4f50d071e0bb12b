"""T5 encoder: `T5Encoder` equals `transformers.T5EncoderModel`, the converter names bad keys,
and `T5Tokenizer` equals `transformers.T5TokenizerFast` on a tokenizer.json built offline."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax.traverse_util import flatten_dict
from tiny_t5 import write_tiny_tokenizer
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

from audiolm_jax.convert.t5 import t5_encoder_params
from audiolm_jax.models.t5 import T5Config, T5Encoder, relative_position_buckets
from audiolm_jax.text.t5_tokenizer import T5Tokenizer
from audiolm_jax.training.checkpointing import CheckpointMismatchError

# 8 buckets over max distance 16, so a length-40 batch reaches the log buckets and
# the clamp beyond max_distance.
SMALL = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
             relative_attention_num_buckets=8, relative_attention_max_distance=16)
CASES = {"relu": dict(SMALL),
         # inner_dim (5 x 8 = 40) != d_model, as in T5 v1.1 large; eps off its default.
         "gated-gelu": dict(SMALL, feed_forward_proj="gated-gelu", num_heads=5,
                            layer_norm_epsilon=1e-5)}
# float32 on both sides: the measured max abs difference is ~2e-6 on outputs of
# magnitude ~3; 1e-4 is the bound.
ATOL = 1e-4


def reference(case, model_cls=transformers.T5EncoderModel, seed=0):
    torch.manual_seed(seed)
    model = model_cls(transformers.T5Config(**CASES[case])).eval()
    with torch.no_grad():
        for p in model.parameters():            # move the norm scales off their init of ones
            p.add_(0.1 * torch.randn_like(p))
    return model


def numpy_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", list(CASES))
def test_last_hidden_state_matches_transformers(case):
    model = reference(case)
    config = T5Config.from_hf(model.config.to_dict())
    assert config.is_gated_act == (case != "relu")
    params = t5_encoder_params(numpy_state(model), config)
    abstract = jax.eval_shape(lambda: nn.meta.unbox(T5Encoder(config).init(
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32))))
    assert {p: a.shape for p, a in flatten_dict(abstract["params"]).items()} == {
        p: np.shape(a) for p, a in flatten_dict(params).items()}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (3, 40))
    mask = (np.arange(40)[None] < np.array([40, 23, 6])[:, None]).astype(np.int64)  # right pad
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
                    ).last_hidden_state.numpy()
    apply = jax.jit(T5Encoder(config).apply)
    ours = np.asarray(apply({"params": params}, ids, mask))
    assert ours.shape == ref.shape == (3, 40, 32) and ours.dtype == np.float32
    # HF computes the padded positions too (attending to the real keys only); they agree.
    diff = np.abs(ours - ref).max()
    assert diff < ATOL, f"{case}: max abs diff {diff:.2e}"
    # No mask means every position is real; a bool mask is the same as an int one.
    with torch.no_grad():
        ref_full = model(input_ids=torch.tensor(ids[:1])).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(apply({"params": params}, ids[:1])), ref_full,
                               atol=ATOL)
    np.testing.assert_allclose(np.asarray(apply({"params": params}, ids, mask > 0)), ours,
                               atol=1e-6)
    # bfloat16 matmuls and attention, float32 residual stream and output.
    half = jax.jit(T5Encoder(config, dtype=jnp.bfloat16).apply)({"params": params}, ids, mask)
    assert half.dtype == jnp.float32
    assert np.abs(np.asarray(half) - ref).max() < 0.1 * np.abs(ref).max()


def test_buckets_match_transformers():
    length = 300
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    for buckets, distance in ((32, 128), (8, 16), (16, 100)):
        ref = HFT5Attention._relative_position_bucket(relative, True, buckets, distance).numpy()
        np.testing.assert_array_equal(relative_position_buckets(length, length, buckets, distance),
                                      ref, err_msg=f"{buckets} buckets, max distance {distance}")


@pytest.fixture(scope="module")
def relu_state():
    model = reference("relu")
    return numpy_state(model), T5Config.from_hf(model.config.to_dict())


def test_converter_names_missing_misshapen_and_unexpected_keys(relu_state):
    state, config = relu_state
    missing = {k: v for k, v in state.items() if k != "encoder.block.1.layer.1.DenseReluDense.wo.weight"}
    with pytest.raises(CheckpointMismatchError,
                       match=r"missing T5 encoder weights 'encoder\.block\.1\.layer\.1\."
                             r"DenseReluDense\.wo\.weight'"):
        t5_encoder_params(missing, config)
    no_embedding = {k: v for k, v in state.items()
                    if k not in ("shared.weight", "encoder.embed_tokens.weight")}
    with pytest.raises(CheckpointMismatchError, match=r"missing.*shared\.weight \(or "):
        t5_encoder_params(no_embedding, config)
    bad = dict(state)
    bad["encoder.block.0.layer.0.SelfAttention.k.weight"] = np.zeros((16, 32), np.float32)
    with pytest.raises(CheckpointMismatchError,
                       match=r"'encoder\.block\.0\.layer\.0\.SelfAttention\.k\.weight' has shape "
                             r"\(16, 32\), expected \(32, 32\)"):
        t5_encoder_params(bad, config)
    with pytest.raises(CheckpointMismatchError, match=r"'shared\.weight' has shape \(99, 32\)"):
        t5_encoder_params({**state, "shared.weight": np.zeros((99, 32))}, config)
    # A gated checkpoint read with a relu config: wi_0/wi_1 unexpected, wi missing.
    gated = {k.replace(".wi.", ".wi_0."): v for k, v in state.items()}
    with pytest.raises(CheckpointMismatchError, match=r"unexpected.*wi_0.*missing.*\.wi\.weight"):
        t5_encoder_params(gated, config)
    # A deeper checkpoint than the config says.
    extra = {k.replace("block.1.", "block.2."): v for k, v in state.items() if "block.1." in k}
    with pytest.raises(CheckpointMismatchError, match=r"unexpected.*encoder\.block\.2\."):
        t5_encoder_params({**state, **extra}, config)
    # Tied copies that differ.
    untied = {**state, "encoder.embed_tokens.weight": state["shared.weight"] + 1}
    with pytest.raises(CheckpointMismatchError, match="tied"):
        t5_encoder_params(untied, config)


def test_converter_prefix_and_full_t5(relu_state):
    state, config = relu_state
    expected = t5_encoder_params(state, config)
    # A wrapper (MusicGen): the encoder below "text_encoder.", other keys beside it, and
    # only one of the two tied embedding keys.
    wrapped = {f"text_encoder.{k}": v for k, v in state.items() if k != "shared.weight"}
    wrapped["decoder.model.layers.0.fc1.weight"] = np.zeros((3, 3))
    params = t5_encoder_params(wrapped, config, prefix="text_encoder.")
    jax.tree.map(np.testing.assert_array_equal, params, expected)
    with pytest.raises(CheckpointMismatchError, match="prefix='text_encoder.'"):
        t5_encoder_params(wrapped, config)
    # A full T5: its decoder and LM head are skipped.
    full = numpy_state(reference("relu", transformers.T5ForConditionalGeneration))
    assert any(k.startswith("decoder.") for k in full)
    params = t5_encoder_params(full, config)
    assert set(params) == {"shared", "relative_attention_bias", "block_0", "block_1",
                           "final_norm"}


def test_config_from_hf():
    musicgen_text_encoder = {   # the shape of facebook/musicgen-small's text_encoder dict
        "_name_or_path": "t5-base", "architectures": ["T5EncoderModel"], "d_ff": 3072,
        "d_kv": 64, "d_model": 768, "dropout_rate": 0.1, "feed_forward_proj": "relu",
        "model_type": "t5", "num_heads": 12, "num_layers": 12, "vocab_size": 32128,
        "relative_attention_num_buckets": 32, "layer_norm_epsilon": 1e-6}
    config = T5Config.from_hf(musicgen_text_encoder)
    assert (config.d_model, config.num_layers, config.relative_attention_max_distance) == (
        768, 12, 128)
    assert (config.is_gated_act, config.dense_act_fn) == (False, "relu")
    # transformers 5 drops default-valued fields; they come back as its defaults.
    assert T5Config.from_hf({"model_type": "t5", "d_model": 64}).num_heads == 8
    for spelling, parsed in (("gated-gelu", (True, "gelu_new")), ("gelu_new", (False, "gelu_new")),
                             ("gated-silu", (True, "silu")), ("gelu", (False, "gelu"))):
        config = T5Config(**dict(SMALL, feed_forward_proj=spelling))
        assert (config.is_gated_act, config.dense_act_fn) == parsed
    with pytest.raises(ValueError, match="feed_forward_proj.*'swish'"):
        T5Config(**dict(SMALL, feed_forward_proj="gated-swish"))
    with pytest.raises(ValueError, match="model_type 'umt5'"):
        T5Config.from_hf({**musicgen_text_encoder, "model_type": "umt5"})
    with pytest.raises(ValueError, match="num_heads must be positive"):
        T5Config(**dict(SMALL, num_heads=0))


# ---------------------------------------------------------------------------- tokenizer

TEXTS = ["A calm piano melody with soft strings.", "jazz", "",
         "Drum and bass,  Ünïcode ç double spaces 42"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("t5_tokenizer"))


def test_tokenizer_matches_transformers(tokenizer_file):
    ours = T5Tokenizer.from_dir(tokenizer_file.parent)
    assert (ours.pad_id, ours.eos_id) == (0, 1)
    ref = transformers.T5TokenizerFast(tokenizer_file=str(tokenizer_file))
    ids, mask, truncated = ours.encode(TEXTS)
    expected = ref(TEXTS, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ids.dtype == mask.dtype == np.int32 and truncated == [False] * 4
    assert ids[2, 0] == 1 and mask[2].sum() == 1                 # "" is </s> alone
    assert (ids[mask.astype(bool)] != 0).all() and (ids[mask == 0] == 0).all()
    batch = ours.encode(TEXTS, max_length=5)                       # cuts texts 0 and 3
    expected = ref(TEXTS, padding="longest", truncation=True, max_length=5, return_tensors="np")
    np.testing.assert_array_equal(batch.ids, expected["input_ids"])
    np.testing.assert_array_equal(batch.mask, expected["attention_mask"])
    assert batch.truncated == [True, False, False, True] and (batch.ids[[0, 3], -1] == 1).all()
    with pytest.raises(ValueError, match="not one string"):
        ours.encode("a caption")
    with pytest.raises(ValueError, match="text 1 is a int"):
        ours.encode(["ok", 3])


def test_tokenizer_refusals(tmp_path, tokenizer_file):
    spiece_only = tmp_path / "spiece_only"
    spiece_only.mkdir()
    (spiece_only / "spiece.model").write_bytes(b"\x00")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json, only spiece\.model.*"
                                                r"AutoTokenizer\.from_pretrained.*save_pretrained"):
        T5Tokenizer.from_dir(spiece_only)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T5Tokenizer.from_dir(tmp_path / "missing")
    no_eos = json.loads(tokenizer_file.read_text())
    no_eos["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(no_eos))
    with pytest.raises(ValueError, match=r"does not append one </s>"):
        T5Tokenizer.from_dir(tmp_path)
    tok = T5Tokenizer.from_file(tokenizer_file)
    with pytest.raises(CheckpointMismatchError, match="embeds only vocab_size=10"):
        tok.check_vocab_size(10, source="ckpt")
