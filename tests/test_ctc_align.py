"""CTC forced alignment: the Viterbi path recovers a known segmentation, and the aligner
names what it cannot align."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.models import ctc as pr
from audiolm_jax.models.ctc.align import AlignmentError, align, boundary_errors, viterbi
from audiolm_jax.models.w2v_bert.model import W2vBertConfig


def _posteriors(frame_tokens, vocab=6, sharp=4.0, seed=0):
    """Log-softmax of noisy logits that favour `frame_tokens[t]` at frame t."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(frame_tokens), vocab))
    logits[np.arange(len(frame_tokens)), frame_tokens] += sharp
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def test_viterbi_recovers_the_segmentation():
    # Labels 3 5 5 2: the repeated 5 needs a blank between its copies.
    frames = [0, 3, 3, 3, 0, 5, 5, 0, 0, 5, 2, 2, 2, 0]
    starts, total = viterbi(_posteriors(frames), [3, 5, 5, 2])
    assert list(starts) == [1, 5, 9, 10]
    assert total < 0
    # A peaky recognizer (one spike per phone, blanks elsewhere) aligns to the spikes.
    spikes = [0, 0, 4, 0, 0, 0, 1, 0, 0, 2, 0]
    assert list(viterbi(_posteriors(spikes, sharp=8.0), [4, 1, 2])[0]) == [2, 6, 9]
    with pytest.raises(AlignmentError, match="too short"):
        viterbi(_posteriors([0, 5, 5]), [5, 5, 5])
    with pytest.raises(AlignmentError, match="no phones"):
        viterbi(_posteriors([0, 1]), [])
    np.testing.assert_allclose(boundary_errors([0.1, 0.25], [0.12, 0.2]), [0.02, 0.05])


def test_align_gives_tiling_times_and_names_what_it_cannot_align():
    encoder = W2vBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, conv_depthwise_kernel_size=5,
                            left_max_position_embeddings=8, right_max_position_embeddings=4)
    model = pr.CTCRecognizer(encoder, num_phones=3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 160)), jnp.ones((1, 4), bool))
    recognizer = pr.PhonemeRecognizer(model, variables, ["a", "b", "c"])
    audio = 0.1 * np.random.default_rng(0).standard_normal(24_000).astype(np.float32)
    out = align(recognizer, audio, 24_000, phonemes=["ˈa", "b", "c", "a"], min_score=None)
    assert out.phonemes == ["ˈa", "b", "c", "a"] and out.frame_seconds == pytest.approx(0.02)
    np.testing.assert_allclose(out.ends[:-1], out.starts[1:])
    assert np.all(np.diff(out.starts) > 0) and out.ends[-1] <= 1.0 + 1e-6
    assert set(out.as_record_fields()) == {"phonemes", "phoneme_starts", "phoneme_ends"}
    with pytest.raises(AlignmentError, match=r"\['x'\] are not in the recognizer"):
        align(recognizer, audio, 24_000, phonemes=["a", "x"])
    with pytest.raises(AlignmentError, match="silent"):
        align(recognizer, np.zeros(24_000, np.float32), 24_000, phonemes=["a", "b"])
    with pytest.raises(AlignmentError, match="no phones of the transcript '...'"):
        align(recognizer, audio, 24_000, text="...")
    # An untrained recognizer matches nothing: any transcript scores below the threshold.
    with pytest.raises(AlignmentError, match="does not match the audio"):
        align(recognizer, audio, 24_000, phonemes=["a", "b"], min_score=-0.5)
