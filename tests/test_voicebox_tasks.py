"""Voicebox's tasks (`models/voicebox/inference.py`) end to end with micro random networks:
TTS, continuation, editing and denoising give audio of the right length that keeps the
known part, and each kind of bad input is named."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.data.aligned import PAUSE, SILENCE
from audiolm_jax.models import ctc as pr
from audiolm_jax.models.voicebox import VoiceboxConfig, VoiceboxTransformer
from audiolm_jax.models.voicebox.inference import (
    MIN_PROMPT_SECONDS,
    Network,
    Voicebox,
    VoiceboxInputError,
)
from audiolm_jax.models.w2v_bert.model import W2vBertConfig
from audiolm_jax.text.phonemizer import phonemize
from audiolm_jax.text.vocab import PhonemeVocab

PROMPT_TEXT = "The kitchen looked golden."
TEXT = "A young girl built a book."
MEL = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100}


def _network(kind, vocab, seed):
    audio = kind == "audio"
    config = VoiceboxConfig(feature_dim=100 if audio else 1, num_phones=len(vocab),
                            phone_embed_dim=8, dim=32, num_layers=2, num_heads=4,
                            conv_pos_kernel=5, conv_pos_groups=4,
                            feature_mean=-3.1 if audio else 2.1,
                            feature_std=5.8 if audio else 0.5)
    model = VoiceboxTransformer(config)
    x = jnp.zeros((1, 16, config.feature_dim))
    params = model.init(jax.random.key(seed), x, x, jnp.ones((1, 16), jnp.int32), jnp.zeros(1),
                        jnp.ones((1, 16), bool))["params"]
    return Network(model, params, MEL, vocab, kind)


@pytest.fixture(scope="module")
def voice():
    phones = sorted({p for t in (PROMPT_TEXT, TEXT, "A young boy built a book.")
                     for p in phonemize(t) if p != "|"})
    vocab = PhonemeVocab([SILENCE, PAUSE, *phones])
    encoder = W2vBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, conv_depthwise_kernel_size=5,
                            left_max_position_embeddings=8, right_max_position_embeddings=4)
    labels = sorted(set(pr.normalize_phones(phones)))
    model = pr.CTCRecognizer(encoder, num_phones=len(labels))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 160)), jnp.ones((1, 4), bool))
    recognizer = pr.PhonemeRecognizer(model, variables, labels)
    # An untrained recognizer scores any transcript low: accept every alignment.
    return Voicebox(_network("audio", vocab, 1), _network("duration", vocab, 2), None,
                    recognizer, max_frames=512, min_align_score=-1e9)


def _prompt(seconds=2.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(
        np.float32)


def test_tts_and_continue_keep_the_prompt_and_add_speech(voice):
    sampling = dict(num_steps=2, method="euler", guidance=0.5)
    audio, rate = voice.tts(TEXT, _prompt(), 16000, PROMPT_TEXT, **sampling)
    assert rate == 24000 and audio.ndim == 1 and np.all(np.isfinite(audio))
    # At least one frame per new phone (+ the final silence).
    assert len(audio) >= (len(voice.phonemize(TEXT)) + 1) * 256 - 256
    both, _ = voice.continue_speech(_prompt(), 16000, PROMPT_TEXT, TEXT, **sampling)
    assert len(both) > len(audio) + 24000    # the 2 s prompt comes first


def test_averaged_durations_vary_less_over_seeds(voice):
    ids = np.asarray(voice.vocab.encode(["<sil>", *voice.phonemize(TEXT), "<sil>"]))
    known = np.zeros(len(ids), bool)
    known[0] = True
    durations = np.full(len(ids), 5, np.int32)
    sampling = dict(num_steps=1, method="euler", guidance=0.0)
    mean = voice.predict_durations(ids, known, durations, num_samples=3, **sampling)
    assert mean.shape == ids.shape and mean[0] == 5 and np.all(mean >= 1)
    # averaging draws narrows the spread of the durations over seeds
    singles = np.stack([voice.predict_durations(ids, known, durations, seed=s, **sampling)
                        for s in range(4)])
    averaged = np.stack([voice.predict_durations(ids, known, durations, seed=s,
                                                 num_samples=4, **sampling) for s in range(4)])
    assert np.log(averaged[:, 1:]).std(axis=0).mean() < np.log(singles[:, 1:]).std(axis=0).mean()
    with pytest.raises(ValueError, match="num_samples"):
        voice.predict_durations(ids, known, durations, num_samples=0)


def test_edit_and_denoise_keep_the_untouched_audio_length(voice):
    sampling = dict(num_steps=2, method="euler", guidance=0.0)
    prompt = _prompt(2.5, 24000)
    edited, _ = voice.edit(prompt, 24000, "A young girl built a book.",
                           "A young boy built a book.", **sampling)
    assert abs(len(edited) - len(prompt)) < 24000
    out, _ = voice.denoise(prompt, 24000, "A young girl built a book.", 0.5, 1.2, **sampling)
    assert len(out) == len(prompt)
    with pytest.raises(VoiceboxInputError, match="not inside the audio"):
        voice.denoise(prompt, 24000, "A young girl built a book.", 2.0, 3.5)
    with pytest.raises(VoiceboxInputError, match="same phones"):
        voice.edit(prompt, 24000, TEXT, TEXT)


def test_pauses_join_prompt_and_clauses_and_deletions_regenerate_the_join(voice, monkeypatch):
    calls = []
    generate = voice.generate_mel
    monkeypatch.setattr(voice, "generate_mel", lambda context, mask, ids, **kw: (
        calls.append((mask, ids)), generate(context, mask, ids, **kw))[1])
    sampling = dict(num_steps=1, method="euler", guidance=0.0)
    voice.tts("A young girl, built a book.", _prompt(), 16000, PROMPT_TEXT, **sampling)
    mask, ids = calls[-1]
    pause = voice.vocab.encode([PAUSE])[0]
    start = int(np.argmax(mask))                 # the first generated frame
    assert mask[start:].all() and not mask[:start].any()
    runs = [k for k, i in enumerate(ids) if i == pause and (k == 0 or ids[k - 1] != pause)]
    assert len(runs) >= 2                        # after the prompt, and at the comma
    assert runs[0] <= start                      # the join's pause begins in the prompt
    prompt = _prompt(2.5, 24000)
    voice.edit(prompt, 24000, "A young girl built a book.", "A girl built a book.", **sampling)
    mask, _ = calls[-1]
    assert mask.sum() >= 2                       # a deletion regenerates its neighbours


def test_a_long_prompt_is_cut_to_leave_room_for_the_new_speech(voice, monkeypatch):
    tight = Voicebox(voice.audio_model, voice.duration_model, None, voice.recognizer,
                     max_frames=320, min_align_score=-1e9)
    # Five frames for every new phone (and the pause), so the sums are known.
    monkeypatch.setattr(tight, "predict_durations", lambda ids, known, d, **kw: np.where(
        known, d, 5).astype(np.int32))
    calls = []
    monkeypatch.setattr(tight, "generate_mel", lambda context, mask, ids, **kw: (
        calls.append(mask), context)[1])
    sampling = dict(num_steps=1, method="euler", guidance=0.0)
    tight.tts(TEXT, _prompt(3.0), 16000, PROMPT_TEXT, **sampling)     # 282 prompt frames
    mask = calls[-1]
    new_frames = 5 * (len(tight.phonemize(TEXT)) + 2)
    assert len(mask) <= 320 and mask.sum() >= new_frames - 10   # the pause starts in the prompt
    assert (~mask).sum() >= MIN_PROMPT_SECONDS * 24000 / 256            # prompt kept
    with pytest.raises(VoiceboxInputError, match="use a shorter text"):
        tight.tts(" ".join([TEXT] * 8), _prompt(3.0), 16000, PROMPT_TEXT, **sampling)


def test_bad_input_is_named(voice):
    with pytest.raises(VoiceboxInputError, match="at least 1 s"):
        voice.tts(TEXT, _prompt(0.5), 16000, PROMPT_TEXT)
    with pytest.raises(VoiceboxInputError, match="past the model's context"):
        voice.tts(TEXT, _prompt(6.0), 16000, PROMPT_TEXT)
    with pytest.raises(VoiceboxInputError, match="never saw"):
        voice.tts("Xylophones quizzically jump.", _prompt(), 16000, PROMPT_TEXT)
    with pytest.raises(VoiceboxInputError, match="empty"):
        voice.tts("  ", _prompt(), 16000, PROMPT_TEXT)
    with pytest.raises(VoiceboxInputError, match="cannot phonemize '...'"):
        voice.tts("...", _prompt(), 16000, PROMPT_TEXT)
    with pytest.raises(VoiceboxInputError, match="NaN"):
        voice.tts(TEXT, np.full(32000, np.nan, np.float32), 16000, PROMPT_TEXT)


def test_bundle_loads_and_the_command_lines_write_wavs(voice, tmp_path, capsys):
    import soundfile as sf

    from audiolm_jax.models.voicebox.inference import Bundle
    from audiolm_jax.training.export import save_exported
    from infer import tts as tts_cli
    from infer import voicebox as voicebox_cli

    for name, network in (("export", voice.audio_model), ("duration", voice.duration_model)):
        config = {"kind": network.kind, "model": network.model.config.to_dict(), "mel": MEL,
                  "phones": list(network.vocab.tokens), "max_frames": 512,
                  "pause_seconds": 0.05}
        save_exported(tmp_path / name, "voicebox", config, {"params": network.params})
    voice.recognizer.save(tmp_path / "recognizer")
    # The audio model's trainer writes the bundle beside its export and loads it.
    from configs.voicebox import tiny
    from train.voicebox import write_bundle
    config = tiny.get_config()
    config.export.update(duration_model="duration", vocoder="", recognizer="recognizer")
    assert write_bundle(config, tmp_path) == tmp_path / "bundle.json"
    # An untrained recognizer scores any transcript low: accept every alignment.
    Bundle(audio_model="export", vocoder=None, recognizer="recognizer",
           min_align_score=-1e9).write(tmp_path)
    sf.write(tmp_path / "prompt.wav", _prompt(), 16000)
    common = ["--checkpoint", str(tmp_path), "--steps", "2", "--method", "euler"]
    assert tts_cli.main([str(tmp_path / "out.wav"), "--model", "voicebox", "--prompt",
                         str(tmp_path / "prompt.wav"), "--prompt-text", PROMPT_TEXT, "--text",
                         TEXT, *common]) == 0
    assert "real-time factor" in capsys.readouterr().out
    from audiolm_jax.models.voicebox.inference import load
    assert load(tmp_path).max_frames == 512          # the audio model's training length
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 24000 and len(out) > 256 * len(voice.phonemize(TEXT))
    assert voicebox_cli.main(["denoise", str(tmp_path / "dn.wav"), "--audio",
                              str(tmp_path / "prompt.wav"), "--transcript", PROMPT_TEXT,
                              "--start", "0.5", "--end", "1.0", *common]) == 0
    assert len(sf.read(tmp_path / "dn.wav")[0]) == 48000      # 2 s at 24 kHz
    assert tts_cli.main([str(tmp_path / "x.wav"), "--model", "voicebox", "--prompt",
                         str(tmp_path / "prompt.wav"), "--prompt-text", PROMPT_TEXT, "--text",
                         TEXT, "--checkpoint", str(tmp_path), "--steps", "0"]) == 1
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert tts_cli.main([str(tmp_path / "x.wav"), "--model", "voicebox", "--prompt",
                         str(tmp_path / "prompt.wav"), "--prompt-text", PROMPT_TEXT, "--text",
                         TEXT, "--checkpoint", str(tmp_path / "none")]) == 1
    assert "not a Voicebox bundle" in capsys.readouterr().err

    # The TTS harness runs the bundle as a system (`NAME=voicebox:DIR:options`).
    from audiolm_jax.eval import tts, tts_harness

    speaker = tmp_path / "set" / "s1"
    speaker.mkdir(parents=True)
    for name, text in (("u0", PROMPT_TEXT), ("u1", TEXT)):
        sf.write(speaker / f"{name}.wav", _prompt(), 16000)
        (speaker / f"{name}.txt").write_text(text)
        phones = voice.phonemize(text, pauses=False)   # 0.1 s each from 0.2 s; a pause
        starts = [0.2 + 0.1 * i + (0.2 if i >= 3 else 0) for i in range(len(phones))]
        (speaker / f"{name}.alignment.json").write_text(json.dumps(
            {"phonemes": phones, "starts": starts, "ends": [t + 0.1 for t in starts]}))
    cases = tts_harness.EvalSet.read(tmp_path / "set").cases()
    system = tts_harness.parse_system(f"vb=voicebox:{tmp_path}:steps=1,method=euler,guidance=0")
    result = tts_harness.evaluate_system(system, cases, tts.Judges(), progress=False)
    assert not result.failures and list(result.scores) == ["s1/u0", "s1/u1"]
    assert result.real_time_factor > 0 and result.first_call_seconds is not None
    assert "1 network pass" in system.note
    # Ground-truth durations and prompt timings from the sidecars: the output lasts
    # the target's phones exactly, plus the predicted pause.
    truth = tts_harness.parse_system(f"gt=voicebox:{tmp_path}:steps=1,method=euler,guidance=0,"
                                     "durations=truth,prompt_alignment=truth")
    truth.load()
    audio, rate = truth.synthesize(cases[1])
    target = json.loads((speaker / "u1.alignment.json").read_text())   # cases[1]: u1
    spoken = (2.0 - target["starts"][0]) * rate              # phones and trailing silence
    assert spoken - 512 <= len(audio) <= spoken + 0.6 * rate
    with pytest.raises(ValueError, match="durations='guess'"):
        tts_harness.parse_system(f"x=voicebox:{tmp_path}:durations=guess")


def test_the_demo_says_sentences_in_each_voice_with_a_picture(voice, tmp_path):
    import soundfile as sf

    from audiolm_jax.eval import tts_demo
    from audiolm_jax.eval.tts_harness import Utterance

    prompts = []
    for speaker in ("s1", "s2"):
        path = tmp_path / f"{speaker}.wav"
        sf.write(path, _prompt(), 16000)
        prompts.append(Utterance(speaker, "p", path, PROMPT_TEXT))
    spoken = tts_demo.speak_sentences(voice, prompts, [TEXT], tmp_path / "out", num_steps=1,
                                      method="euler", guidance=0.0)
    assert [sorted(s.wavs) for s in spoken] == [["s1", "s2"]]
    assert all(p.is_file() for p in spoken[0].wavs.values()) and spoken[0].picture.is_file()
    assert "1 sentences x 2 voices" in tts_demo.summary_line(spoken)
    assert len(tts_demo.read_sentences()) >= 5
