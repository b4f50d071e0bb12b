"""Bark's causal stages on the shared decoder: logits against `transformers`' Bark models
with random weights, with and without biases, in full-sequence and cached decoding.

Tiny configs (2 layers, width 32) keep the compiles short.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiolm_jax.convert.bark import causal_stage_params, fine_stage_params  # noqa: E402
from audiolm_jax.models.bark import BarkFine, BarkStageConfig, causal_decoder  # noqa: E402
from audiolm_jax.training.checkpointing import CheckpointMismatchError  # noqa: E402

STAGE = dict(block_size=24, input_vocab_size=60, output_vocab_size=50, num_layers=2,
             num_heads=4, hidden_size=32)


FINE = dict(block_size=24, input_vocab_size=40, output_vocab_size=40, num_layers=2,
            num_heads=4, hidden_size=32, n_codes_total=4, n_codes_given=1)


def randomize(model):
    """Every weight random (biases and norms included), so a mapping error shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "embeds" in name or "weight" in name and p.ndim > 1 else 0.1
            p.copy_(torch.randn_like(p) * scale + (1.0 if "layernorm" in name
                                                   and name.endswith("weight") else 0.0))
    return model.eval()


def reference_stage(bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    return randomize(transformers.BarkSemanticModel(
        transformers.BarkSemanticConfig(**STAGE, bias=bias)))


@pytest.mark.parametrize("bias", [True, False])
def test_causal_stage_matches_transformers_with_and_without_cache(bias):
    reference = reference_stage(bias)
    config = BarkStageConfig(**STAGE, bias=bias)
    params = causal_stage_params(reference.state_dict(), config)
    decoder = causal_decoder(config)
    tokens = np.random.default_rng(1).integers(0, STAGE["input_vocab_size"], (2, 10))
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(tokens)).logits.numpy()
    logits = jax.jit(decoder.apply)({"params": params}, jnp.asarray(tokens))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)

    # Cached: a prefill of the first 6 tokens, then one token at a time.
    cache = decoder.init_cache(2, STAGE["block_size"])
    prefill = jax.jit(lambda c, t: decoder.apply({"params": params, "cache": c}, t,
                                                 method=type(decoder).prefill, mutable=["cache"]))
    decode = jax.jit(lambda c, t: decoder.apply({"params": params, "cache": c}, t,
                                                method=type(decoder).decode, mutable=["cache"]))
    out, variables = prefill(cache, jnp.asarray(tokens[:, :6]))
    np.testing.assert_allclose(out, expected[:, :6], atol=1e-4, rtol=1e-4)
    for t in range(6, 10):
        out, variables = decode(variables["cache"], jnp.asarray(tokens[:, t:t + 1]))
        np.testing.assert_allclose(out[:, 0], expected[:, t], atol=1e-4, rtol=1e-4,
                                   err_msg=f"decode step {t}")


@pytest.mark.parametrize("bias", [False, True])
def test_fine_stage_matches_transformers(bias):
    torch.manual_seed(0)
    reference = randomize(transformers.BarkFineModel(
        transformers.BarkFineConfig(**FINE, bias=bias)))
    config = BarkStageConfig(**FINE, bias=bias)
    params = fine_stage_params(reference.state_dict(), config)
    codes = np.random.default_rng(2).integers(0, FINE["input_vocab_size"], (2, 12, 4))
    model = BarkFine(config)
    for book in (1, 3):
        with torch.no_grad():
            expected = reference(codebook_idx=book,
                                 input_ids=torch.from_numpy(codes)).logits.numpy()
        logits = model.apply({"params": params}, jnp.asarray(codes), book)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4, err_msg=f"book {book}")
    with pytest.raises(ValueError, match="not a predicted book"):
        model.apply({"params": params}, jnp.asarray(codes), 0)
    # A file that keeps one of each tied pair converts the same; a broken tie is named.
    state = {k: v for k, v in reference.state_dict().items()
             if not k.startswith("input_embeds_layers.") or k.endswith("s.0.weight")}
    again = fine_stage_params(state, config)
    np.testing.assert_array_equal(again["embeddings"], params["embeddings"])
    state = dict(reference.state_dict())
    state["lm_heads.1.weight"] = state["lm_heads.1.weight"] + 1
    with pytest.raises(CheckpointMismatchError, match="lm_heads.1 differs"):
        fine_stage_params(state, config)


def test_conversion_names_what_does_not_fit():
    state = reference_stage(True).state_dict()
    config = BarkStageConfig(**STAGE, bias=True)
    with pytest.raises(CheckpointMismatchError, match="has no place|unexpected"):
        causal_stage_params(state, BarkStageConfig(**STAGE, bias=False))
    with pytest.raises(CheckpointMismatchError, match="missing Bark stage weights"):
        causal_stage_params({k: v for k, v in state.items() if "lm_head" not in k}, config)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        causal_stage_params(state, BarkStageConfig(**{**STAGE, "output_vocab_size": 51}))
    with pytest.raises(ValueError, match="not divisible"):
        BarkStageConfig(**{**STAGE, "num_heads": 5})


SEMANTIC = dict(text_encoding_offset=40, text_pad_token=55, semantic_infer_token=59,
                semantic_vocab_size=30, semantic_pad_token=30, max_input_semantic_length=6,
                max_new_tokens=10)


@pytest.mark.parametrize("with_history,min_eos_p", [(False, None), (True, 0.05)])
def test_semantic_generation_matches_transformers_greedy(with_history, min_eos_p):
    from audiolm_jax.models.bark.generation import (
        SemanticSettings,
        generate_semantic,
        semantic_context,
    )

    reference = reference_stage(True, seed=3)
    with torch.no_grad():   # the EOS takes over one semantic id: rows stop at steps 3 and 9
        reference.lm_head.weight[30] = reference.lm_head.weight[5] * 1.05
    config = BarkStageConfig(**STAGE, bias=True)
    params = causal_stage_params(reference.state_dict(), config)
    settings = SemanticSettings(**SEMANTIC, min_eos_p=min_eos_p)
    ids = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 0, 0, 0]])
    lengths = np.array([6, 3])
    history = np.array([7, 11, 13, 2]) if with_history else None

    from transformers.models.bark.generation_configuration_bark import (
        BarkSemanticGenerationConfig,
    )

    generation_config = BarkSemanticGenerationConfig(
        eos_token_id=30, do_sample=False, min_eos_p=min_eos_p, **SEMANTIC)
    attention = (np.arange(6)[None] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
        expected = reference.generate(
            torch.from_numpy(ids), semantic_generation_config=generation_config,
            attention_mask=torch.from_numpy(attention),
            history_prompt=None if history is None else
            {"semantic_prompt": torch.from_numpy(history)}).numpy()

    text, hist = semantic_context(ids, lengths, history, settings)
    decoder = causal_decoder(config)
    out = jax.jit(generate_semantic, static_argnums=(0, 5))(
        decoder, params, jnp.asarray(text), jnp.asarray(hist), jax.random.key(0), settings)
    tokens = np.asarray(out.tokens)[:, :expected.shape[1]]
    assert 30 in expected[:, :-1] or expected.shape[1] < settings.max_new_tokens, \
        "generation should stop early (EOS, then EOS padding)"
    np.testing.assert_array_equal(tokens, expected)
    assert np.all(np.asarray(out.tokens)[:, expected.shape[1]:] == 30)
    np.testing.assert_array_equal(out.lengths, [list(row).index(30) + 1 if 30 in row
                                                else settings.max_new_tokens for row in tokens])


COARSE = dict(coarse_semantic_pad_token=46, coarse_infer_token=47, max_coarse_input_length=6,
              max_coarse_history=12, sliding_window_len=4)


@pytest.mark.parametrize("with_history", [False, True])
def test_coarse_generation_matches_transformers_greedy(with_history):
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    from audiolm_jax.models.bark.generation import CoarseSettings, generate_coarse

    stage = dict(STAGE, input_vocab_size=48, output_vocab_size=48)
    torch.manual_seed(4)
    reference = randomize(transformers.BarkCoarseModel(
        transformers.BarkCoarseConfig(**stage, bias=False)))
    config = BarkStageConfig(**stage, bias=False)
    params = causal_stage_params(reference.state_dict(), config)
    rng = np.random.default_rng(5)
    semantic = rng.integers(0, 30, (2, 9))
    semantic[1, 6:] = 30                                   # the second row ended early
    history = ({"semantic_prompt": rng.integers(0, 30, 7),
                "coarse_prompt": rng.integers(0, 8, (2, 11))} if with_history else None)

    with torch.no_grad():
        expected, expected_lengths = reference.generate(
            torch.from_numpy(semantic.copy()),
            semantic_generation_config=BarkSemanticGenerationConfig(
                semantic_vocab_size=30, semantic_pad_token=30, eos_token_id=30),
            coarse_generation_config=BarkCoarseGenerationConfig(do_sample=False, **COARSE),
            codebook_size=8, return_output_lengths=True,
            history_prompt=None if history is None else
            {k: torch.from_numpy(v) for k, v in history.items()})
    settings = CoarseSettings(**COARSE, semantic_vocab_size=30, semantic_pad_token=30,
                              codebook_size=8)
    coarse, lengths = generate_coarse(
        causal_decoder(config), params, semantic, jax.random.key(0), settings,
        semantic_prompt=None if history is None else history["semantic_prompt"],
        coarse_prompt=None if history is None else history["coarse_prompt"])
    np.testing.assert_array_equal(lengths, expected_lengths.numpy())
    assert coarse.shape[1] > settings.sliding_window_len   # several windows
    np.testing.assert_array_equal(coarse, expected.numpy())


@pytest.mark.parametrize("frames,with_history", [(5, False), (30, True)])
def test_fine_generation_matches_transformers_greedy(frames, with_history):
    """Short input (one padded window) and a long one with a voice prompt (three
    overlapping windows of 16 frames, 8 apart)."""
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    from audiolm_jax.models.bark.generation import FineSettings, generate_fine

    fine = dict(FINE, n_codes_total=8, input_vocab_size=10, output_vocab_size=10)
    torch.manual_seed(6)
    reference = randomize(transformers.BarkFineModel(transformers.BarkFineConfig(**fine)))
    config = BarkStageConfig(**fine)
    params = fine_stage_params(reference.state_dict(), config)
    rng = np.random.default_rng(7)
    coarse = 30 + rng.integers(0, 8, (2, frames, 2)) + np.array([0, 8])  # books 0 and 1
    coarse = coarse.reshape(2, -1)
    prompt = rng.integers(0, 8, (8, 11)) if with_history else None
    with torch.no_grad():
        expected = reference.generate(
            torch.from_numpy(coarse),
            semantic_generation_config=BarkSemanticGenerationConfig(semantic_vocab_size=30),
            coarse_generation_config=BarkCoarseGenerationConfig(),
            fine_generation_config=BarkFineGenerationConfig(
                temperature=1.0, max_fine_history_length=8, max_fine_input_length=16),
            codebook_size=8,
            history_prompt=None if prompt is None else {"fine_prompt": torch.from_numpy(prompt)})
    settings = FineSettings(max_fine_history_length=8, max_fine_input_length=16, codebook_size=8,
                            semantic_vocab_size=30)
    codes = generate_fine(BarkFine(config), params, coarse, jax.random.key(0), settings,
                          fine_prompt=prompt)
    assert codes.shape == (2, 8, frames)
    np.testing.assert_array_equal(codes, expected.numpy())


def test_pipeline_matches_transformers_bark_model_greedy():
    """Text ids -> audio through all three stages and EnCodec, against
    `BarkModel.generate` with the same random weights, greedy, with a voice prompt."""
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    from audiolm_jax.convert.encodec import variables_from_state_dict
    from audiolm_jax.models.bark.generation import CoarseSettings, FineSettings, SemanticSettings
    from audiolm_jax.models.bark.pipeline import BarkPipeline, Voice
    from audiolm_jax.models.codec.model import CodecConfig

    semantic = dict(STAGE, input_vocab_size=60, output_vocab_size=50, block_size=24)
    coarse = dict(STAGE, input_vocab_size=48, output_vocab_size=48)
    fine = dict(FINE, n_codes_total=8, input_vocab_size=10, output_vocab_size=10)
    codec = dict(num_filters=4, hidden_size=16, codebook_size=8)
    torch.manual_seed(8)
    reference = transformers.BarkModel(transformers.BarkConfig(
        semantic_config=dict(semantic, bias=False), coarse_acoustics_config=dict(coarse, bias=False),
        fine_acoustics_config=dict(fine, bias=False), codec_config=codec))
    for part in (reference.semantic, reference.coarse_acoustics, reference.fine_acoustics):
        randomize(part)
    reference.eval()
    fine_settings = dict(max_fine_history_length=8, max_fine_input_length=16)
    generation = BarkGenerationConfig(codebook_size=8)
    # BarkModel.generate rebuilds each stage's config from a dict.
    generation.semantic_config = dict(SEMANTIC, eos_token_id=30, do_sample=False)
    generation.coarse_acoustics_config = dict(COARSE, do_sample=False)
    generation.fine_acoustics_config = dict(fine_settings, temperature=1.0)
    reference.generation_config = generation
    rng = np.random.default_rng(9)
    voice = Voice(rng.integers(0, 30, 7), rng.integers(0, 8, (2, 11)), rng.integers(0, 8, (8, 11)))
    ids = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 0, 0, 0]])
    lengths = np.array([6, 3])
    with torch.no_grad():
        expected, expected_lengths = reference.generate(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(
                (np.arange(6)[None] < lengths[:, None]).astype(np.int64)),
            history_prompt={k: torch.from_numpy(getattr(voice, k)) for k in
                            ("semantic_prompt", "coarse_prompt", "fine_prompt")},
            return_output_lengths=True)

    state = reference.state_dict()
    stages = {"semantic": BarkStageConfig(**semantic, bias=False),
              "coarse": BarkStageConfig(**coarse, bias=False),
              "fine": BarkStageConfig(**fine, bias=False)}
    params = {"semantic": causal_stage_params(state, stages["semantic"], prefix="semantic."),
              "coarse": causal_stage_params(state, stages["coarse"], prefix="coarse_acoustics."),
              "fine": fine_stage_params(state, stages["fine"], prefix="fine_acoustics.")}
    codec_config = CodecConfig.from_encodec_config(reference.codec_model.config.to_dict())
    codec_variables = variables_from_state_dict(
        {k.removeprefix("codec_model."): v.numpy() for k, v in state.items()
         if k.startswith("codec_model.")}, codec_config)
    bark = BarkPipeline(
        stages, params, codec_config, codec_variables, SemanticSettings(**SEMANTIC),
        CoarseSettings(**COARSE, semantic_vocab_size=30, semantic_pad_token=30, codebook_size=8),
        FineSettings(**fine_settings, codebook_size=8, semantic_vocab_size=30))
    audio, audio_lengths, tokens = bark.generate(ids, lengths, voice=voice)
    np.testing.assert_array_equal(audio_lengths, expected_lengths)
    assert np.abs(audio).max() > 1e-3
    np.testing.assert_allclose(audio, expected.numpy(), atol=1e-4)


def tiny_bark_dir(path, tokenizer=True):
    """A random tiny `BarkModel` saved as Hugging Face saves it (+ a WordPiece tokenizer)."""
    from audiolm_jax.text.wordpiece import WordPieceTokenizer

    torch.manual_seed(10)
    model = transformers.BarkModel(transformers.BarkConfig(
        semantic_config=dict(STAGE, input_vocab_size=60, output_vocab_size=50, bias=False),
        coarse_acoustics_config=dict(STAGE, input_vocab_size=48, output_vocab_size=48, bias=False),
        fine_acoustics_config=dict(FINE, n_codes_total=8, input_vocab_size=10,
                                   output_vocab_size=10, bias=False),
        codec_config=dict(num_filters=4, hidden_size=16, codebook_size=8))).eval()
    model.save_pretrained(path)
    # As suno/bark's generation_config.json lays it out (this transformers cannot save
    # a BarkGenerationConfig itself).
    (path / "generation_config.json").write_text(json.dumps({
        "semantic_config": dict(SEMANTIC, eos_token_id=30),
        "coarse_acoustics_config": COARSE,
        "fine_acoustics_config": dict(max_fine_history_length=8, max_fine_input_length=16),
        "codebook_size": 8, "sample_rate": 24000}))
    if tokenizer:   # ids 0..9: the tiny semantic stage's text offset leaves room for 10
        WordPieceTokenizer.train(["a b c"], vocab_size=10).save(path / "tokenizer.json")
    return model


def test_convert_cli_load_and_speak(tmp_path, capsys):
    from audiolm_jax.convert.__main__ import main
    from audiolm_jax.models import bark

    tiny_bark_dir(tmp_path / "hf")
    assert main(["bark", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert "semantic:" in capsys.readouterr().out
    pipeline = bark.load(tmp_path / "out")
    assert pipeline.semantic.max_new_tokens == 10 and pipeline.fine.max_fine_input_length == 16
    audio, lengths = pipeline.speak(["a b", "c"])
    assert audio.shape[0] == 2 and audio.shape[1] == lengths.max() > 0
    assert lengths.min() % pipeline.codec_config.hop_length == 0

    import soundfile as sf

    from infer import tts as tts_cli
    np.savez(tmp_path / "voice.npz", semantic_prompt=np.arange(7) % 30,
             coarse_prompt=np.ones((2, 11), np.uint16), fine_prompt=np.ones((8, 11)))
    assert tts_cli.main([str(tmp_path / "out.wav"), "--model", "bark", "--checkpoint",
                         str(tmp_path / "out"), "--text", "a b c", "--voice",
                         str(tmp_path / "voice.npz"), "--temperature", "0.7"]) == 0
    assert "real-time factor" in capsys.readouterr().out
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 24000 and len(out) % 320 == 0 and len(out) > 0
    assert tts_cli.main([str(tmp_path / "x.wav"), "--model", "voicebox", "--checkpoint",
                         str(tmp_path / "out"), "--text", "a"]) == 1
    assert "needs --prompt and --prompt-text" in capsys.readouterr().err


def test_bad_bark_inputs_are_named(tmp_path):
    from audiolm_jax.convert.bark import convert_bark
    from audiolm_jax.models import bark
    from audiolm_jax.models.bark.pipeline import Voice

    model = tiny_bark_dir(tmp_path / "hf", tokenizer=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fine_acoustics.")}
    torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointMismatchError, match="fine part is missing"):
        convert_bark(tmp_path / "hf", tmp_path / "out")
    np.savez(tmp_path / "voice.npz", semantic_prompt=np.zeros(4), coarse_prompt=np.zeros(3))
    with pytest.raises(ValueError, match="lacks \\['fine_prompt'\\]"):
        Voice.load(str(tmp_path / "voice.npz"))
    np.savez(tmp_path / "voice.npz", semantic_prompt=np.zeros(4), coarse_prompt=np.zeros(3),
             fine_prompt=np.zeros((8, 3)))
    with pytest.raises(ValueError, match="coarse_prompt must have 2"):
        Voice.load(str(tmp_path / "voice.npz"))
    from audiolm_jax.training.export import save_exported
    save_exported(tmp_path / "other", "vocoder", {}, {"params": {"w": np.zeros(2)}})
    with pytest.raises(ValueError, match="vocoder"):
        bark.load(tmp_path / "other")


def test_imported_stage_fine_tunes_and_greedy_decoding_reproduces_its_batch():
    """Converted weights train with the project's optimizer and train state; after
    memorizing a fixed batch, cached greedy decoding regenerates it, and equals greedy
    decoding without a cache (the full sequence recomputed at every step)."""
    import optax

    from audiolm_jax.sampling.autoregressive import generate
    from audiolm_jax.training.optimizers import make_optimizer
    from audiolm_jax.training.state import TrainState
    from configs import common

    config = BarkStageConfig(**STAGE, bias=True)
    decoder = causal_decoder(config)
    params = causal_stage_params(reference_stage(True).state_dict(), config)
    batch = jnp.asarray(np.random.default_rng(11).integers(0, 50, (2, 12)))

    def loss_fn(p):
        logits = decoder.apply({"params": p}, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    @jax.jit
    def step(state):
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads), loss

    state = TrainState.create(params, make_optimizer(common.optimizer(lr=3e-3)))
    losses = []
    for _ in range(150):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.05 < losses[0], (losses[0], losses[-1])

    prompt = batch[:, :3]
    cache = decoder.init_cache(2, 12)

    def step_fn(cache, tokens, positions):
        logits, v = decoder.apply({"params": state.params, "cache": cache}, tokens,
                                  method=type(decoder).decode, mutable=["cache"])
        return logits[:, 0], v["cache"]

    out = jax.jit(generate, static_argnums=(0, 4), static_argnames=("eos_id",))(
        step_fn, cache, prompt, jnp.full((2,), 3), 9, jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(out.tokens, batch)
    uncached = np.asarray(prompt)
    for _ in range(9):
        logits = decoder.apply({"params": state.params}, jnp.asarray(uncached))
        uncached = np.concatenate([uncached, np.argmax(logits[:, -1], -1)[:, None]], axis=1)
    np.testing.assert_array_equal(out.tokens, uncached)
