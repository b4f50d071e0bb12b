"""The vocoder: shapes and bad input, its GAN trainer (both players learn, the mel
loss drops on a fixed batch, the step is mesh-invariant), and `train/vocoder.py`
(evaluation artifacts, export, resume).

A micro Vocos (8 kHz, n_fft 256, hop 64, 32 mels, two 16-wide blocks) and small
discriminators of all three groups keep the compiles short.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.models.vocoder import Vocos, VocosConfig, init_vocos, mel_features
from audiolm_jax.models.vocoder import train as vocoder_gan
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.export import load_exported
from audiolm_jax.training.loop import jit_train_step
from configs.vocoder import tiny


def micro_config(adversarial_start=0, steps=4):
    c = tiny.get_config()
    c.model.update(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, dim=16,
                   intermediate_dim=32, num_layers=2)
    c.discriminator.update(periods=(2, 3), period_channels=(4, 8, 8, 8, 8),
                           mrd_window_lengths=(256, 128), mrd_channels=4, stft_n_ffts=(128,),
                           stft_filters=4)
    c.loss.adversarial_weights.update(mpd=1.0, mrd=0.1, stft=0.5)
    c.loss.adversarial_start_step = adversarial_start
    c.data.update(crop_seconds=0.1, batch_size=8, num_threads=1, eval_fraction=0.2)
    c.optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant")
    c.discriminator_optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant")
    c.train.update(num_steps=steps, log_every=1, save_every=2, eval_every=steps,
                   progress=False, async_checkpoints=False)
    c.eval.update(num_clips=2, clip_seconds=0.25, num_wavs=1, griffin_lim_iters=4)
    return c


def batch(config, n=8):
    samples = vocoder_gan.crop_samples(config)
    t = np.arange(samples) / config.model.sample_rate
    rng = np.random.default_rng(0)
    audio = [0.4 * np.sin(2 * np.pi * (220 + 40 * i) * t) * np.sin(2 * np.pi * 7 * t)
             + 0.02 * rng.standard_normal(samples) for i in range(n)]
    return {"audio": np.stack(audio).astype(np.float32)[..., None]}


def run_steps(config, mesh_shape, rules, devices, steps):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    vocos = vocoder_gan.build_vocos(config)
    discs = vocoder_gan.build_discriminators(config)
    state, shardings = state_lib.create_sharded_state(
        vocoder_gan.make_init_fn(vocos, discs, config), mesh, rules, jax.random.key(0))
    initial = jax.device_get({p: state[p].params for p in ("generator", "discriminator")})
    adversarial = config.loss.adversarial_start_step == 0
    step = jit_train_step(vocoder_gan.make_train_step(vocos, discs, config,
                                                      adversarial=adversarial), shardings, mesh)
    data = mesh_lib.make_global_batch(batch(config), mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(1))
            history.append(jax.device_get(metrics))
    return jax.device_get(state), history, initial


@pytest.fixture(scope="module")
def adversarial_run():
    return run_steps(micro_config(), (1, 1, 1), "dp", jax.devices()[:1], 3)


def test_shapes_lengths_and_bad_input():
    for padding in ("center", "same"):
        config = VocosConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, dim=16,
                             intermediate_dim=32, num_layers=1, padding=padding)
        audio = jnp.zeros((2, 1000))
        features = mel_features(audio, config)
        assert features.shape == (2, config.num_frames(1000), 32)
        variables = init_vocos(config)
        out = Vocos(config).apply(variables, features)
        assert out.shape == (2, config.num_samples(features.shape[1]))
        assert abs(out.shape[1] - 1000) < config.hop_length
    with pytest.raises(ValueError, match="mono"):
        mel_features(jnp.zeros((1, 1000, 2)), config)
    with pytest.raises(ValueError, match=r"features \[batch, frames, 32\]"):
        Vocos(config).apply(variables, jnp.zeros((1, 10, 80)))
    with pytest.raises(ValueError, match="padding must be one of"):
        VocosConfig(padding="valid")
    conditioned = VocosConfig(n_mels=32, dim=16, intermediate_dim=32, num_layers=1,
                              adanorm_num_embeddings=2)
    with pytest.raises(ValueError, match="pass bandwidth_id"):
        Vocos(conditioned).apply(init_vocos(conditioned), jnp.zeros((1, 10, 32)))


def test_gan_step_updates_both_players_with_finite_metrics(adversarial_run):
    state, history, initial = adversarial_run
    for player in ("generator", "discriminator"):
        before, after = jax.tree.leaves(initial[player]), jax.tree.leaves(state[player].params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), player
    assert set(state["discriminator"].params) == {"mpd", "mrd", "stft"}
    for metrics in history:
        assert all(np.isfinite(v) for v in metrics.values())
    last = history[-1]
    assert last["adversarial"] == 1.0
    for group in ("mpd", "mrd", "stft"):
        assert last[f"disc_{group}"] > 0 and last[f"feat_{group}"] > 0, group


def test_mel_loss_drops_on_a_fixed_batch():
    config = micro_config(adversarial_start=10**6, steps=40)
    _, history, _ = run_steps(config, (1, 1, 1), "dp", jax.devices()[:1], 40)
    first = np.mean([h["mel"] for h in history[:3]])
    last = np.mean([h["mel"] for h in history[-3:]])
    assert last < 0.5 * first, (first, last)
    assert all(h["adversarial"] == 0.0 and h["disc_mpd"] == 0.0 for h in history)


def test_one_pass_gradients_equal_the_written_out_losses():
    """`make_gradient_fn` runs each discriminator once on real and once on fake audio;
    its gradients are those of the losses written out as two separate updates."""
    from audiolm_jax import losses as losses_lib

    config = micro_config()
    vocos, discs = vocoder_gan.build_vocos(config), vocoder_gan.build_discriminators(config)
    state = vocoder_gan.make_init_fn(vocos, discs, config)(jax.random.key(0))
    x = jnp.asarray(batch(config, n=2)["audio"])
    gen_grads, disc_grads, metrics = jax.jit(vocoder_gan.make_gradient_fn(
        vocos, discs, config, adversarial=True))(state, x)

    cfg, weights = vocos.config, config.loss.adversarial_weights
    disc_params = state["discriminator"].params
    features = mel_features(x, cfg)

    def generator_loss(params):
        y = vocos.apply({"params": params}, features)[..., None]
        total = config.loss.mel_weight * jnp.mean(jnp.abs(mel_features(y, cfg) - features))
        for group, d in discs.items():
            fake_logits, fake_feats = d.apply({"params": disc_params[group]}, y)
            _, real_feats = d.apply({"params": disc_params[group]}, x)
            total += weights[group] * (losses_lib.hinge_generator_loss(fake_logits)
                                       + losses_lib.feature_matching_loss(real_feats, fake_feats))
        return total, y

    (total, y), expected_gen = jax.jit(jax.value_and_grad(generator_loss, has_aux=True))(
        state["generator"].params)

    def discriminator_loss(params):
        return sum(losses_lib.hinge_discriminator_loss(d.apply({"params": params[g]}, x)[0],
                                                       d.apply({"params": params[g]}, y)[0])
                   for g, d in discs.items())

    expected_disc = jax.jit(jax.grad(discriminator_loss))(disc_params)
    np.testing.assert_allclose(metrics["generator_loss"], total, rtol=1e-5)
    for got, want in ((gen_grads, expected_gen), (disc_grads, expected_disc)):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
            scale = float(np.max(np.abs(b))) + 1e-12
            np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-4,
                                       err_msg=jax.tree_util.keystr(path))


def test_mel_settings_and_log_floor_are_checked():
    from audiolm_jax.models.vocoder import check_mel_settings

    config = VocosConfig(log_floor=1e-5)
    silence = mel_features(jnp.zeros((1, 2048)), config)
    np.testing.assert_allclose(silence, np.log(1e-5), rtol=1e-6)
    check_mel_settings(config, {"sample_rate": 24_000, "n_fft": 1024, "hop_length": 256,
                                "n_mels": 100, "log_floor": 1e-5})
    with pytest.raises(ValueError, match=r"log_floor 1e-07 \(vocoder: 1e-05\)"):
        check_mel_settings(config, {"sample_rate": 24_000, "n_fft": 1024, "hop_length": 256,
                                    "n_mels": 100})
    with pytest.raises(ValueError, match=r"n_mels 80 \(vocoder: 100\).*log_floor"):
        check_mel_settings(config, {"n_mels": 80, "log_floor": 1e-7})
    with pytest.raises(ValueError, match="log_floor must be positive"):
        VocosConfig(log_floor=0.0)


@pytest.mark.parametrize("shape,rules", [((8, 1, 1), "dp"), ((1, 8, 1), "fsdp"),
                                         ((2, 1, 4), "tp")])
def test_gan_step_is_the_same_on_8_devices(adversarial_run, shape, rules):
    assert len(jax.devices()) == 8
    ref_state, ref_history, _ = adversarial_run
    state, history, _ = run_steps(micro_config(), shape, rules, jax.devices(), 3)
    for step, (ours, theirs) in enumerate(zip(history, ref_history)):
        for key in sorted(theirs):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=2e-4, atol=1e-5,
                                       err_msg=f"{key} at step {step}")
    for player in ("generator", "discriminator"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state[player].params),
                                jax.tree.leaves(ref_state[player].params)):
            off = ~np.isclose(np.asarray(a), np.asarray(b), atol=2e-4, rtol=2e-3)
            assert off.mean() < 0.01, (player, jax.tree_util.keystr(path), off.sum())


def test_trainer_writes_eval_artifacts_export_and_resumes(tmp_path, audio_folder):
    from audiolm_jax.models.vocoder import load
    from train.vocoder import train_and_evaluate

    config = micro_config(adversarial_start=2, steps=4)
    config.data.update(source="folder", folder=str(audio_folder))
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, workdir)
    assert result.last_step == 4
    step_dir = workdir / "eval" / "step_000004"
    assert (step_dir / "spectrograms.png").stat().st_size > 10_000
    for name in ("reference", "vocoder", "griffin_lim"):
        assert (step_dir / f"clip0_{name}.wav").exists(), name
    table = (step_dir / "table.md").read_text()
    assert "| ground truth | 0.000 | 0.000 |" in table and "Griffin-Lim (4 iterations" in table
    assert (workdir / "plots" / "losses.png").exists()
    config_dict, variables = load_exported(workdir / "export", expected_model="vocoder")
    assert config_dict["sample_rate"] == 8000 and set(variables) == {"params"}
    vocos_config, _ = load(workdir)
    assert vocos_config.n_mels == 32

    config.train.num_steps = 6
    resumed = train_and_evaluate(config, workdir)
    assert resumed.start_step == 4 and resumed.last_step == 6


def test_committed_vocoder_loads_by_name_and_fits_voicebox():
    """`weights/vocoder_tiny` (the default decoder) shares Voicebox's mel settings, log
    floor included, and resynthesizes a buzz far closer to it than silence is."""
    from audiolm_jax.models import vocoder as vocoder_lib
    from configs.voicebox import common as voicebox_common

    config, variables = vocoder_lib.load(vocoder_lib.DEFAULT_VOCODER)
    vocoder_lib.check_mel_settings(config, voicebox_common.base_config().mel)
    t = np.arange(6144) / config.sample_rate
    buzz = 0.1 * sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 40))
    features = mel_features(buzz.astype(np.float32)[None], config)
    out = Vocos(config).apply(variables, features)
    assert out.shape == (1, 6144) and np.all(np.isfinite(out))
    error = float(jnp.mean(jnp.abs(mel_features(out, config) - features)))
    silence = float(jnp.mean(jnp.abs(mel_features(0 * out, config) - features)))
    assert error < 0.3 * silence, (error, silence)
