"""The one-name-per-family layout: legacy names still restore, rule tables are complete."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.families import FAMILIES, LEGACY_MODEL_NAMES, canonical_model_name
from audiolm_jax.quantization.residual_kmeans import ResidualKMeans, fit_residual_kmeans
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import load_exported, save_exported


class OnesBatch:
    def __next__(self):
        return {"x": np.ones((2, 3), np.float32)}

    def get_state(self):
        return {}

    def set_state(self, state):
        pass


def _counter_run(workdir, model_name, num_steps):
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def init_fn(rng):
        return {"total": jnp.zeros(()), "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):
        return ({"total": state["total"] + batch["x"].sum(), "step": state["step"] + 1},
                {"loss": state["total"]})

    return loop_lib.run(loop=loop_lib.LoopConfig(num_steps=num_steps, save_every=num_steps,
                                                 progress=False),
                        workdir=workdir, model_name=model_name, mesh=mesh,
                        rules=mesh_lib.get_rules("dp"), init_fn=init_fn, train_step=train_step,
                        data_iter=OnesBatch())


@pytest.mark.parametrize("old", sorted(LEGACY_MODEL_NAMES))
def test_a_checkpoint_under_an_old_name_resumes_under_the_new_one(tmp_path, old):
    _counter_run(tmp_path, old, 2)                                  # written as before the move
    new = canonical_model_name(old)
    assert new in FAMILIES
    resumed = _counter_run(tmp_path, new, 3)
    assert resumed.start_step == 2 and float(resumed.state["total"]) == 18.0
    with pytest.raises(CheckpointMismatchError, match="holds model"):
        _counter_run(tmp_path, "codec", 4)                         # another family still refused


def test_exports_and_codebooks_under_old_names_load(tmp_path):
    params = {"params": {"w": np.arange(3, dtype=np.float32)}}
    save_exported(tmp_path / "ctc", "phoneme_recognizer", {"a": 1}, params)
    config, variables = load_exported(tmp_path / "ctc", expected_model="ctc")
    assert config == {"a": 1} and np.array_equal(variables["params"]["w"], [0, 1, 2])
    assert json.loads((tmp_path / "ctc" / "model.json").read_text())["model"] == "phoneme_recognizer"
    with pytest.raises(CheckpointMismatchError, match="not 'mulan'"):
        load_exported(tmp_path / "ctc", expected_model="mulan")
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    rvq, _ = fit_residual_kmeans(x, 2, 4, steps=3, metadata={"model": "melody_embedder"},
                                 progress=False)
    path = rvq.save(tmp_path / "rvq.npz")
    assert ResidualKMeans.load(path, expect={"model": "melody"}).num_quantizers == 2


def test_every_rule_table_maps_every_logical_axis_once():
    for name, table in mesh_lib.RULE_SETS.items():
        assert mesh_lib.validate_rules(table) == table, name
        assert [n for n, _ in table] [:2] == list(mesh_lib.BATCH_NAMES)


def test_custom_rule_tables_are_validated():
    good = mesh_lib.get_rules("fsdp")
    assert mesh_lib.get_rules([list(r) for r in good]) == good          # lists are fine
    reordered = good[2:] + good[:2]
    with pytest.raises(ValueError, match="batch rules must come first"):
        mesh_lib.get_rules(reordered)
    with pytest.raises(ValueError, match=r"miss logical axes \['codebook_dim'\]"):
        mesh_lib.get_rules([r for r in good if r[0] != "codebook_dim"])
    with pytest.raises(ValueError, match="unknown logical axes"):
        mesh_lib.get_rules(good + [("embd", None)])
    with pytest.raises(ValueError, match="more than once"):
        mesh_lib.get_rules(good + [("embed", None)])
    with pytest.raises(ValueError, match="unknown mesh axes"):
        mesh_lib.get_rules([(n, "model" if n == "mlp" else a) for n, a in good])


def test_reordering_rules_would_change_activation_sharding():
    """Why the order check exists: Flax gives a mesh axis to the first rule claiming it."""
    import flax.linen as nn
    good = mesh_lib.get_rules("fsdp")
    reordered = good[2:] + good[:2]
    axes = ("batch", "length", "embed")
    assert nn.logical_to_mesh_axes(axes, good)[0] == ("data", "fsdp")
    assert nn.logical_to_mesh_axes(axes, reordered)[0] is None


def test_architecture_layout_is_current():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "docs" / "gen_layout.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_config_blocks_refuse_unknown_fields():
    from configs import common
    assert common.optimizer(lr=1e-3).lr == 1e-3
    assert common.data(extra=dict(crop_seconds=2.0)).crop_seconds == 2.0
    with pytest.raises(KeyError, match=r"no field\(s\) \['lrr'\]"):
        common.optimizer(lrr=1e-3)


def _family_initializers():
    """family -> PRNG key -> its (boxed) params or train state, from its tiny config."""
    import optax

    from audiolm_jax.models import (
        bark,
        bert,
        ctc,
        f5tts,
        hubert,
        mel_transformer,
        melody,
        mulan,
        musicgen,
    )
    from audiolm_jax.models.codec import train as codec_train
    from audiolm_jax.models.vocoder import train as vocoder_train
    from audiolm_jax.models.voicebox import train as voicebox_train
    from audiolm_jax.models.w2v_bert import W2vBertConfig
    from audiolm_jax.models.w2v_bert import pretrain as w2v_pretrain
    from configs.codec import tiny as codec_tiny
    from configs.mel_transformer import tiny as mel_tiny
    from configs.melody import tiny as melody_tiny
    from configs.mulan import tiny as mulan_tiny
    from configs.vocoder import tiny as vocoder_tiny
    from configs.voicebox import tiny as voicebox_tiny
    from configs.w2v_bert import tiny as w2v_tiny

    tx = optax.adam(1e-3)
    v = vocoder_tiny.get_config()
    vb = voicebox_tiny.get_config()
    vb.model.num_phones = 40
    c = codec_tiny.get_config()
    w = w2v_tiny.get_config()
    encoder = W2vBertConfig(**w.model.encoder.to_dict())
    features = jnp.zeros((1, 8, encoder.feature_projection_input_dim))
    bert_config = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32)
    ids = jnp.zeros((1, 4), jnp.int32)
    bark_stage = bark.BarkStageConfig(block_size=8, input_vocab_size=20, output_vocab_size=20,
                                      num_layers=1, num_heads=2, hidden_size=8, bias=True)
    bark_fine = bark.BarkStageConfig(block_size=8, input_vocab_size=20, output_vocab_size=20,
                                     num_layers=1, num_heads=2, hidden_size=8, n_codes_total=4,
                                     n_codes_given=1, tie_word_embeddings=False)
    return {
        "codec": codec_train.make_init_fn(codec_train.build_codec(c),
                                          codec_train.build_discriminator(c), c),
        "w2v_bert": w2v_pretrain.make_init_fn(w2v_pretrain.build_model(w), tx),
        "hubert": lambda rng: hubert.HuBERT(hubert.HubertConfig()).init(
            rng, jnp.zeros((1, 800)))["params"],
        "bert": lambda rng: bert.Bert(bert_config).init(rng, ids, ids > -1)["params"],
        "mulan": mulan.make_init_fn(mulan.MuLan(mulan.build_config(mulan_tiny.get_config().model)),
                                    tx),
        "melody": melody.make_init_fn(
            melody.MelodyEmbedder(melody.MelodyConfig(**melody_tiny.get_config().model.to_dict())),
            tx),
        "ctc": lambda rng: ctc.CTCRecognizer(encoder, 10).init(
            rng, features, jnp.ones((1, 8), bool))["params"],
        "mel_transformer": mel_transformer.make_init_fn(
            mel_transformer.build_model(mel_tiny.get_config()), tx),
        "vocoder": vocoder_train.make_init_fn(vocoder_train.build_vocos(v),
                                              vocoder_train.build_discriminators(v), v),
        "voicebox": voicebox_train.make_init_fn(voicebox_train.build_model(vb), vb),
        "bark": lambda rng: {
            "semantic": bark.causal_decoder(bark_stage).init(rng, ids)["params"],
            "fine": bark.BarkFine(bark_fine).init(rng, jnp.zeros((1, 4, 4), jnp.int32),
                                                 1)["params"]},
        "f5tts": lambda rng: f5tts.init_dit(f5tts.F5Config.tiny(), rng),
        "musicgen": lambda rng: musicgen.MusicGen(musicgen.MusicGenConfig.tiny()).init(
            rng, jnp.zeros((1, 2, 4), jnp.int32), ids, ids > -1)["params"],
    }


def test_every_family_parameter_axis_is_in_every_rule_table():
    """Walks every family's parameters (abstractly: no compute) and fails on a logical
    axis name that a rule table does not map: such a tensor would silently replicate."""
    import flax.linen as nn
    from jax.sharding import PartitionSpec

    inits = _family_initializers()
    assert set(inits) == set(FAMILIES)
    used = {}
    for family, init in inits.items():
        specs = nn.get_partition_spec(jax.eval_shape(init, jax.random.key(0)))
        for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)):
            if isinstance(spec, PartitionSpec):
                for name in spec:
                    for part in (name,) if isinstance(name, str) or name is None else name:
                        if part is not None:
                            used.setdefault(part, set()).add(family)
    assert {"embed", "codebook_size", "codebook_dim", "conv_out"} <= set(used)
    unmapped = {name: sorted(fams) for name, fams in used.items()
                if name not in mesh_lib.LOGICAL_AXES}
    assert not unmapped, f"logical axes no rule table maps: {unmapped}"
    for rules in mesh_lib.RULE_SETS.values():
        assert {n for n, _ in rules} >= set(used)
