"""CTC phoneme recognizer: PER arithmetic, decoding, the CTC head learning, save/load, trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from audiolm_jax.eval.sequence import edit_distance, per
from audiolm_jax.models import ctc as pr
from audiolm_jax.models.w2v_bert.model import W2vBertConfig

ENCODER = W2vBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, conv_depthwise_kernel_size=5,
                        left_max_position_embeddings=8, right_max_position_embeddings=4)


def test_edit_distance_and_per():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a"]) == 1 and edit_distance(["a"], []) == 1
    refs = [["h", "ə", "l", "oʊ"], ["w", "ɜː", "l", "d"]]
    hyps = [["h", "ə", "l", "oʊ"], ["w", "l", "d", "d"]]
    assert per(refs, hyps) == pytest.approx(2 / 8)
    assert per(refs, refs) == 0.0
    with pytest.raises(ValueError, match="2 references but 1"):
        per(refs, hyps[:1])
    with pytest.raises(ValueError, match="no phones"):
        per([[]], [["a"]])
    assert pr.normalize_phones(["ˈɪ", "ə", "ˌaɪ"]) == ["ɪ", "ə", "aɪ"]


def test_greedy_decode_merges_repeats_and_drops_blanks():
    best = [0, 2, 2, 0, 2, 3, 3, 0, 1]
    logits = np.eye(4)[best]
    assert pr.greedy_decode(logits) == [2, 2, 3, 1]
    assert pr.greedy_decode(logits, num_frames=4) == [2]


def test_ctc_head_learns_a_fixed_batch():
    import optax

    model = pr.CTCRecognizer(ENCODER, num_phones=5)
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.standard_normal((2, 30, 160)), jnp.float32)
    valid = jnp.ones((2, 30), bool).at[1, 25:].set(False)
    labels = jnp.asarray([[1, 2, 3, 4], [5, 1, 0, 0]])
    label_valid = labels > 0
    params = model.init(jax.random.key(0), features, valid)["params"]
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss, grads = jax.value_and_grad(lambda p: pr.ctc_loss(
            model.apply({"params": p}, features, valid), valid, labels, label_valid))(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for _ in range(150):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    logits = np.asarray(model.apply({"params": params}, features, valid))
    assert pr.greedy_decode(logits[0]) == [1, 2, 3, 4]
    assert pr.greedy_decode(logits[1], 25) == [5, 1]


def test_recognizer_saves_loads_and_checks_input(tmp_path):
    model = pr.CTCRecognizer(ENCODER, num_phones=3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 160)), jnp.ones((1, 4), bool))
    recognizer = pr.PhonemeRecognizer(model, variables, ["a", "b", "c"])
    recognizer.save(tmp_path / "export")
    loaded = pr.PhonemeRecognizer.load(tmp_path / "export")
    audio = 0.1 * np.random.default_rng(0).standard_normal(20_000).astype(np.float32)
    assert loaded.phones == ["a", "b", "c"]
    np.testing.assert_allclose(loaded.logits(audio), recognizer.logits(audio), atol=1e-5)
    logits = loaded.logits(audio)
    assert logits.shape == (ENCODER.fbank.num_frames(20_000), 4)
    # recognize = best path of those logits (argmax per frame, repeats merged, blank 0
    # dropped), id i read as phones[i - 1].
    best = logits.argmax(axis=-1)
    path = [int(b) for k, b in enumerate(best) if b != 0 and (k == 0 or b != best[k - 1])]
    assert loaded.recognize(audio, 16_000) == [["a", "b", "c"][i - 1] for i in path]
    # A head that ignores the encoder and always prefers one class: every frame says
    # "b" (id 2), merged into one phone; a blank-preferring head says nothing.
    params = nn.meta.unbox(variables)["params"]
    head = params["ctc_head"]
    for bias, expected in (([0, 0, 5, 0], ["b"]), ([5, 0, 0, 1], []), ([0, 0, 0, 5], ["c"])):
        fixed = {**params, "ctc_head": {"kernel": np.zeros_like(head["kernel"]),
                                         "bias": np.asarray(bias, np.float32)}}
        constant = pr.PhonemeRecognizer(model, {"params": fixed}, ["a", "b", "c"])
        assert constant.recognize(audio, 16_000) == expected, bias
    # Another rate is resampled (said once); silence is no phones (with a warning).
    resampled = pr.PhonemeRecognizer(model, variables, ["a", "b", "c"]).at_rate(
        np.repeat(audio, 2), 32_000)
    assert len(resampled) == len(audio)
    assert loaded.recognize(np.zeros(16_000, np.float32), 16_000) == []
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        loaded.recognize(audio[:200], 16_000)


def test_trainer_fine_tunes_exports_and_reports_per(tmp_path):
    import dataclasses

    from audiolm_jax.convert.w2v_bert import init_variables
    from audiolm_jax.training.export import save_exported
    from configs.ctc import tiny
    from train.ctc import train_and_evaluate
    save_exported(tmp_path / "encoder", "w2v_bert", dataclasses.asdict(ENCODER),
                  init_variables(ENCODER))
    config = tiny.get_config()
    config.encoder_path = str(tmp_path / "encoder")
    config.data.update(corpus_size="tiny", corpus_root=str(tmp_path / "corpora"),
                       held_out_speakers=1, batch_size=8)
    config.model.freeze_encoder_steps = 2
    config.train.update(num_steps=4, log_every=1, save_every=2, eval_every=4, progress=False,
                        async_checkpoints=False)
    config.eval.max_clips = 2
    config.data.augment = 0.5     # the augmenting iterator feeds the step
    result, errors = train_and_evaluate(config, tmp_path / "run")
    error = errors["per"]
    assert 0 <= errors["per_augmented"]
    assert result.last_step == 4
    # The returned PER is the exported recognizer's on every held-out utterance (not
    # the in-loop eval's max_clips=2), recomputed here from the held-out speaker's clips.
    from audiolm_jax.data.corpora import build_corpus
    from audiolm_jax.data.sources import ManifestSource
    from train.ctc import Utterances, split_by_speaker

    recognizer = pr.PhonemeRecognizer.load(tmp_path / "run" / "export")
    assert len(recognizer.phones) > 10
    source = ManifestSource(build_corpus("speech", size="tiny", seed=config.data.corpus_seed,
                                         root=str(tmp_path / "corpora"), progress=False))
    _, held, _ = split_by_speaker(source, 1, config.data.seed)
    held = Utterances(held, recognizer.sample_rate, phones=recognizer.phones)
    hyps = [recognizer.recognize(c, held.sample_rate) for c in held.clips]
    refs = held.references
    assert len(refs) == 6 and all(refs)                 # 24 utterances, 4 speakers
    total = sum(len(r) for r in refs)
    np.testing.assert_allclose(error, sum(edit_distance(r, h) for r, h in zip(refs, hyps))
                               / total, rtol=1e-12)
    report = (tmp_path / "run" / "eval" / "per_000004.md").read_text().splitlines()
    assert report[0] == (f"# step 4: PER {error:.3f} on 6 held-out utterances, "
                         f"{errors['per_augmented']:.3f} on augmented copies of them")
    assert [line.removeprefix("- ref: ") for line in report if line.startswith("- ref: ")] == [
        " ".join(r) for r in refs[:5]]
    assert [line.removeprefix("  hyp: ") for line in report if line.startswith("  hyp: ")] == [
        " ".join(h) for h in hyps[:5]]
    with pytest.raises(ValueError, match="encoder_path is required"):
        config.encoder_path = ""
        train_and_evaluate(config, tmp_path / "run2")
