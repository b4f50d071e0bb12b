"""`infer/vocoder.py`: features, decode and roundtrip through an export, with notices for
resampling and clear errors for a wrong mel layout."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from audiolm_jax.models.vocoder import VocosConfig, init_vocos
from audiolm_jax.training.export import save_exported
from infer import vocoder as cli

CONFIG = VocosConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, dim=16,
                     intermediate_dim=32, num_layers=1)


def test_features_decode_and_roundtrip(tmp_path, capsys):
    export = tmp_path / "vocoder"
    save_exported(export, "vocoder", CONFIG.to_dict(), init_vocos(CONFIG), source="test")
    t = np.arange(16000) / 16000           # 16 kHz: resampled to the vocoder's 8 kHz
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 16000)

    assert cli.main(["features", str(tmp_path / "in.wav"), str(tmp_path / "mel.npy"),
                     "--checkpoint", str(export)]) == 0
    assert "resampled to the vocoder's 8000 Hz" in capsys.readouterr().out
    mel = np.load(tmp_path / "mel.npy")
    assert mel.shape == (CONFIG.num_frames(8000), 32)

    assert cli.main(["decode", str(tmp_path / "mel.npy"), str(tmp_path / "out.wav"),
                     "--checkpoint", str(export)]) == 0
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 8000 and len(out) == CONFIG.num_samples(mel.shape[0])
    assert sf.info(tmp_path / "out.wav").subtype == "FLOAT"

    assert cli.main(["roundtrip", str(tmp_path / "in.wav"), str(tmp_path / "rt.wav"),
                     "--checkpoint", str(export), "--plot", str(tmp_path / "rt.png")]) == 0
    line = capsys.readouterr().out
    assert "log-mel L1" in line and "real-time factor" in line
    assert (tmp_path / "rt.png").stat().st_size > 5000

    np.save(tmp_path / "transposed.npy", mel.T)
    assert cli.main(["decode", str(tmp_path / "transposed.npy"), str(tmp_path / "x.wav"),
                     "--checkpoint", str(export)]) == 1
    assert "pass --channels-first" in capsys.readouterr().err
    assert cli.main(["decode", str(tmp_path / "transposed.npy"), str(tmp_path / "x.wav"),
                     "--checkpoint", str(export), "--channels-first"]) == 0
    assert cli.main(["decode", str(tmp_path / "mel.npy"), str(tmp_path / "x.wav"),
                     "--checkpoint", str(tmp_path / "nowhere")]) == 1
    assert "holds no vocoder" in capsys.readouterr().err
