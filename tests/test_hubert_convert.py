"""HuBERT import: every hidden layer equals `transformers.HubertModel` (random small configs)."""

import numpy as np
import pytest
import torch
import transformers

from audiolm_jax.convert.hubert import (
    convert_hubert,
    load_hubert,
    variables_from_state_dict,
)
from audiolm_jax.models.hubert.model import HuBERT, HubertConfig
from audiolm_jax.training.checkpointing import CheckpointMismatchError

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
CONFIGS = {
    # HuBERT base's structure: GroupNorm on the first conv, post-norm layers.
    "base_like": SMALL,
    # HuBERT large's: LayerNorm convs with bias, pre-norm layers, odd positional kernel.
    "large_like": dict(SMALL, feat_extract_norm="layer", conv_bias=True,
                       do_stable_layer_norm=True, num_conv_pos_embeddings=15,
                       feat_proj_layer_norm=False, num_hidden_layers=3),
}


def reference(name, seed=0):
    torch.manual_seed(seed)
    model = transformers.HubertModel(transformers.HubertConfig(**CONFIGS[name])).eval()
    with torch.no_grad():
        for p in model.parameters():   # move every weight off its init value
            p.add_(0.1 * torch.randn_like(p))
    return model


def hf_hidden_states(model, audio):
    with torch.no_grad():
        out = model(torch.from_numpy(audio), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states] + [out.last_hidden_state.numpy()]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_hidden_layer_matches_transformers(name, tmp_path):
    model = reference(name)
    audio = np.random.default_rng(1).standard_normal((2, 3200)).astype(np.float32)
    expected = hf_hidden_states(model, audio)
    model.save_pretrained(tmp_path / "hf")
    config, variables, out = convert_hubert(tmp_path / "hf", tmp_path / "export")
    hubert, loaded = load_hubert(out)
    ours = hubert.apply(loaded, audio)
    assert len(ours["hidden_states"]) == len(expected) - 1 == config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours["hidden_states"] + [ours["last_hidden_state"]],
                                   expected)):
        assert a.shape == b.shape, i
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, err_msg=f"hidden state {i}")
    assert ours["features"].shape[1] == config.num_frames(3200)


def test_ctc_checkpoint_keys_and_errors(tmp_path):
    model = transformers.HubertForCTC(transformers.HubertConfig(**SMALL, vocab_size=12))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    config = HubertConfig.from_hf(model.config)
    variables = variables_from_state_dict(state, config)     # lm_head skipped
    assert "encoder_layers_1" in variables["params"]
    bad = dict(state)
    bad["hubert.encoder.layers.0.attention.q_proj.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match="q_proj.weight.*shape"):
        variables_from_state_dict(bad, config)
    missing = {k: v for k, v in state.items() if "layers.1.final_layer_norm" not in k}
    with pytest.raises(CheckpointMismatchError, match="missing"):
        variables_from_state_dict(missing, config)
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        variables_from_state_dict({**state, "hubert.encoder.extra.weight": np.zeros(1)}, config)
    with pytest.raises(ValueError, match="shorter than one frame"):
        HuBERT(config).init(__import__("jax").random.key(0), np.zeros((1, 9), np.float32))


def test_cli_converts_and_refuses_other_models(tmp_path, capsys):
    from audiolm_jax.convert.__main__ import main

    reference("base_like").save_pretrained(tmp_path / "hf")
    assert main(["hubert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert "2 x 32 (post-norm), hop 20 samples" in capsys.readouterr().out
    hubert, variables = load_hubert(tmp_path / "out")
    assert hubert.config == HubertConfig.from_hf(reference("base_like").config)
    transformers.EncodecModel(transformers.EncodecConfig(num_filters=4, hidden_size=8,
                                                         num_lstm_layers=1)
                              ).save_pretrained(tmp_path / "encodec")
    assert main(["hubert", str(tmp_path / "encodec"), str(tmp_path / "out2")]) != 0
    assert "model_type 'encodec', not 'hubert'" in capsys.readouterr().err
