"""Voicebox: alignment and masks, the network's invariances, the flow-matching loss and
sampler, a loss that drops on a fixed batch, and the same step on 8 devices.

A micro network (2 layers x 32) keeps the compiles short.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sharded_steps import run_steps

from audiolm_jax.data import aligned
from audiolm_jax.layers.attention import MultiHeadAttention, alibi_bias
from audiolm_jax.models.voicebox import (
    VoiceboxConfig,
    VoiceboxTransformer,
    flow,
    guided_velocity,
    loss_fn,
    sample,
    training_mask,
)
from audiolm_jax.models.voicebox import train as vb_train
from audiolm_jax.sampling import ode
from audiolm_jax.text.vocab import PhonemeVocab
from audiolm_jax.training import state as state_lib
from configs.voicebox import tiny, tiny_duration

MICRO = VoiceboxConfig(feature_dim=8, num_phones=12, phone_embed_dim=8, dim=32, num_layers=2,
                       num_heads=4, conv_pos_kernel=5, conv_pos_groups=4)


def _inputs(batch=3, frames=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, 8)).astype(np.float32)
    phones = rng.integers(1, 12, (batch, frames)).astype(np.int32)
    lengths = np.array([frames, frames - 5, frames // 2][:batch])
    valid = np.arange(frames)[None] < lengths[:, None]
    return jnp.asarray(x), jnp.asarray(phones), jnp.asarray(valid)


def _random_params(model, x, phones, valid, seed=0):
    """Init, then perturb every weight (the zero-initialized output layer included),
    so invariance tests see a network whose output depends on its input."""
    params = model.init(jax.random.key(seed), x, x, phones, jnp.zeros(x.shape[0]),
                        valid)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [v + 0.1 * jax.random.normal(k, v.shape)
                                     for v, k in zip(leaves, keys)])


# ------------------------------------------------------------------ alignment and masks


def test_phone_durations_tile_the_frames():
    starts, ends = [0.11, 0.20, 0.2001, 0.45], [0.20, 0.2001, 0.45, 0.61]
    d = aligned.phone_durations(starts, ends, total_frames=80, frame_rate=93.75)
    assert d.sum() == 80 and len(d) == 6
    assert np.all(d[1:-1] >= 1)             # the 0.1 ms phone still gets a frame
    assert d[0] == round(0.11 * 93.75)       # leading silence up to the first phone
    with pytest.raises(ValueError, match="do not fit"):
        aligned.phone_durations(starts, ends, total_frames=3, frame_rate=93.75)
    with pytest.raises(ValueError, match="ordered"):
        aligned.phone_durations([0.3, 0.1], [0.4, 0.2], total_frames=80, frame_rate=93.75)


def test_aligned_example_crops_long_utterances_and_pads_short_ones():
    vocab = PhonemeVocab([aligned.SILENCE, "a", "b"])
    record = {"phonemes": ["a", "b", "a"], "phoneme_starts": [0.1, 0.3, 0.5],
              "phoneme_ends": [0.3, 0.5, 0.7]}
    sr, hop = 8000, 80                     # 100 frames / s
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32)   # 101 frames
    long = aligned.aligned_example(record, audio, vocab, aligned.AlignedExample(64, 8, hop), sr,
                                   np.random.default_rng(1))
    assert long["audio"].shape == (63 * hop,) and long["frame_valid"].all()
    assert long["durations"].sum() == 101 and long["phone_valid"].sum() == 5
    short = aligned.aligned_example(record, audio, vocab, aligned.AlignedExample(128, 8, hop), sr)
    assert short["frame_valid"].sum() == 101 and not short["frame_valid"][101:].any()
    sil, a, b = vocab.encode([aligned.SILENCE, "a", "b"])
    assert list(short["frame_phones"][[0, 15, 35, 55, 75]]) == [sil, a, b, a, sil]
    np.testing.assert_array_equal(short["frame_phones"][:101],
                                  aligned.frame_phones(short["phones"][:5],
                                                       short["durations"][:5]))


def test_gaps_become_pauses_and_pairs_join_one_speaker():
    phonemes, starts, ends = aligned.insert_pauses(["a", "b", "a"], [0.1, 0.3, 0.6],
                                                   [0.28, 0.5, 0.7], min_gap=0.05)
    assert phonemes == ["a", "b", aligned.PAUSE, "a"]       # 20 ms gap joins "a"; 100 ms
    assert starts[2:] == [0.5, 0.6] and ends[2] == 0.6       # is a pause of its own
    vocab = aligned.build_vocab([{"phonemes": ["b", "a"]}])
    assert vocab.phonemes == (aligned.SILENCE, aligned.PAUSE, "a", "b")
    sr, hop = 8000, 80
    rng = np.random.default_rng(0)
    records = [{"path": f"u{i}", "speaker": i // 2, "sample_rate": sr,
                "audio": 0.1 * rng.standard_normal(sr // 2 + 800 * i).astype(np.float32),
                "phonemes": ["a", "b"], "phoneme_starts": [0.1, 0.2], "phoneme_ends": [0.2, 0.3]}
               for i in range(4)]
    shapes = aligned.AlignedExample(256, 16, hop, pair_probability=1.0)
    pipeline = aligned.make_aligned_pipeline(records, vocab=vocab, sample_rate=sr, shapes=shapes,
                                             batch_size=4, seed=0, num_epochs=1,
                                             shard_index=0, shard_count=1)
    batch = next(iter(pipeline))
    sil, pause, a, b = vocab.encode([aligned.SILENCE, aligned.PAUSE, "a", "b"])
    for row in range(4):
        first = int(batch["prompt_frames"][row])         # every row is a joined pair here
        assert first in (50, 60, 70, 80)                 # the partner's length in frames
        ids = batch["phones"][row][batch["phone_valid"][row]]
        assert list(ids) == [sil, a, b, pause, a, b, sil]
        frames = batch["frame_phones"][row]
        assert frames[first - 1] == frames[first] == pause   # the gap spans the join
        speech = aligned.speech_frames(frames, batch["frame_valid"][row], vocab)
        assert speech.sum() == 4 * 10 and not speech[first]


def test_prompt_masks_give_a_prefix_as_context():
    valid = jnp.arange(40)[None] < jnp.asarray([40, 30, 20])[:, None]
    config = VoiceboxConfig(**{**MICRO.to_dict(), "p_prompt": 1.0, "p_random_frames": 0.0})
    prompt = jnp.asarray([12, 0, 0])
    for seed in range(4):
        mask = np.asarray(training_mask(jax.random.key(seed), valid, config, prompt))
        for row, n in zip(mask, (40, 30, 20)):
            idx = np.flatnonzero(row)
            assert idx[-1] == n - 1 and np.all(np.diff(idx) == 1)   # a suffix to the end
            assert 0.3 * n - 1 <= len(idx) <= 0.9 * n + 1
        assert np.flatnonzero(mask[0])[0] == 12            # a joined pair: exactly its prompt


def test_training_masks_stay_inside_valid_frames():
    valid = jnp.arange(50)[None] < jnp.asarray([50, 30, 3, 1])[:, None]
    for p_random in (0.0, 1.0):
        config = VoiceboxConfig(**{**MICRO.to_dict(), "p_random_frames": p_random})
        for seed in range(5):
            mask = np.asarray(training_mask(jax.random.key(seed), valid, config))
            assert not (mask & ~np.asarray(valid)).any()
            assert mask.sum(axis=1).min() >= 1          # never an empty target
            if p_random == 0.0:                          # one contiguous span, 70-100 %
                for row, n in zip(mask, (50, 30, 3, 1)):
                    idx = np.flatnonzero(row)
                    assert np.all(np.diff(idx) == 1)
                    assert 0.7 * n - 1 <= len(idx) <= n


# ------------------------------------------------------------------------- the network


def test_alibi_attention_uses_the_symmetric_distance_bias():
    bias = alibi_bias(4, 6)
    assert bias.shape == (1, 4, 6, 6) and np.allclose(bias, bias.transpose(0, 1, 3, 2))
    assert bias[0, 0, 0, 5] == -0.25 * 5 and bias[0, 3, 2, 2] == 0
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    attn = MultiHeadAttention(4, 4, positions="alibi")
    variables = nn.meta.unbox(attn.init(jax.random.key(1), x))
    out = attn.apply(variables, x)
    qkv = jnp.einsum("ble,ethd->blthd", x, variables["params"]["qkv"])
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0 + bias
    manual = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
    manual = jnp.einsum("blhd,hde->ble", manual, variables["params"]["out"])
    np.testing.assert_allclose(out, manual, atol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        MultiHeadAttention(4, 4, causal=True, positions="alibi").init(jax.random.key(1), x)


@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_padding_never_changes_valid_frames(positions):
    config = VoiceboxConfig(**{**MICRO.to_dict(), "attention_positions": positions})
    model = VoiceboxTransformer(config)
    x, phones, valid = _inputs()
    params = _random_params(model, x, phones, valid)
    t = jnp.asarray([0.1, 0.5, 0.9])
    out = model.apply({"params": params}, x, x, phones, t, valid)
    noise = jnp.where(valid[..., None], 0.0, 100.0)
    other = model.apply({"params": params}, x + noise, x - noise,
                        jnp.where(valid, phones, 7), t, valid)
    np.testing.assert_allclose(np.where(valid[..., None], out, 0),
                               np.where(valid[..., None], other, 0), atol=1e-4)
    # The time input matters, and dropping the condition changes the output.
    assert not np.allclose(out, model.apply({"params": params}, x, x, phones, 1 - t, valid))
    dropped = model.apply({"params": params}, x, x, phones, t, valid, jnp.ones(3, bool))
    assert not np.allclose(out, dropped)
    same = model.apply({"params": params}, x, jnp.zeros_like(x), jnp.zeros_like(phones), t,
                       valid)
    np.testing.assert_allclose(dropped, same, atol=1e-5)


def test_time_reaches_every_frame_under_alibi():
    # Under ALiBi a prepended time frame fades with distance; added to every frame it
    # must change the output at the far end of a long sequence as much as at its start.
    model = VoiceboxTransformer(MICRO)
    x, phones, valid = _inputs(batch=1, frames=400)
    params = _random_params(model, x, phones, valid)
    out = lambda t: model.apply({"params": params}, x, x, phones, jnp.asarray([t]), valid)
    change = np.abs(np.asarray(out(0.1) - out(0.9)))[0].mean(-1)
    assert change.min() > 0.2 * change.mean(), (change[:5], change[-5:])


def test_per_bin_statistics_round_trip():
    mean, std = tuple(np.linspace(-3, 1, 8)), tuple(np.linspace(1, 2, 8))
    config = VoiceboxConfig(**{**MICRO.to_dict(), "feature_mean": mean, "feature_std": std})
    assert VoiceboxConfig.from_dict(config.to_dict()) == config
    x, _, _ = _inputs()
    z = flow.normalize(x, config)
    np.testing.assert_allclose(z[0, 0], (np.asarray(x)[0, 0] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(flow.denormalize(z, config), x, atol=1e-5)
    with pytest.raises(ValueError, match="feature_dim=8"):
        VoiceboxConfig(**{**MICRO.to_dict(), "feature_mean": (0.0, 1.0)})
    with pytest.raises(ValueError, match="p_uncond must be 0"):
        VoiceboxConfig(**{**MICRO.to_dict(), "objective": "regression"})


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="num_layers must be even"):
        VoiceboxConfig(num_layers=3)
    with pytest.raises(ValueError, match="objective must be one of"):
        VoiceboxConfig(objective="diffusion")
    with pytest.raises(ValueError, match="span_fraction"):
        VoiceboxConfig(span_fraction=(0.9, 0.5))
    model = VoiceboxTransformer(MICRO)
    x, phones, valid = _inputs()
    with pytest.raises(ValueError, match=r"\[batch, frames, 8\]"):
        model.init(jax.random.key(0), x[..., :4], x[..., :4], phones, jnp.zeros(3), valid)


# ----------------------------------------------------------------- loss and sampler


def test_flow_loss_counts_only_masked_frames_and_regression_is_l1():
    model = VoiceboxTransformer(MICRO)
    x, phones, valid = _inputs()
    params = model.init(jax.random.key(0), x, x, phones, jnp.zeros(3), valid)["params"]
    mask = jnp.zeros_like(valid).at[:, 2:6].set(True)
    loss, metrics = loss_fn(model, params, x, phones, valid, jax.random.key(1), mask)
    # The output layer starts at zero, so the loss is |x1 - (1 - sigma) x0|^2 on masked
    # frames: about 2 per value for unit-variance data and noise.
    assert 1.0 < float(loss) < 3.0
    assert float(metrics["masked_fraction"]) == pytest.approx(
        float(np.mean(4 / np.asarray(valid).sum(1))))
    far = x.at[:, 10:].add(50.0)      # unmasked frames are context, not targets
    far_loss, _ = loss_fn(model, params, far, phones, valid, jax.random.key(1), mask)
    assert float(far_loss) == pytest.approx(float(loss), rel=1e-5)
    regression = VoiceboxTransformer(VoiceboxConfig(**{**MICRO.to_dict(),
                                                       "objective": "regression",
                                                       "p_uncond": 0.0}))
    l1, _ = loss_fn(regression, params, x, phones, valid, jax.random.key(1), mask)
    expected = np.mean(np.abs(np.asarray(x)[:, 2:6]))
    assert float(l1) == pytest.approx(expected, rel=1e-5)


def test_sampler_keeps_context_and_guidance_combines_both_halves():
    model = VoiceboxTransformer(MICRO)
    x, phones, valid = _inputs()
    params = _random_params(model, x, phones, valid)
    mask = jnp.zeros_like(valid).at[:, 5:12].set(True)
    out = sample(model, params, x, mask, phones, valid, jax.random.key(0), num_steps=4,
                 method="heun", guidance=0.5)
    keep = np.asarray(valid & ~mask)
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(x)[keep])
    assert np.all(np.asarray(out)[~np.asarray(valid)] == 0)
    assert not np.allclose(np.asarray(out)[np.asarray(mask & valid)], 0)
    context = jnp.where(mask[..., None], 0.0, x)
    v = guided_velocity(model, params, context, phones, valid, 0.5)(x, jnp.float32(0.3))
    t = jnp.full((3,), 0.3)
    cond = model.apply({"params": params}, x, context, phones, t, valid)
    uncond = model.apply({"params": params}, x, context, phones, t, valid, jnp.ones(3, bool))
    np.testing.assert_allclose(v, 1.5 * cond - 0.5 * uncond, atol=1e-4)
    assert ode.num_function_evals("heun", 4) == 8


def _micro_trainer_config(rules="dp"):
    c = tiny_duration.get_config()  # one frame per phone: no mel needed for this test
    c.model.update(MICRO.to_dict())
    c.model.feature_dim = 1
    c.data.update(max_phones=16, batch_size=8)
    c.optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant", grad_clip_norm=0.0)
    c.mesh.rules = rules
    return c


def _duration_batch(seed=0):
    rng = np.random.default_rng(seed)
    phones = rng.integers(1, 12, (8, 16)).astype(np.int32)
    # A learnable rule: each phone id has its own duration.
    durations = (2 + phones % 5 * 3).astype(np.int32)
    valid = np.arange(16)[None] < rng.integers(8, 17, 8)[:, None]
    return {"phones": phones, "durations": durations, "phone_valid": valid}


def _run(config, mesh_shape, devices, steps, batch):
    model = vb_train.build_model(config)
    return run_steps(vb_train.make_init_fn(model, config), vb_train.make_train_step(model, config),
                     config.mesh.rules, mesh_shape, devices, batch, steps)


def test_loss_drops_on_a_fixed_batch():
    config = _micro_trainer_config()
    config.model.update(objective="regression", p_uncond=0.0)  # deterministic: a clean signal
    _, history = _run(config, (1, 1, 1), jax.devices()[:1], 60, _duration_batch())
    first, last = history[0]["loss"], np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.5 * first, (first, last)


@pytest.fixture(scope="module")
def one_device_run():
    return _run(_micro_trainer_config(), (1, 1, 1), jax.devices()[:1], 2, _duration_batch())


@pytest.mark.parametrize("shape,rules", [((8, 1, 1), "dp"), ((1, 8, 1), "fsdp"),
                                         ((2, 1, 4), "tp")])
def test_train_step_is_the_same_on_8_devices(one_device_run, shape, rules):
    assert len(jax.devices()) == 8
    ref_state, ref = one_device_run
    state, ours = _run(_micro_trainer_config(rules), shape, jax.devices(), 2, _duration_batch())
    # Step 0 compares the gradients of the same weights; by step 1 Adam has turned
    # float rounding of another reduction order into slightly different weights.
    for step, (a, b) in enumerate(zip(ours, ref)):
        for key in ("loss", "grad_norm", "masked_fraction"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4 if step == 0 else 1e-3,
                                       atol=1e-6, err_msg=f"{key} at step {step}")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state.params),
                            jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-3,
                                   err_msg=jax.tree_util.keystr(path))


def test_the_weights_ema_follows_the_params():
    config = _micro_trainer_config()
    config.ema_decay = 0.999
    state, _ = _run(config, (1, 1, 1), jax.devices()[:1], 1, _duration_batch())
    initial, _ = _run(config, (1, 1, 1), jax.devices()[:1], 0, _duration_batch())
    decay = float(state_lib.ema_decay_at(0, 0.999))
    assert decay == pytest.approx(0.1)
    assert float(state_lib.ema_decay_at(10_000, 0.999)) == pytest.approx(0.999)
    for ema, init, new in zip(jax.tree.leaves(state_lib.inference_params(state)),
                              jax.tree.leaves(initial.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(ema, decay * init + (1 - decay) * new, atol=1e-6)


def test_audio_features_are_the_vocoder_log_mel():
    config = tiny.get_config()
    audio = np.random.default_rng(0).standard_normal((2, 255 * 256)).astype(np.float32) * 0.1
    batch = {"audio": audio, "frame_phones": np.ones((2, 256), np.int32),
             "frame_valid": np.ones((2, 256), bool)}
    mel, phones, valid = vb_train.batch_features(batch, config)
    assert mel.shape == (2, 256, 100) and phones.shape == valid.shape == (2, 256)
    from audiolm_jax.models.vocoder import VocosConfig, mel_features
    np.testing.assert_allclose(mel, mel_features(audio, VocosConfig()), atol=1e-5)
    durations = flow.denormalize(flow.normalize(vb_train.log_durations(jnp.asarray([[3]])),
                                                VoiceboxConfig()), VoiceboxConfig())
    assert float(durations[0, 0, 0]) == pytest.approx(np.log(4.0))


def test_speed_benchmark_runs_its_jax_half():
    # benchmarks/voicebox_speed.py without its torch peer, at a micro shape: a train-step
    # row and a guided-sampling row (4 passes = 1 midpoint step x 2 evaluations x 2
    # halves), each with a time, FLOPs and (sampling) a real-time factor.
    from benchmarks import voicebox_speed

    table = voicebox_speed.main(["--jax-only", "--depth", "2", "--width", "64", "--heads", "2",
                                 "--batch", "1", "--frames", "16", "--repeats", "1",
                                 "--passes", "4"])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [r[:3] for r in rows] == [["train step (fwd + bwd + AdamW)", "-", "-"],
                                     ["sample", "1 midpoint", "4"]]
    for r in rows:
        assert float(r[3].replace(",", "")) > 0 and float(r[6]) > 0 and r[4] == r[7] == "-"
    assert float(rows[1][8]) > 0 and rows[0][8] == "-"
