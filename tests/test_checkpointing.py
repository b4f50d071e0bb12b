"""Orbax checkpoints: cross-mesh restore, wrong-model refusal, and a SIGTERM'd run
that resumes onto the same batches and the same loss curve."""

import hashlib
import os
import signal

import jax
import numpy as np
import pytest

from audiolm_jax.models import mel_transformer as mt
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.checkpointing import Checkpointer, CheckpointMismatchError
from audiolm_jax.training.optimizers import make_optimizer
from configs.mel_transformer import tiny
from train.mel_transformer import train_and_evaluate


def small_config(folder):
    c = tiny.get_config()
    c.model.update(embed_dim=32, num_layers=1, num_heads=2, mlp_dim=64, n_mels=16, n_fft=256,
                   hop_length=64)
    c.data.update(source="folder", folder=str(folder), crop_seconds=0.25, batch_size=8,
                  num_threads=1)
    c.optimizer.update(warmup_steps=2, decay_steps=12)
    c.train.update(num_steps=12, save_every=4, eval_every=0, log_every=1, progress=False,
                   async_checkpoints=True)
    return c


def init_state(config, mesh_shape, devices):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules("fsdp_tp")
    model = mt.build_model(config)
    init_fn = mt.make_init_fn(model, make_optimizer(config.optimizer))
    return init_fn, mesh, rules


def test_restore_onto_a_different_mesh(tmp_path, audio_folder):
    config = small_config(audio_folder)
    init_fn, mesh8, rules = init_state(config, (1, 4, 2), jax.devices())
    state, _ = state_lib.create_sharded_state(init_fn, mesh8, rules, jax.random.key(0))
    ckpt = Checkpointer(tmp_path / "ckpt", "mel_transformer", save_every=1)
    ckpt.save(7, state, {"next_index": 3}, force=True)
    ckpt.close()

    # Restore onto 2 devices laid out as tensor-parallel only.
    _, mesh2, _ = init_state(config, (1, 1, 2), jax.devices()[:2])
    abstract, _ = state_lib.abstract_state(init_fn, mesh2, rules, jax.random.key(0))
    restored, data_state, step = Checkpointer(tmp_path / "ckpt", "mel_transformer").restore(abstract)
    assert step == 7 and data_state == {"next_index": 3}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    qkv = restored.params["encoder"]["layer_0"]["attn"]["qkv"]
    assert qkv.sharding.mesh.devices.size == 2
    assert qkv.addressable_shards[0].data.shape == (32, 3, 1, 16)  # heads split over tensor=2


def test_checkpoint_of_another_model_is_refused(tmp_path, audio_folder):
    config = small_config(audio_folder)
    init_fn, mesh, rules = init_state(config, (8, 1, 1), jax.devices())
    state, _ = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    ckpt = Checkpointer(tmp_path / "ckpt", "codec", save_every=1)
    ckpt.save(1, state, force=True)
    ckpt.close()
    abstract, _ = state_lib.abstract_state(init_fn, mesh, rules, jax.random.key(0))
    with pytest.raises(CheckpointMismatchError, match="holds model 'codec'"):
        Checkpointer(tmp_path / "ckpt", "mel_transformer").restore(abstract)


class RecordingIterator:
    """Wraps the Grain iterator; records a fingerprint of every batch it yields and
    can send this process a real SIGTERM after a given batch."""

    def __init__(self, inner, sigterm_after=None):
        self.inner, self.sigterm_after, self.fingerprints = inner, sigterm_after, []

    def __next__(self):
        batch = next(self.inner)
        self.fingerprints.append(hashlib.sha1(batch["audio"].tobytes()).hexdigest()[:12])
        if self.sigterm_after == len(self.fingerprints):
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def pipeline_iter(config):
    from audiolm_jax.data.builder import source_from_config
    from train.mel_transformer import make_pipeline

    return iter(make_pipeline(config, source_from_config(config.data)))


def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, audio_folder):
    config = small_config(audio_folder)
    full = RecordingIterator(pipeline_iter(config))
    straight = train_and_evaluate(config, tmp_path / "straight", data_iter=full)
    assert straight.last_step == 12 and not straight.interrupted

    first = RecordingIterator(pipeline_iter(config), sigterm_after=6)
    part1 = train_and_evaluate(config, tmp_path / "resumed", data_iter=first)
    assert part1.interrupted and part1.last_step == 6      # saved at the signal, not at 4
    second = RecordingIterator(pipeline_iter(config))
    part2 = train_and_evaluate(config, tmp_path / "resumed", data_iter=second)
    assert part2.start_step == 6 and part2.last_step == 12

    assert first.fingerprints + second.fingerprints == full.fingerprints
    resumed_losses = [h["loss"] for h in part1.history + part2.history]
    np.testing.assert_allclose(resumed_losses, [h["loss"] for h in straight.history], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(part2.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
