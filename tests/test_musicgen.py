"""MusicGen against transformers' `MusicgenForConditionalGeneration` with random weights
(two configs): teacher-forced logits, the delay pattern, greedy guided generation (codes,
logits, audio), the converter's export and errors, fine-tuning, and `infer/music.py`."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from tiny_t5 import write_tiny_tokenizer

from audiolm_jax.convert.__main__ import main as convert_main
from audiolm_jax.convert.musicgen import musicgen_params
from audiolm_jax.models import musicgen
from audiolm_jax.models.musicgen import generation as gen
from audiolm_jax.models.musicgen.model import MusicGen, MusicGenConfig, null_context
from audiolm_jax.sampling.logits import classifier_free_guidance
from audiolm_jax.training.checkpointing import CheckpointMismatchError

CODES = 64            # codes per book (the tiny codec's and decoder's vocabulary)
BOOKS = 4             # 1.2 kbps of 64-code books (musicgen-small: 2.2 kbps of 2048)
CODEC = dict(model_type="encodec", sampling_rate=32_000, num_filters=4, hidden_size=16,
             upsampling_ratios=[8, 5, 4, 4], codebook_size=CODES, target_bandwidths=[1.2],
             use_causal_conv=False, normalize=False, pad_mode="reflect",
             use_conv_shortcut=False, num_lstm_layers=2)
CONFIGS = {
    # relu T5 narrower than the decoder: a text projection.
    "projected": dict(
        text=dict(d_model=24, d_kv=6, d_ff=48, num_layers=2, num_heads=4,
                  feed_forward_proj="relu"),
        decoder=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64)),
    # gated-gelu T5 as wide as the decoder: no projection; 3 heads of 16, 3 layers.
    "same_width": dict(
        text=dict(d_model=48, d_kv=8, d_ff=64, num_layers=1, num_heads=6,
                  feed_forward_proj="gated-gelu"),
        decoder=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, ffn_dim=96)),
}
NEW_TOKENS = 12       # transformers' max_new_tokens: 12 + 1 - BOOKS = 9 frames
CAPTIONS = ["a calm piano melody with soft strings", "jazz drum and bass"]


def hf_model(name: str):
    torch.manual_seed(0)
    c = CONFIGS[name]
    config = transformers.MusicgenConfig(
        text_encoder=dict(model_type="t5", vocab_size=100, relative_attention_num_buckets=8,
                          relative_attention_max_distance=16, **c["text"]),
        audio_encoder=CODEC,
        decoder=dict(vocab_size=CODES, num_codebooks=BOOKS, pad_token_id=CODES,
                     bos_token_id=CODES, **c["decoder"]))
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():   # peaked heads: greedy steps with clear top-2 margins
        for head in model.decoder.lm_heads:
            head.weight.mul_(100.0)
    return model


_CONVERTED: dict = {}


def convert_config(name: str, tmp_path_factory):
    """(transformers model, HF directory, our pipeline) for a config, built once per
    session: saved with `save_pretrained` beside a tokenizer.json and converted through
    the `convert` command line."""
    if name not in _CONVERTED:
        root = tmp_path_factory.mktemp(f"musicgen_{name}")
        model = hf_model(name)
        model.save_pretrained(root / "hf")
        write_tiny_tokenizer(root / "hf")
        assert convert_main(["musicgen", str(root / "hf"), str(root / "export")]) == 0
        _CONVERTED[name] = (model, root / "hf", musicgen.load(root / "export"))
    return _CONVERTED[name]


@pytest.fixture(scope="module", params=list(CONFIGS))
def converted(request, tmp_path_factory):
    """Every config: for the parity checks."""
    return convert_config(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def projected(tmp_path_factory):
    """The first config alone: for what one config covers (CLI, prompts, windows, tuning)."""
    return convert_config("projected", tmp_path_factory)


def text_inputs(pipe):
    ids, mask = pipe.tokenize(CAPTIONS)
    assert mask.sum(1).tolist() != [ids.shape[1]] * 2          # one row is padded
    return ids, mask


def hf_logits_to_frames(logits: np.ndarray, frames: int) -> np.ndarray:
    """[b, K, steps, V] per-step logits -> [b, frames, K, V] per (frame, book)."""
    return np.stack([logits[:, q, q:q + frames] for q in range(BOOKS)], axis=2)


def delayed_input(codes: np.ndarray) -> torch.Tensor:
    """[b, T, K] codes -> transformers' decoder_input_ids [b * K, T + K - 1]: the start
    column, then the delay pattern (`build_delay_pattern_mask`), last step dropped."""
    b, t, _ = codes.shape
    seq = torch.tensor(codes).permute(0, 2, 1).reshape(b * BOOKS, t)
    ids = torch.cat([torch.full((b * BOOKS, 1), CODES), seq, torch.full((b * BOOKS, BOOKS - 1),
                                                                        CODES)], 1)
    _, pattern = transformers.MusicgenForCausalLM.build_delay_pattern_mask(
        _DelayHost, ids[:, :t + 1], pad_token_id=CODES, max_length=t + BOOKS)
    return transformers.MusicgenForCausalLM.apply_delay_pattern_mask(ids, pattern)[:, :-1]


class _DelayHost:
    """The attributes `build_delay_pattern_mask` reads from its model."""
    num_codebooks = BOOKS
    config = type("C", (), {"audio_channels": 1})


def test_logits_match_transformers(converted):
    model, _, pipe = converted
    ids, mask = text_inputs(pipe)
    codes = np.random.default_rng(0).integers(0, CODES, (2, 7, BOOKS))
    ours = pipe.model.apply({"params": pipe.params}, jnp.asarray(codes), jnp.asarray(ids),
                            jnp.asarray(mask, bool))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    decoder_input_ids=delayed_input(codes)).logits
    ref = hf_logits_to_frames(ref.reshape(2, BOOKS, -1, CODES).numpy(), 7)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)


def test_delay_pattern_matches_build_delay_pattern_mask():
    """The start step then `StreamLayout.to_sequence` is transformers' pattern (its start
    column included), for every step of a run of T frames."""
    t = 6
    codes = np.random.default_rng(1).integers(0, CODES, (2, t, BOOKS))
    ids = torch.cat([torch.full((2 * BOOKS, 1), CODES),
                     torch.tensor(codes).permute(0, 2, 1).reshape(2 * BOOKS, t)], 1)
    _, pattern = transformers.MusicgenForCausalLM.build_delay_pattern_mask(
        _DelayHost, ids, pad_token_id=CODES, max_length=t + BOOKS)
    ref = transformers.MusicgenForCausalLM.apply_delay_pattern_mask(
        torch.cat([ids, torch.full((2 * BOOKS, BOOKS - 1), CODES)], 1), pattern)
    layout = MusicGenConfig.tiny(codebook_size=CODES).layout
    ours = np.concatenate([np.full((2, 1, BOOKS), CODES),
                           np.asarray(layout.to_sequence(jnp.asarray(codes)))], axis=1)
    np.testing.assert_array_equal(ours.transpose(0, 2, 1).reshape(2 * BOOKS, -1), ref.numpy())
    np.testing.assert_array_equal(np.asarray(layout.from_sequence(jnp.asarray(ours[:, 1:]))),
                                  codes)


def test_guided_greedy_generation_matches_transformers(converted):
    """guidance 3, greedy: the same codes, the guided logits along them within 1e-4 of
    transformers' scores at every step (whose top-2 margins exceed 1e-3), the same audio."""
    model, _, pipe = converted
    ids, mask = text_inputs(pipe)
    captured = {}
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured["codes"] = codes.clone()
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 do_sample=False, guidance_scale=3.0, max_new_tokens=NEW_TOKENS,
                                 return_dict_in_generate=True, output_scores=True)
    finally:
        model.audio_encoder.decode = decode
    ref_codes = captured["codes"][0].permute(0, 2, 1).numpy()                 # [b, T, K]
    frames = ref_codes.shape[1]
    scores = np.stack([s.numpy() for s in out.scores], 1).reshape(2, BOOKS, -1, CODES)
    ref_logits = hf_logits_to_frames(scores, frames)                          # [b, T, K, V]
    top2 = np.sort(ref_logits, -1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-3

    settings = gen.SamplingSettings(guidance_scale=3.0, temperature=0.0, top_k=0)
    codes = pipe.generate_codes(ids, mask, frames, settings, progress=False)
    np.testing.assert_array_equal(codes, ref_codes)

    context, context_mask = pipe.encode_text(ids, mask)
    null, null_mask = null_context(context)
    apply = jax.jit(lambda c, m: pipe.model.apply({"params": pipe.params}, jnp.asarray(codes),
                                                  c, m, method=MusicGen.logits))
    guided = classifier_free_guidance(apply(context, context_mask), apply(null, null_mask), 3.0,
                                      space="logits")
    np.testing.assert_allclose(np.asarray(guided), ref_logits, atol=1e-4, rtol=0)

    audio = pipe.decode(codes)
    np.testing.assert_allclose(audio, out.sequences[:, 0].numpy(), atol=1e-4, rtol=0)


def test_continuing_an_audio_prompt_matches_transformers(projected):
    """A clip as the prompt (transformers' `input_values`): greedy guided codes after it
    are the same, and so is the audio of clip and continuation."""
    model, _, pipe = projected
    ids, mask = text_inputs(pipe)
    clip = 0.1 * np.random.default_rng(3).standard_normal((2, 5 * 640)).astype(np.float32)
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             input_values=torch.tensor(clip[:, None]), do_sample=False,
                             guidance_scale=3.0, max_new_tokens=NEW_TOKENS)
    settings = gen.SamplingSettings(guidance_scale=3.0, temperature=0.0, top_k=0)
    frames = NEW_TOKENS + 1 - BOOKS
    ours = pipe.generate(CAPTIONS, seconds=frames / 50, settings=settings, progress=False,
                         prompt_audio=clip, prompt_sample_rate=32_000)
    assert ours.shape == (2, (5 + frames) * 640) == ref[:, 0].shape
    np.testing.assert_allclose(ours, ref[:, 0].numpy(), atol=1e-4, rtol=0)


def test_converter_names_bad_weights(converted):
    model, hf_dir, pipe = converted
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    musicgen_params(state, pipe.config)                                       # the full set
    missing = dict(state)
    del missing["decoder.model.decoder.layers.1.encoder_attn.k_proj.weight"]
    with pytest.raises(CheckpointMismatchError, match="cross_attn/kv"):
        musicgen_params(missing, pipe.config)
    wrong = {**state, "decoder.lm_heads.2.weight": np.zeros((CODES + 1, 1))}
    with pytest.raises(CheckpointMismatchError, match="logits"):
        musicgen_params(wrong, pipe.config)
    extra = {**state, "decoder.model.decoder.layers.0.self_attn.rotary.weight": np.zeros(2)}
    with pytest.raises(CheckpointMismatchError, match="rotary"):
        musicgen_params(extra, pipe.config)


def test_convert_refuses_other_directories(tmp_path, capsys):
    import json

    melody = tmp_path / "melody"
    melody.mkdir()
    (melody / "config.json").write_text(json.dumps({"model_type": "musicgen_melody"}))
    assert convert_main(["musicgen", str(melody), str(tmp_path / "out")]) == 1
    assert "MusicGen-Melody ('musicgen_melody') is not supported" in capsys.readouterr().err
    assert convert_main(["musicgen", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_fine_tuning_step_from_converted_weights(projected):
    """The project's state and optimizer over the converted export (warm start): steps on
    one batch lower its loss; the frozen text encoder does not move."""
    import ml_collections

    from audiolm_jax.models.musicgen import train as mg_train
    from audiolm_jax.training import mesh as mesh_lib
    from audiolm_jax.training import state as state_lib
    from audiolm_jax.training.loop import jit_train_step

    _, hf_dir, pipe = projected
    c = ml_collections.ConfigDict({"optimizer": {"lr": 3e-3, "warmup_steps": 0,
                                                 "schedule": "constant"}})
    model = MusicGen(pipe.config)
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])
    rules = mesh_lib.get_rules("dp")
    state, shardings = state_lib.create_sharded_state(mg_train.make_init_fn(model, c), mesh,
                                                      rules, jax.random.key(0))
    state = state_lib.warm_start(state, shardings, str(hf_dir.parent / "export"))
    ids, mask = text_inputs(pipe)
    codes = np.random.default_rng(2).integers(0, CODES, (2, 8, BOOKS)).astype(np.int32)
    batch = {"codes": codes, "frames": np.array([8, 5], np.int32), "text_ids": ids,
             "text_mask": mask.astype(bool)}
    loss = jax.jit(lambda p: mg_train.loss_fn(model, p, batch)[0])
    before = float(loss(state.params))
    text_before = jax.device_get(state.params["text_encoder"])
    step = jit_train_step(mg_train.make_train_step(model, c), shardings, mesh)
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(3):
            state, metrics = step(state, mesh_lib.make_global_batch(batch, mesh),
                                  jax.random.key(1))
    after = float(loss(state.params))
    assert np.isfinite(float(metrics["loss"])) and after < before, (before, after)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params["text_encoder"]),
                 text_before)


def test_music_command_line_writes_audio_and_refuses_bad_input(projected, tmp_path, capsys,
                                                               caplog):
    from infer.music import main

    _, hf_dir, pipe = projected
    export = str(hf_dir.parent / "export")
    out = tmp_path / "music.wav"
    assert main(["--checkpoint", export, "a calm piano melody", str(out), "--seconds", "0.1"]) == 0
    audio, rate = sf.read(out)
    assert rate == 32_000 and audio.shape == (5 * 640,)       # 5 frames of 640 samples
    printed = capsys.readouterr()
    assert "real-time factor" in printed.out and "8/8" in printed.err    # the steps' bar
    clip = tmp_path / "clip.wav"                      # 0.1 s at 16 kHz: resampled, 5 frames
    sf.write(clip, 0.1 * np.sin(np.arange(1600) / 5.0), 16_000)
    assert main(["--checkpoint", export, "jazz", str(out), "--seconds", "0.1", "--prompt",
                 str(clip), "--no-progress"]) == 0
    assert sf.read(out)[0].shape == (10 * 640,)      # the clip, then 5 new frames
    assert "resampled to the codec's 32000 Hz" in caplog.text

    for args, message in ((["  ", str(out)], "empty"),
                          (["jazz", str(out), "--seconds", "0"], "positive"),
                          (["jazz", str(out), "--num-samples", "0"], "num-samples")):
        assert main(["--checkpoint", export, *args]) == 1
        assert message in capsys.readouterr().err
    from audiolm_jax.convert.encodec import save_codec_export

    codec = save_codec_export(tmp_path / "codec", pipe.codec_config, pipe.codec_variables)
    assert main(["--checkpoint", str(codec), "jazz", str(out)]) == 1
    assert "not 'musicgen'" in capsys.readouterr().err


def test_past_the_context_windows_continue_the_last_frames(projected, caplog):
    """A context of 8 frames and a stride of 4: 14 frames are the 8-frame generation,
    then windows that each continue the last 4 frames so far (greedy, so each window
    equals a plain continuation of its history), with a notice."""
    _, _, pipe = projected
    short = dataclasses.replace(pipe, config=dataclasses.replace(pipe.config, max_frames=8),
                                extend_stride_seconds=4 / 50)
    ids, mask = text_inputs(pipe)
    settings = gen.SamplingSettings(guidance_scale=3.0, temperature=0.0, top_k=0)
    caplog.set_level("INFO")
    codes = short.generate_codes(ids, mask, 14, settings, progress=False)
    assert codes.shape == (2, 14, BOOKS)
    assert "past MusicGen's 0.16 s context: 2 more window(s)" in caplog.text
    np.testing.assert_array_equal(codes[:, :8],
                                  pipe.generate_codes(ids, mask, 8, settings, progress=False))
    window = pipe.generate_codes(ids, mask, 4, settings, prompt=codes[:, 4:8], progress=False)
    np.testing.assert_array_equal(codes[:, 8:12], window)


def test_a_long_caption_is_cut_with_a_notice(projected, caplog):
    _, _, pipe = projected
    short = dataclasses.replace(pipe, config=dataclasses.replace(pipe.config,
                                                                 max_text_tokens=4))
    ids, mask = short.tokenize(["a calm piano melody with soft strings", "jazz"])
    assert ids.shape[1] == 4 and mask[0].all() and ids[0, -1] == short.tokenizer.eos_id
    assert "caption 0 is longer than the text encoder's 4 tokens" in caplog.text


def test_sharded_logits_and_generation_equal_one_device():
    """Params and activations split over 8 simulated devices by the `fsdp_tp` rules
    (heads over `tensor`, weights over `fsdp`): the same logits and greedy guided codes."""
    from audiolm_jax.training import mesh as mesh_lib
    from audiolm_jax.training import state as state_lib

    config = MusicGenConfig.tiny(embed_dim=64, num_heads=8, mlp_dim=128)
    model = MusicGen(config)
    rng = np.random.default_rng(0)
    codes = jnp.asarray(rng.integers(0, config.codebook_size, (4, 6, 4)), jnp.int32)
    ids = jnp.asarray(rng.integers(2, 100, (4, 5)), jnp.int32)
    mask = jnp.ones((4, 5), bool).at[1, 3:].set(False)
    settings = gen.SamplingSettings(guidance_scale=3.0, temperature=0.0, top_k=0)

    def init(key):
        return model.init(key, codes[:1], ids[:1], mask[:1])["params"]

    @jax.jit
    def run(params):
        context = model.apply({"params": params}, ids, mask, method=MusicGen.encode_text)
        return (model.apply({"params": params}, codes, ids, mask),
                gen.generate(model, params, context, mask, 5, jax.random.key(0), settings).codes)

    logits, generated = run(nn.unbox(init(jax.random.key(0))))
    mesh, rules = mesh_lib.create_mesh((2, 2, 2)), mesh_lib.get_rules("fsdp_tp")
    sharded, _ = state_lib.create_sharded_state(init, mesh, rules, jax.random.key(0))
    with mesh_lib.sharding_context(mesh, rules):
        sharded_logits, sharded_codes = run(sharded)
    np.testing.assert_allclose(np.asarray(sharded_logits), np.asarray(logits), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sharded_codes), np.asarray(generated))
