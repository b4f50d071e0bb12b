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
