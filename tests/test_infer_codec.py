import dataclasses
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import soundfile as sf
from tiny_codec import TINY, make_signal, random_variables

from audiolm_jax.training.export import save_exported
from infer.codec import main

FILE_RATE = 16_000  # the codec runs at 8 kHz: the input gets resampled
# At 8 kHz: 98 frames of hop 4, 14 chunks of 3.5 ms = 28 samples = 7 frames (the
# first chunk that reflect padding needs), so streaming compiles one chunk shape.
NUM_SAMPLES = 392
PCM_STEP = 1 / 32768


def run(*argv) -> str:
    """Runs the CLI, returning what it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def run_error(*argv) -> str:
    """Runs the CLI expecting a user error; returns its message."""
    with pytest.raises(SystemExit) as info, redirect_stdout(io.StringIO()):
        main([str(a) for a in argv])
    assert isinstance(info.value.code, str) and info.value.code.startswith("error: ")
    return info.value.code


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """An exported tiny codec, a stereo 16 kHz wav, and its offline encode -> decode."""
    root = tmp_path_factory.mktemp("codec_cli")
    save_exported(root / "tiny", "codec", TINY.to_dict(), random_variables(TINY, seed=1))
    stereo = np.concatenate([make_signal(2 * NUM_SAMPLES, FILE_RATE, 1, seed=2),
                             make_signal(2 * NUM_SAMPLES, FILE_RATE, 1, seed=3)], axis=1)
    sf.write(root / "in.wav", stereo, FILE_RATE)
    ckpt = ("--checkpoint", root / "tiny")
    printed = {"encode": run("encode", root / "in.wav", root / "codes.npz", *ckpt),
               "decode": run("decode", root / "codes.npz", root / "decoded.wav", *ckpt)}
    return root, ckpt, printed


def test_encode_writes_codes_and_says_what_it_did(cli):
    root, _, printed = cli
    out = printed["encode"]
    assert f"{FILE_RATE} Hz" in out and "resampling it to the codec's 8000 Hz" in out
    assert "2 channels; mixing them down to mono" in out
    assert "codes [1 window, 98 frames, 4 codebooks] at 32 kbps" in out
    assert "0.05 s" in out and "real-time factor" in out
    with np.load(root / "codes.npz") as data:
        assert data["codes"].shape == (1, 98, 4) and data["codes"].dtype == np.int32
        assert "scales" not in data.files  # TINY does not normalize
        assert int(data["num_samples"]) == NUM_SAMPLES
        assert data["window_frames"].tolist() == [98]
        assert int(data["sample_rate"]) == 8000 and float(data["bandwidth"]) == 32.0
        assert json.loads(str(data["config"])) == json.loads(json.dumps(TINY.to_dict()))
        assert len(np.unique(data["codes"][..., 0])) > 3


def test_decode_and_roundtrip_agree(cli):
    root, ckpt, printed = cli
    assert "decoded" in printed["decode"] and "0.05 s, 8000 Hz, 1 ch" in printed["decode"]
    decoded, sr = sf.read(root / "decoded.wav", always_2d=True)
    assert sr == 8000 and decoded.shape == (NUM_SAMPLES, 1)
    out = run("roundtrip", root / "in.wav", root / "rt.wav", *ckpt, "--plot", root / "rt.png")
    assert "SI-SNR" in out and "mel distance" in out and "resampling" in out
    assert (root / "rt.png").stat().st_size > 1000
    roundtrip, _ = sf.read(root / "rt.wav", always_2d=True)
    np.testing.assert_allclose(roundtrip, decoded, atol=PCM_STEP)


def test_streaming_equals_offline(cli):
    root, ckpt, _ = cli
    stream = ("--stream", "--chunk-ms", "3.5")
    out = run("encode", root / "in.wav", root / "streamed.npz", *ckpt, *stream,
              "--bandwidth", "16")
    assert "streamed in 3.5 ms chunks" in out and "2 codebooks] at 16 kbps" in out
    with np.load(root / "streamed.npz") as streamed, np.load(root / "codes.npz") as offline:
        # Residual VQ: the 2 codebooks of 16 kbps are the first 2 of 32 kbps.
        np.testing.assert_array_equal(streamed["codes"], offline["codes"][..., :2])
    run("decode", root / "codes.npz", root / "streamed.wav", *ckpt, *stream)
    decoded, _ = sf.read(root / "decoded.wav", always_2d=True)
    streamed, _ = sf.read(root / "streamed.wav", always_2d=True)
    np.testing.assert_allclose(streamed, decoded, atol=PCM_STEP)
    run("roundtrip", root / "in.wav", root / "streamed_rt.wav", *ckpt, *stream)
    streamed_rt, _ = sf.read(root / "streamed_rt.wav", always_2d=True)
    np.testing.assert_allclose(streamed_rt, decoded, atol=PCM_STEP)


def test_bad_bandwidth_lists_the_supported_ones(cli):
    root, ckpt, _ = cli
    message = run_error("encode", root / "in.wav", root / "x.npz", *ckpt, "--bandwidth", "5")
    assert "unsupported bandwidth 5.0 kbps" in message and "[8.0, 16.0, 32.0]" in message


def test_decode_rejects_bad_codes(cli):
    root, ckpt, _ = cli
    with np.load(root / "codes.npz") as data:
        fields = {key: data[key] for key in data.files}
    codes = fields["codes"].copy()
    codes[0, 3, 1] = 99
    np.savez(root / "bad_code.npz", **{**fields, "codes": codes})
    message = run_error("decode", root / "bad_code.npz", root / "x.wav", *ckpt)
    assert "bad_code.npz" in message and "code 99 at index (0, 3, 1) (codebook 1)" in message

    other = TINY.to_dict()
    other["seanet"]["hidden_size"] = 16
    np.savez(root / "other_codec.npz", **{**fields, "config": np.asarray(json.dumps(other))})
    message = run_error("decode", root / "other_codec.npz", root / "x.wav", *ckpt)
    assert "different codec" in message and "seanet.hidden_size: 16 in the file, 8" in message

    np.savez(root / "no_codes.npz", num_samples=3)
    assert "lacks ['codes'" in run_error("decode", root / "no_codes.npz", root / "x.wav", *ckpt)


def test_stream_refuses_codecs_that_cannot_stream(cli, tmp_path):
    root, _, _ = cli
    normalizing = dataclasses.replace(TINY, normalize=True)
    save_exported(tmp_path / "norm", "codec", normalizing.to_dict(), random_variables(TINY))
    message = run_error("roundtrip", root / "in.wav", tmp_path / "x.wav", "--checkpoint",
                        tmp_path / "norm", "--stream")
    assert "cannot stream" in message and "RMS" in message


def test_missing_files_are_named(cli, tmp_path):
    root, ckpt, _ = cli
    assert "nothing.wav" in run_error("encode", tmp_path / "nothing.wav", tmp_path / "x.npz",
                                      *ckpt)
    assert "no_model" in run_error("encode", root / "in.wav", tmp_path / "x.npz",
                                   "--checkpoint", tmp_path / "no_model")
    with pytest.raises(SystemExit) as info, redirect_stdout(io.StringIO()):
        main(["encode", "a.wav"])  # argparse: missing arguments
    assert info.value.code == 2


def test_channel_conversion(tmp_path, capsys):
    from audiolm_jax.models.codec.model import Codec
    from infer.codec import CodecCliError, load_input

    stereo_codec = Codec(dataclasses.replace(
        TINY, seanet=dataclasses.replace(TINY.seanet, audio_channels=2)))
    mono = make_signal(80, 8000)
    sf.write(tmp_path / "mono.wav", mono, 8000)
    audio = load_input(tmp_path / "mono.wav", stereo_codec)
    assert "mono; duplicating it to the codec's 2 channels" in capsys.readouterr().out
    assert audio.shape == (80, 2)
    np.testing.assert_allclose(audio[:, 0], audio[:, 1])
    np.testing.assert_allclose(audio[:, 0], mono[:, 0], atol=PCM_STEP)
    sf.write(tmp_path / "three.wav", np.repeat(mono, 3, axis=1), 8000)
    with pytest.raises(CodecCliError, match="three.wav has 3 channels and the codec 2"):
        load_input(tmp_path / "three.wav", stereo_codec)


# ----------------------------------------------------------------------------- fingerprints


def test_codes_record_the_weights_and_decode_refuses_other_weights(cli, tmp_path):
    from audiolm_jax.training.export import exported_fingerprint

    root, ckpt, _ = cli
    fingerprint = exported_fingerprint(root / "tiny")
    with np.load(root / "codes.npz") as data:
        assert str(data["fingerprint"]) == fingerprint
        fields = {key: data[key] for key in data.files}
    # Same config, other weights (another training run): refused, naming both.
    save_exported(tmp_path / "other", "codec", TINY.to_dict(), random_variables(TINY, seed=7))
    other = exported_fingerprint(tmp_path / "other")
    assert other != fingerprint
    message = run_error("decode", root / "codes.npz", tmp_path / "x.wav",
                        "--checkpoint", tmp_path / "other")
    assert "codes.npz" in message and fingerprint in message and other in message
    assert "--force" in message and not (tmp_path / "x.wav").exists()
    run("decode", root / "codes.npz", tmp_path / "forced.wav", "--checkpoint",
        tmp_path / "other", "--force")
    assert sf.info(tmp_path / "forced.wav").frames == NUM_SAMPLES
    # Codes written before fingerprints are accepted.
    np.savez(tmp_path / "old.npz", **{k: v for k, v in fields.items() if k != "fingerprint"})
    run("decode", tmp_path / "old.npz", tmp_path / "old.wav", "--checkpoint", tmp_path / "other")


def test_fingerprint_of_workdirs_and_old_exports(cli, tmp_path):
    import shutil

    from audiolm_jax.convert.encodec import load_codec
    from audiolm_jax.files import fingerprint
    from audiolm_jax.training.export import exported_fingerprint
    from infer.codec import codec_fingerprint

    root, _, _ = cli
    recorded = exported_fingerprint(root / "tiny")
    shutil.copytree(root / "tiny", tmp_path / "workdir" / "export")
    _, variables = load_codec(tmp_path / "workdir")
    assert codec_fingerprint(tmp_path / "workdir", variables) == recorded
    # An export without a recorded fingerprint: computed from the loaded weights, the same.
    shutil.copytree(root / "tiny", tmp_path / "old")
    header = json.loads((tmp_path / "old" / "model.json").read_text())
    del header["fingerprint"]
    (tmp_path / "old" / "model.json").write_text(json.dumps(header))
    assert exported_fingerprint(tmp_path / "old") is None
    assert codec_fingerprint(tmp_path / "old", variables) == fingerprint(variables) == recorded


# ----------------------------------------------------------------------------- folders

# At 8 kHz, hop 4; --bucket-seconds 0.05 is a 400-sample base, so the buckets are
# 400, 800, 1200, ... samples. Four files of four lengths in three buckets.
FOLDER_LENGTHS = {"a.wav": 300, "a.flac": 392, "sub/b.wav": 401, "c.wav": 1000}
BUCKETS = ("--bucket-seconds", "0.05")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec_folder")
    for i, (name, length) in enumerate(FOLDER_LENGTHS.items()):
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "in" / name, make_signal(length, 8000, seed=10 + i), 8000)
    sf.write(root / "in" / "bad.wav", np.full(64, np.nan, np.float32), 8000, subtype="FLOAT")
    return root


def test_folder_roundtrip_compiles_once_per_bucket(cli, folder):
    _, ckpt, _ = cli
    out = run("roundtrip", folder / "in", folder / "rt", *ckpt, *BUCKETS)
    summary = [line for line in out.splitlines() if line.startswith("roundtrip:")][0]
    assert "4 of 5 files" in summary and "3 length buckets" in summary
    assert "1 skipped" in summary and "skipped.txt" in summary
    encoder_compiles = int(summary.split("encoder compiled ")[1].split("x")[0])
    decoder_compiles = int(summary.split("decoder ")[1].split("x")[0])
    assert encoder_compiles <= 3 and decoder_compiles <= 3     # 4 lengths, 3 buckets
    written = {"a.wav": "a.wav", "a.flac": "a.flac.wav", "sub/b.wav": "sub/b.wav",
               "c.wav": "c.wav"}
    for name, length in FOLDER_LENGTHS.items():
        assert sf.info(folder / "rt" / written[name]).frames == length
    assert (folder / "rt" / "skipped.txt").read_text().startswith("bad.wav: ")
    assert "NaN" in (folder / "rt" / "skipped.txt").read_text()
    metrics = [json.loads(line) for line in (folder / "rt" / "metrics.jsonl").read_text()
               .splitlines()]
    assert sorted(m["output"] for m in metrics) == sorted(written.values())
    assert "mean SI-SNR" in out
    # A second run compiles nothing new.
    again = run("roundtrip", folder / "in", folder / "rt2", *ckpt, *BUCKETS)
    assert "encoder compiled 0x, decoder 0x" in again


def test_bucketed_codes_and_audio_equal_the_single_file_path(cli):
    """Padding at the end of a causal codec: exact but for the final, partial frame."""
    from audiolm_jax.convert.encodec import load_codec
    from infer.codec import decode, decode_bucketed, encode, encode_bucketed

    root, _, _ = cli
    model, variables = load_codec(root / "tiny")
    for length in (392, 401):                 # a multiple of the hop (4), and not
        audio = make_signal(length, 8000, seed=length)
        exact = encode(model, variables, audio, None)
        bucketed = encode_bucketed(model, variables, audio, 32.0, base=400)
        assert bucketed.window_frames == exact.window_frames == (-(-length // 4),)
        assert bucketed.num_samples == length
        full = length // 4                    # whole frames: identical codes
        np.testing.assert_array_equal(bucketed.codes[:, :, :full], exact.codes[:, :, :full])
        # Decoding in buckets is exact: the decoder is causal.
        reference = decode(model, variables, exact)
        np.testing.assert_allclose(decode_bucketed(model, variables, exact, base=400),
                                   reference, atol=1e-6)
        roundtrip = decode_bucketed(model, variables, bucketed, base=400)
        assert roundtrip.shape == reference.shape == (length, 1)
        np.testing.assert_allclose(roundtrip[:full * 4], reference[:full * 4], atol=1e-6)
        if length % 4 == 0:
            np.testing.assert_array_equal(bucketed.codes, exact.codes)


def test_folder_encode_then_decode_keeps_names_and_refuses_other_weights(cli, folder):
    _, ckpt, _ = cli
    out = run("encode", folder / "in", folder / "codes", *ckpt, *BUCKETS)
    assert "encode: 4 of 5 files" in out
    for name in FOLDER_LENGTHS:
        assert (folder / "codes" / f"{name}.npz").is_file()   # a.wav.npz and a.flac.npz
    # One codes file from other weights: listed with both fingerprints, the rest decoded.
    with np.load(folder / "codes" / "c.wav.npz") as data:
        fields = {key: data[key] for key in data.files}
    np.savez(folder / "codes" / "foreign.npz",
             **{**fields, "fingerprint": np.asarray("0123456789abcdef")})
    out = run("decode", folder / "codes", folder / "decoded", *ckpt, *BUCKETS)
    assert "decode: 4 of 5 files" in out
    skipped = (folder / "decoded" / "skipped.txt").read_text()
    assert skipped.startswith("foreign.npz: ") and "0123456789abcdef" in skipped
    assert str(fields["fingerprint"]) in skipped
    names = {"a.wav": "a.wav", "a.flac": "a.flac.wav", "sub/b.wav": "sub/b.wav",
             "c.wav": "c.wav"}
    for name, length in FOLDER_LENGTHS.items():
        assert sf.info(folder / "decoded" / names[name]).frames == length
    # The folder's (bucketed) decode equals the single-file decode of the same codes.
    run("decode", folder / "codes" / "sub" / "b.wav.npz", folder / "single.wav", *ckpt)
    single, _ = sf.read(folder / "single.wav", always_2d=True)
    bucketed, _ = sf.read(folder / "decoded" / "sub" / "b.wav", always_2d=True)
    np.testing.assert_allclose(bucketed, single, atol=PCM_STEP)
    out = run("decode", folder / "codes", folder / "forced", *ckpt, *BUCKETS, "--force")
    assert "decode: 5 of 5 files" in out and (folder / "forced" / "foreign.wav").is_file()
    empty = folder / "empty"
    empty.mkdir()
    assert "no codes files" in run_error("decode", empty, folder / "x", *ckpt)
    assert "--plot draws a single file" in run_error("roundtrip", folder / "in", folder / "x",
                                                     *ckpt, "--plot", folder / "p.png")


def test_only_codecs_that_can_stream_are_padded():
    from audiolm_jax.models.codec.model import Codec
    from infer.codec import bucket_base, padding_is_safe

    assert padding_is_safe(Codec(TINY)) is None
    assert "RMS" in padding_is_safe(Codec(dataclasses.replace(TINY, normalize=True)))
    windowed = dataclasses.replace(TINY, chunk_length_s=0.01, overlap=0.01)
    assert "chunk_length_s" in padding_is_safe(Codec(windowed))
    not_causal = dataclasses.replace(TINY, seanet=dataclasses.replace(TINY.seanet, causal=False))
    assert padding_is_safe(Codec(not_causal)) is not None
    assert bucket_base(Codec(TINY), 0.05) == 400 and bucket_base(Codec(TINY), 0.0001) == 4


def test_save_audio_is_atomic(tmp_path, monkeypatch):
    from audiolm_jax.audio import io

    io.save_audio(tmp_path / "a.flac", make_signal(80, 8000), 8000)
    assert sf.info(tmp_path / "a.flac").format == "FLAC"       # format from the suffix
    real_write = sf.write

    def dies_half_way(file, data, *args, **kwargs):
        real_write(file, data[:10], *args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(io.sf, "write", dies_half_way)
    with pytest.raises(RuntimeError, match="killed"):
        io.save_audio(tmp_path / "a.flac", make_signal(160, 8000), 8000)
    assert sf.info(tmp_path / "a.flac").frames == 80            # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["a.flac"]   # no temporary file left
