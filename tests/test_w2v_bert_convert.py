"""w2v-BERT 2.0 import: every hidden layer equals `transformers.Wav2Vec2BertModel`.

Raw 16 kHz audio goes through each side's own front end (our JAX Kaldi fbank,
HF's numpy `SeamlessM4TFeatureExtractor`), so the feature extraction is part of
the comparison.
"""

import jax
import numpy as np
import pytest
import torch
import transformers

from audiolm_jax.audio.fbank import FbankConfig, stacked_features
from audiolm_jax.convert.w2v_bert import convert_w2v_bert, load_w2v_bert, variables_from_state_dict
from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig, encode_audio
from audiolm_jax.training.checkpointing import CheckpointMismatchError

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             conv_depthwise_kernel_size=5, left_max_position_embeddings=6,
             right_max_position_embeddings=3)
CONFIGS = {
    # w2v-BERT 2.0's structure: relative-key attention, swish, 50 Hz (stride 2).
    "w2v_bert_2": (SMALL, 2),
    # Transformer-XL relative positions, GELU, odd eps, 25 Hz (4 stacked frames).
    "relative_25hz": (dict(SMALL, position_embeddings_type="relative", hidden_act="gelu",
                           conv_depthwise_kernel_size=7, layer_norm_eps=1e-6,
                           feature_projection_input_dim=320, num_hidden_layers=3), 4),
    # Rotary positions.
    "rotary": (dict(SMALL, position_embeddings_type="rotary"), 2),
}
# Our fbank runs a float32 FFT where HF's runs float64: the normalized features
# differ by up to ~1.2e-4 in the lowest mel bins (pre-emphasis leaves them little
# energy), which the encoder's LayerNorm and projections shrink to < 1e-4.
FEATURE_ATOL = 2.5e-4


def reference(name, seed=0):
    kwargs, _ = CONFIGS[name]
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2BertModel(transformers.Wav2Vec2BertConfig(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():   # move every weight off its init value
            p.add_(0.1 * torch.randn_like(p))
    return model


def audio_batch():
    rng = np.random.default_rng(1)
    lengths = np.array([16_000, 11_111])
    audio = np.zeros((2, 16_000), np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * rng.standard_normal(n)
    return audio, lengths


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_hidden_layer_matches_transformers(name, tmp_path):
    model = reference(name)
    stride = CONFIGS[name][1]
    audio, lengths = audio_batch()
    extractor = transformers.SeamlessM4TFeatureExtractor(stride=stride)
    inputs = extractor([a[:n] for a, n in zip(audio, lengths)], sampling_rate=16_000,
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(inputs["input_features"], attention_mask=inputs["attention_mask"],
                    output_hidden_states=True)
    model.save_pretrained(tmp_path / "hf")
    config, _, export = convert_w2v_bert(tmp_path / "hf", tmp_path / "export")
    assert config.stride == stride
    encoder, variables = load_w2v_bert(export)
    ours = encode_audio(encoder, variables, audio, lengths)
    np.testing.assert_array_equal(np.asarray(ours["mask"]), inputs["attention_mask"].numpy() > 0)
    valid = np.asarray(ours["mask"])
    np.testing.assert_allclose(np.asarray(ours["features"]), inputs["input_features"].numpy(),
                               atol=FEATURE_ATOL)
    assert len(ours["hidden_states"]) == len(out.hidden_states) == config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours["hidden_states"] + [ours["last_hidden_state"]],
                                   list(out.hidden_states) + [out.last_hidden_state])):
        # Padded frames hold no signal in either implementation; compare valid frames.
        np.testing.assert_allclose(np.asarray(a)[valid], b.numpy()[valid], atol=1e-4,
                                   err_msg=f"hidden state {i}")


def test_ctc_checkpoint_keys_and_errors():
    kwargs = CONFIGS["w2v_bert_2"][0]
    model = transformers.Wav2Vec2BertForCTC(transformers.Wav2Vec2BertConfig(**kwargs,
                                                                            vocab_size=12))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    config = W2vBertConfig.from_hf(model.config)
    variables = variables_from_state_dict(state, config)       # lm_head skipped
    assert "encoder_layers_1" in variables["params"]
    bad = dict(state)
    bad["wav2vec2_bert.encoder.layers.0.self_attn.linear_q.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match="linear_q.weight.*shape"):
        variables_from_state_dict(bad, config)
    missing = {k: v for k, v in state.items() if "layers.1.conv_module.depthwise_conv" not in k}
    with pytest.raises(CheckpointMismatchError, match="missing.*depthwise_conv"):
        variables_from_state_dict(missing, config)
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        variables_from_state_dict({**state, "wav2vec2_bert.encoder.extra.weight": np.zeros(1)},
                                  config)
    with pytest.raises(CheckpointMismatchError, match="adapter"):
        variables_from_state_dict({**state, "wav2vec2_bert.adapter.layers.0.x": np.zeros(1)},
                                  config)
    with pytest.raises(ValueError, match="add_adapter"):
        W2vBertConfig.from_hf(transformers.Wav2Vec2BertConfig(**kwargs, add_adapter=True))


def test_short_audio_and_bad_features_are_refused():
    with pytest.raises(ValueError, match="shorter than one encoder frame.*560 samples"):
        stacked_features(np.zeros((1, 500), np.float32), config=FbankConfig())
    features, mask = stacked_features(np.zeros((1, 560), np.float32) + 0.01)
    assert features.shape == (1, 1, 160) and bool(mask.all())
    encoder = W2vBert(W2vBertConfig(**CONFIGS["w2v_bert_2"][0]))
    with pytest.raises(ValueError, match=r"features \[batch, frames, 160\]"):
        encoder.init(jax.random.key(0), np.zeros((1, 4, 80), np.float32))


def test_cli_converts_and_refuses_other_models(tmp_path, capsys):
    from audiolm_jax.convert.__main__ import main

    reference("w2v_bert_2").save_pretrained(tmp_path / "hf")
    assert main(["w2v-bert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert "2 x 32 Conformer, relative_key positions, 50 frames/s" in capsys.readouterr().out
    encoder, _ = load_w2v_bert(tmp_path / "out")
    assert encoder.config == W2vBertConfig.from_hf(reference("w2v_bert_2").config)
    transformers.HubertModel(transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path / "hubert")
    assert main(["w2v-bert", str(tmp_path / "hubert"), str(tmp_path / "out2")]) != 0
    assert "model_type 'hubert', not 'wav2vec2-bert'" in capsys.readouterr().err
