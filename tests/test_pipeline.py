import logging

import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.data.pipeline import make_audio_pipeline, random_crop
from audiolm_jax.data.sources import AudioFolderSource, ManifestSource


def take(pipeline, n):
    it = iter(pipeline)
    return [next(it) for _ in range(n)]


def make(source, seed=0, **kw):
    args = dict(sample_rate=24_000, crop_samples=12_000, batch_size=4, seed=seed, num_threads=2)
    args.update(kw)
    return make_audio_pipeline(source, **args)


def test_deterministic_for_a_seed(audio_folder):
    source = AudioFolderSource(audio_folder)
    a, b = take(make(source), 5), take(make(source), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["audio"], y["audio"])
    c = take(make(source, seed=1), 5)
    assert not all(np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, c))
    assert a[0]["audio"].shape == (4, 12_000, 1) and a[0]["mask"].all()


def test_iterator_state_resumes_the_same_batches(audio_folder):
    source = AudioFolderSource(audio_folder)
    it = iter(make(source))
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it)["audio"] for _ in range(4)]   # crosses an epoch boundary (12 files)
    it2 = iter(make(source))
    it2.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(it2)["audio"], want)


def test_resamples_to_the_target_rate(tmp_path):
    t = np.arange(16_000) / 16_000
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16_000)
    batch = take(make(AudioFolderSource(tmp_path), batch_size=1, crop_samples=24_000), 1)[0]
    spectrum = np.abs(np.fft.rfft(batch["audio"][0, :, 0]))
    assert abs(np.argmax(spectrum) * 24_000 / 24_000 - 1000) <= 2   # 1 s at 24 kHz: 1 Hz bins


def test_bad_files_are_skipped_counted_and_named(tmp_path, audio_folder, caplog):
    (audio_folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (audio_folder / "empty.wav").write_bytes(b"")
    sf.write(audio_folder / "silent.wav", np.zeros(24_000, np.float32), 24_000)
    nan = np.full(24_000, 0.1, np.float32)
    nan[::1000] = np.nan    # crops read only their frames: every crop must meet a NaN
    sf.write(audio_folder / "nan.wav", nan, 24_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        source = AudioFolderSource(audio_folder)
        pipeline = make(source, num_epochs=1, shuffle=False, batch_size=1)
        batches = list(pipeline)
    assert {p.split("/")[-1] for p, _ in source.skipped} == {"broken.wav", "empty.wav"}
    assert sorted(p.split("/")[-1] for p in pipeline.report.files) == ["nan.wav", "silent.wav"]
    assert "silent" in pipeline.report.files[str(audio_folder / "silent.wav")]
    assert len(batches) == 12                                   # every good clip, no zeros
    assert all(np.abs(b["audio"]).max() > 0.01 for b in batches)
    assert "broken.wav" in caplog.text and "nan.wav" in caplog.text


def test_a_folder_of_only_undecodable_files_is_a_clear_error_not_a_hang(tmp_path):
    """Every file passes the header check and fails to decode or is silent: the first
    epoch finds them all bad, and the iterator raises naming the folder and the counts."""
    import time

    from audiolm_jax.data.pipeline import NoUsableAudioError

    good = (0.1 * np.random.default_rng(0).standard_normal(48_000)).astype(np.float32)
    for i in range(2):
        sf.write(tmp_path / f"cut{i}.wav", good, 24_000)
        data = (tmp_path / f"cut{i}.wav").read_bytes()
        (tmp_path / f"cut{i}.wav").write_bytes(data[:len(data) // 3])
    sf.write(tmp_path / "cut.flac", good, 24_000)
    data = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:len(data) // 3])
    sf.write(tmp_path / "quiet.wav", np.zeros(48_000, np.float32), 24_000)
    source = AudioFolderSource(tmp_path)
    assert len(source) == 4                       # all four headers read fine
    start = time.perf_counter()
    with pytest.raises(NoUsableAudioError, match=rf"AudioFolderSource\({tmp_path}, 4 files\): "
                       r"none of its 4 files is usable audio \(1 cannot decode, 1 silent, "
                       r"2 truncated\)"):
        take(make(source, batch_size=2), 1)
    assert time.perf_counter() - start < 60       # it used to spin forever


def test_truncated_audio_with_a_valid_header_is_skipped_and_counted(audio_folder):
    from audiolm_jax.data.pipeline import wav_truncation

    data = (audio_folder / "clip03.wav").read_bytes()
    (audio_folder / "clip03.wav").write_bytes(data[:len(data) // 2])
    assert sf.info(audio_folder / "clip03.wav").frames > 0          # libsndfile: no complaint
    assert "data chunk declares 96000 bytes" in wav_truncation(audio_folder / "clip03.wav")
    pipeline = make(AudioFolderSource(audio_folder), num_epochs=1, shuffle=False, batch_size=1)
    assert len(list(pipeline)) == 11
    assert pipeline.report.counts_by_reason() == {"truncated": 1}
    assert "clip03.wav" in next(iter(pipeline.report.files))


def test_a_sidecar_that_is_not_utf8_is_read_with_replacement_and_named(audio_folder, caplog):
    (audio_folder / "clip05.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        record = AudioFolderSource(audio_folder)[5]
    assert record["text"] == "caf\ufffd au lait"
    assert "clip05.txt is not UTF-8" in caplog.text


def test_crops_of_a_long_file_decode_only_their_frames(tmp_path, monkeypatch):
    """A 10-minute file costs what a 10-second one does: every crop decodes its window
    (plus the resampler's margin), never the whole file."""
    import audiolm_jax.data.pipeline as pipeline_lib

    rng = np.random.default_rng(0)
    for name, seconds in (("long", 600), ("short", 10)):
        folder = tmp_path / name
        folder.mkdir()
        sf.write(folder / "a.wav", (0.1 * rng.standard_normal(seconds * 8_000)).astype(
            np.float32), 8_000, subtype="PCM_16")
    decoded = []
    real_read = pipeline_lib.sf.read

    def counting_read(*args, **kwargs):
        audio, sr = real_read(*args, **kwargs)
        decoded.append(len(audio))
        return audio, sr

    monkeypatch.setattr(pipeline_lib.sf, "read", counting_read)
    frames = {}
    for name in ("long", "short"):
        decoded.clear()
        batch = take(make(AudioFolderSource(tmp_path / name), sample_rate=16_000,
                          crop_samples=8_000, batch_size=4), 1)[0]
        assert batch["audio"].shape == (4, 8_000, 1) and batch["mask"].all()
        frames[name] = list(decoded)
    # 0.5 s at 8 kHz = 4000 source frames per crop, plus 256 each side for the resampler.
    assert frames["long"] and all(n <= 4_000 + 2 * 256 for n in frames["long"])
    assert max(frames["long"]) == max(frames["short"])


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AudioFolderSource(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no audio files"):
        AudioFolderSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        ManifestSource(tmp_path)


def test_sidecar_text(audio_folder):
    source = AudioFolderSource(audio_folder)
    assert source[3]["text"] == "clip number 3"


def test_short_clips_are_padded_with_a_mask():
    audio, mask = random_crop(np.ones((100, 1), np.float32), 150, np.random.default_rng(0))
    assert audio.shape == (150, 1) and mask.sum() == 100 and not audio[100:].any()


def test_process_shards_are_disjoint_and_cover(audio_folder):
    source = AudioFolderSource(audio_folder)
    seen = []
    for index in range(3):
        pipe = make(source, shard_index=index, shard_count=3, num_epochs=1, batch_size=1,
                    crop_samples=48_000, shuffle=False)
        seen.append({b["audio"][0, :, 0].tobytes() for b in pipe})
    assert all(len(s) == 4 for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_damaged_cached_corpus_is_rebuilt(tmp_path):
    from audiolm_jax.data.corpora.common import build_cached, write_item

    calls = []

    def build(folder):
        calls.append(folder)
        return [write_item(folder, f"x{i}", np.full(2_400, 0.1 * (i + 1), np.float32), 24_000,
                           f"item {i}") for i in range(3)]

    first = build_cached("toy", "tiny", 0, 1, build, root=tmp_path)
    assert build_cached("toy", "tiny", 0, 1, build, root=tmp_path) == first and len(calls) == 1
    (first / "audio" / "x1.flac").unlink()          # e.g. a cleanup that raced the build
    again = build_cached("toy", "tiny", 0, 1, build, root=tmp_path)
    assert len(calls) == 2 and (again / "audio" / "x1.flac").is_file()
    source = ManifestSource(again)
    assert len(source) == 3 and source[1]["path"].endswith("audio/x1.flac")
    assert "audio" not in source[1] and source[1]["text"] == "item 1"
    batch = take(make(source, batch_size=3, crop_samples=2_400, shuffle=False), 1)[0]
    np.testing.assert_allclose(np.abs(batch["audio"]).max(axis=(1, 2)), [0.1, 0.2, 0.3], atol=1e-3)
