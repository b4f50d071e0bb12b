"""The codec's GAN trainer: both players learn, the step is mesh-invariant, and
`train/codec.py` writes checkpoints, evaluation artifacts and an export that
resumes and reloads.

A micro codec (8 kHz, two downsamplings, 64-code books) keeps compiles short.
"""

import json

import jax
import numpy as np
import pytest

from audiolm_jax.models.codec import train as codec_gan
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.export import load_exported
from audiolm_jax.training.loop import jit_train_step
from configs.codec import tiny


def micro_config(adversarial_start=0, steps=4, quantizer_warmup=0):
    c = tiny.get_config()
    c.model.seanet.update(num_filters=4, hidden_size=8, upsampling_ratios=(4, 4),
                          num_lstm_layers=0)
    # 8 kHz, hop 16 -> 500 frames/s; 6-bit codes -> 3 kbit/s per codebook.
    c.model.update(sample_rate=8000, codebook_size=64, target_bandwidths=(3.0, 6.0),
                   kmeans_iters=3)
    c.discriminator.update(stft_n_ffts=(128, 64), stft_filters=4)
    c.loss.mel.update(range_start=5, range_end=7, n_mels=16)
    c.loss.adversarial_start_step = adversarial_start
    c.loss.quantizer_warmup_steps = quantizer_warmup
    c.data.update(crop_seconds=0.1, batch_size=8, num_threads=1, eval_fraction=0.2)
    c.optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant")
    c.discriminator_optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant")
    c.train.update(num_steps=steps, log_every=1, save_every=2, eval_every=steps,
                   progress=False, async_checkpoints=False)
    c.eval.update(num_clips=2, clip_seconds=0.25, num_wavs=1)
    return c


def batch(n=8, samples=800, sample_rate=8000):
    t = np.arange(samples) / sample_rate
    rng = np.random.default_rng(0)
    audio = [0.4 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.02 * rng.standard_normal(samples)
             for i in range(n)]
    return {"audio": np.stack(audio).astype(np.float32)[..., None]}


def run_steps(config, mesh_shape, rules, devices, steps):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    codec, disc = codec_gan.build_codec(config), codec_gan.build_discriminator(config)
    init_fn = codec_gan.make_init_fn(codec, disc, config)
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    # A host copy of the starting weights (the step donates the state).
    initial = jax.device_get({player: state[player].params
                              for player in ("generator", "discriminator")})
    adversarial = config.loss.adversarial_start_step == 0
    step = jit_train_step(codec_gan.make_train_step(codec, disc, config, adversarial=adversarial),
                          shardings, mesh)
    data = mesh_lib.make_global_batch(batch(), mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(1))
            # Adam's first moment after each step: a running mean of the raw gradients
            # (no clipping in these configs), linear in them, so it compares the
            # gradients themselves where the Adam step (about lr * sign) cannot.
            metrics["first_moment"] = {player: state[player].opt_state[0].mu
                                       for player in ("generator", "discriminator")}
            history.append(jax.device_get(metrics))
    return state, history, initial


def test_one_discriminator_pass_gives_the_written_out_gradients():
    """The step's adversarial terms come from one discriminator pass on real and fake
    audio (`models.gan.players`): the balanced output gradient and the discriminator's
    gradient are those of the losses written out as two separate updates."""
    from audiolm_jax import losses as losses_lib
    from audiolm_jax.models.gan import players

    config = micro_config()
    disc = codec_gan.build_discriminator(config)
    x = jax.numpy.asarray(batch(n=2)["audio"])
    y = x[::-1] * 0.5
    params = disc.init(jax.random.key(0), x)["params"]
    balancer = codec_gan.make_balancer(config)
    apply = lambda p, a: disc.apply({"params": p}, a)

    def recon(y_):
        return {"l1": losses_lib.time_l1(y_, x)}

    def written_out(y_):
        fake_logits, fake_feats = apply(params, y_)
        _, real_feats = apply(params, x)
        return {**recon(y_), "adv": losses_lib.hinge_generator_loss(fake_logits),
                "feat": losses_lib.feature_matching_loss(real_feats, fake_feats)}

    @jax.jit
    def both(y):
        out = players.discriminator_pass(apply, params, x, y)
        adv, _, g_adv = out.generator_grad(
            lambda logits, feats: (losses_lib.hinge_generator_loss(logits), None))
        feat, _, g_feat = out.generator_grad(
            lambda logits, feats: (losses_lib.feature_matching_loss(out.real_features,
                                                                    feats), None))
        grad_y, _, metrics = balancer.balanced_output_grad(
            recon, y, balancer.init(), precomputed={"adv": (adv, g_adv), "feat": (feat, g_feat)})
        expected_y, _, expected_metrics = balancer.balanced_output_grad(written_out, y,
                                                                         balancer.init())
        expected_disc = jax.grad(lambda p: losses_lib.hinge_discriminator_loss(
            apply(p, x)[0], apply(p, y)[0]))(params)
        return (grad_y, out.discriminator_grads, metrics), (expected_y, expected_disc,
                                                            expected_metrics)

    ours, theirs = both(y)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        scale = float(np.max(np.abs(b))) + 1e-12
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-4)


@pytest.fixture(scope="module")
def adversarial_run():
    return run_steps(micro_config(adversarial_start=0, quantizer_warmup=1), (1, 1, 1), "dp",
                     jax.devices()[:1], 3)


def test_gan_step_updates_both_players_with_finite_metrics(adversarial_run):
    state, history, initial = adversarial_run
    for player in ("generator", "discriminator"):
        before = jax.tree.leaves(initial[player])
        after = jax.tree.leaves(state[player].params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), player
        assert int(state[player].step) == 3
    for metrics in history:
        for name, value in metrics.items():
            if name != "first_moment":
                assert np.isfinite(value), name
    last = history[-1]
    assert last["adversarial"] == 1.0 and last["disc_loss"] > 0 and last["feat"] > 0
    # The balancer tracks every loss's gradient norm.
    assert all(float(state["balancer"]["weight_sum"][k]) > 0 for k in ("l1", "mel", "adv", "feat"))
    # Step 0 was the quantizer warm-up (unquantized, codebooks untouched);
    # k-means then initialized the first codebook on the first quantized batch
    # (later books wait until quantizer dropout first activates them).
    assert [float(h["quantized"]) for h in history] == [0.0, 1.0, 1.0]
    assert history[0]["commitment"] == 0.0
    books = state["generator"].model_state["codebook"]["quantizer"]
    assert float(books["layers_0"]["initialized"]) == 1.0


def test_reconstruction_loss_drops_on_a_fixed_batch():
    config = micro_config(adversarial_start=10**6, steps=40)
    _, history, _ = run_steps(config, (1, 1, 1), "dp", jax.devices()[:1], 40)
    first = np.mean([h["mel"] for h in history[:3]])
    last = np.mean([h["mel"] for h in history[-3:]])
    assert last < 0.6 * first, (first, last)
    assert all(h["adversarial"] == 0.0 and h["disc_loss"] == 0.0 for h in history)


@pytest.mark.parametrize("shape,rules", [((8, 1, 1), "dp"), ((1, 8, 1), "fsdp"),
                                         ((2, 1, 4), "tp")])
def test_gan_step_is_the_same_on_8_devices(adversarial_run, shape, rules):
    assert len(jax.devices()) == 8
    ref_state, ref_history, _ = adversarial_run
    state, history, _ = run_steps(micro_config(adversarial_start=0, quantizer_warmup=1), shape,
                                  rules, jax.devices(), 3)
    b1 = micro_config().optimizer.b1
    for step, (ours, theirs) in enumerate(zip(history, ref_history)):
        # Losses, and the gradient norms: the generator's parameter gradient and each
        # balanced loss's gradient with respect to the reconstruction.
        for key in ("mel", "l1", "adv", "feat", "disc_loss", "commitment", "grad_norm",
                    "grad_norm_l1", "grad_norm_mel", "grad_norm_adv", "grad_norm_feat"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=2e-4, atol=1e-5,
                                       err_msg=f"{key} at step {step}")
        # Both players' gradients, element by element, through Adam's first moment
        # (step 0: mu = (1 - b1) * g). Measured: within 3e-6 of each leaf's largest
        # value for the generator and 2.5e-4 for the discriminator on every mesh; a
        # gradient off by a factor (a sum over devices instead of a mean) is off by
        # that factor here, while Adam's update of about lr * sign(g) would not show it.
        # (The logit biases' first gradients are exactly 0: with every logit inside the
        # hinge's margin, real and fake pull them equally.)
        for player in ("generator", "discriminator"):
            leaves = list(zip(
                jax.tree_util.tree_leaves_with_path(ours["first_moment"][player]),
                jax.tree.leaves(theirs["first_moment"][player])))
            assert sum(np.abs(b).max() > 0 for _, b in leaves) > 0.8 * len(leaves), player
            for (path, a), b in leaves:
                a, b = np.asarray(a) / (1 - b1), np.asarray(b) / (1 - b1)
                np.testing.assert_allclose(
                    a, b, rtol=0, atol=1e-3 * np.abs(b).max(),
                    err_msg=f"{player}{jax.tree_util.keystr(path)} at step {step}")
    # Adam turns the tiny float differences of another reduction order into
    # whole steps where a gradient is near zero and flips sign, so a few
    # elements may differ by up to 2 * lr per step; everything else agrees.
    for player in ("generator", "discriminator"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state[player].params),
                                jax.tree.leaves(ref_state[player].params)):
            a, b = np.asarray(a), np.asarray(b)
            off = ~np.isclose(a, b, atol=2e-4, rtol=2e-3)
            name = f"{player}{jax.tree_util.keystr(path)}"
            assert off.mean() < 0.01, (name, off.sum(), off.size)


def test_trainer_writes_eval_artifacts_export_and_resumes(tmp_path, audio_folder):
    from train.codec import train_and_evaluate

    config = micro_config(adversarial_start=2, steps=4)
    config.data.update(source="folder", folder=str(audio_folder))
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, workdir)
    assert result.last_step == 4
    step_dir = workdir / "eval" / "step_000004"
    assert (step_dir / "spectrograms.png").stat().st_size > 10_000
    assert (step_dir / "clip0_reference.wav").exists()
    assert (step_dir / "clip0_3kbps.wav").exists() and (step_dir / "clip0_6kbps.wav").exists()
    lines = (step_dir / "bitrate_table.md").read_text().splitlines()
    assert lines[0] == "# step 4: 2 held-out clips of 0.25 s"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["bandwidth (kbps)", "codebooks", "mel distance ↓", "SI-SNR (dB) ↑"]
    table = [[float(c) for c in line.strip("|").split("|")] for line in lines[4:] if line]
    # bandwidth = frame rate x bits per code x codebooks: 8000 Hz / hop (4 * 4) = 500
    # frames/s, log2(64) = 6 bits, so 3 kbps is 1 codebook and 6 kbps 2.
    frame_rate, bits = 8000 / (4 * 4), np.log2(64)
    assert [row[0] for row in table] == [3.0, 6.0]
    assert [row[1] for row in table] == [1.0, 2.0]
    for bandwidth, codebooks, _, _ in table:
        assert frame_rate * bits * codebooks == 1000 * bandwidth
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mel_distance_6kbps" in r]
    assert [r["step"] for r in evals] == [4]
    for bandwidth, _, mel, snr in table:   # the table shows the logged numbers
        assert mel == pytest.approx(evals[0][f"eval/mel_distance_{bandwidth:g}kbps"], abs=5e-4)
        assert snr == pytest.approx(evals[0][f"eval/si_snr_{bandwidth:g}kbps"], abs=5e-3)
    assert (workdir / "plots" / "losses.png").exists()

    config_dict, variables = load_exported(workdir / "export", expected_model="codec")
    assert config_dict["sample_rate"] == 8000
    assert set(variables) == {"params", "codebook"}

    # Resume: more steps continue from the checkpoint at step 4.
    config.train.num_steps = 6
    resumed = train_and_evaluate(config, workdir)
    assert resumed.start_step == 4 and resumed.last_step == 6


def test_bad_batch_size_for_mesh_is_named(tmp_path):
    from train.codec import train_and_evaluate

    config = micro_config()
    config.data.batch_size = 3
    with pytest.raises(ValueError, match="batch_size=3"):
        train_and_evaluate(config, tmp_path / "bad")
