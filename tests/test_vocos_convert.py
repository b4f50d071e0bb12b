"""Vocos import parity: `vocos.Vocos` with random weights against ours, converted.

Two configs: the public `vocos-mel-24khz` front end (100 mels, n_fft 1024, hop
256, centred) with a small backbone, and a 'same'-padded, AdaLayerNorm-
conditioned one (80 mels, n_fft 512, hop 128, 4 condition ids). Both go
through the real command-line path: config.yaml + pytorch_model.bin on disk,
`python -m audiolm_jax.convert vocos`, `load_vocoder`. Tolerance 1e-4 on the
log-mel features and on the decoded audio (absolute, with audio of peak ~1).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.vocos_reference import import_vocos

torch = pytest.importorskip("torch")
vocos = import_vocos()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from audiolm_jax.convert import __main__ as convert_cli  # noqa: E402
from audiolm_jax.convert.vocos import load_vocoder  # noqa: E402
from audiolm_jax.models.vocoder import Vocos, mel_features  # noqa: E402

CONFIGS = {
    "mel_24khz": dict(fe=dict(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100,
                              padding="center"),
                      bb=dict(input_channels=100, dim=48, intermediate_dim=96, num_layers=2),
                      head=dict(dim=48, n_fft=1024, hop_length=256, padding="center")),
    "same_adanorm": dict(fe=dict(sample_rate=16000, n_fft=512, hop_length=128, n_mels=80,
                                 padding="same"),
                         bb=dict(input_channels=80, dim=32, intermediate_dim=64, num_layers=3,
                                 adanorm_num_embeddings=4),
                         head=dict(dim=32, n_fft=512, hop_length=128, padding="same")),
}


def _hparams(spec: dict) -> dict:
    return {"feature_extractor": {"class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
                                  "init_args": spec["fe"]},
            "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": spec["bb"]},
            "head": {"class_path": "vocos.heads.ISTFTHead", "init_args": spec["head"]}}


def _reference(spec: dict, tmp_path):
    """A `vocos.Vocos` with random weights written as config.yaml + pytorch_model.bin."""
    torch.manual_seed(0)
    hparams = _hparams(spec)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(hparams))
    model = vocos.Vocos.from_hparams(str(tmp_path / "config.yaml")).eval()
    with torch.no_grad():   # not the init: every weight random, norms and gammas included
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05
                    + (1.0 if name.endswith(("norm.weight", "scale.weight")) else 0.0))
        # Log-magnitudes around 3: audio of peak ~1, so the absolute tolerance means something.
        model.head.out.bias += 3.0
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_vocos_import_matches_the_reference(name, tmp_path):
    spec = CONFIGS[name]
    src, out = tmp_path / "src", tmp_path / "export"
    src.mkdir()
    reference = _reference(spec, src)
    assert convert_cli.main(["vocos", str(src), str(out)]) == 0
    config, variables = load_vocoder(out)

    rng = np.random.default_rng(0)
    sr = spec["fe"]["sample_rate"]
    t = np.arange(int(0.37 * sr)) / sr
    audio = (0.5 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
             + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)[None]
    kwargs = {} if "adanorm_num_embeddings" not in spec["bb"] else {
        "bandwidth_id": torch.tensor([2])}
    with torch.no_grad():
        ref_features = reference.feature_extractor(torch.from_numpy(audio)).numpy()
        ref_audio = reference.decode(torch.from_numpy(ref_features), **kwargs).numpy()

    features = jax.jit(lambda a: mel_features(a, config))(audio)
    np.testing.assert_allclose(np.asarray(features), ref_features.transpose(0, 2, 1), atol=1e-4,
                               rtol=1e-5)
    assert features.shape[1] == config.num_frames(audio.shape[1])

    bandwidth = None if not kwargs else jnp.asarray([2])
    decoded = jax.jit(lambda v, f: Vocos(config).apply(v, f, bandwidth))(
        variables, ref_features.transpose(0, 2, 1))
    assert decoded.shape == ref_audio.shape == (1, config.num_samples(features.shape[1]))
    assert np.abs(ref_audio).max() > 0.1    # a real signal, not a vanishing one
    np.testing.assert_allclose(np.asarray(decoded), ref_audio, atol=1e-4, rtol=1e-4)


def test_vocos_import_refuses_what_it_cannot_read(tmp_path):
    hparams = _hparams(CONFIGS["mel_24khz"])
    hparams["head"]["class_path"] = "vocos.heads.IMDCTCosHead"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(hparams))
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="IMDCTCosHead is not supported"):
        load_vocoder(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_vocoder(tmp_path)
    # A pickle that is not a plain state dict is refused by the weights-only loader.
    hparams["head"]["class_path"] = "vocos.heads.ISTFTHead"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(hparams))
    torch.save({"x": object()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only"):
        load_vocoder(tmp_path)


def test_encodec_vocos_import_decodes_codes_like_the_reference(tmp_path):
    """The `vocos-encodec-24khz` layout: EnCodec codes -> summed codebook vectors ->
    AdaLayerNorm backbone conditioned on the bandwidth id -> 'same' ISTFT head. Built
    from vocos's own backbone and head (its EncodecFeatures would download EnCodec);
    the EnCodec weights a real file carries are skipped."""
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    torch.manual_seed(1)
    bb = dict(input_channels=16, dim=32, intermediate_dim=64, num_layers=2,
              adanorm_num_embeddings=4)
    head_args = dict(dim=32, n_fft=320, hop_length=80, padding="same")
    hparams = {"feature_extractor": {"class_path": "vocos.feature_extractors.EncodecFeatures",
                                     "init_args": {"encodec_model": "encodec_24khz",
                                                   "bandwidths": [1.5, 3.0, 6.0, 12.0]}},
               "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": bb},
               "head": {"class_path": "vocos.heads.ISTFTHead", "init_args": head_args}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(hparams))
    backbone, head = VocosBackbone(**bb).eval(), ISTFTHead(**head_args).eval()
    with torch.no_grad():
        for p in list(backbone.parameters()) + list(head.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
        head.out.bias += 3.0
    table = torch.randn(8 * 1024, 16)
    state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()},
             "feature_extractor.codebook_weights": table,
             "feature_extractor.encodec.encoder.model.0.conv.conv.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "pytorch_model.bin")

    config, variables = load_vocoder(tmp_path)
    assert (config.features, config.num_codebooks, config.sample_rate) == ("encodec", 8, 24000)
    codes = np.random.default_rng(0).integers(0, 1024, size=(2, 30, 8))
    with torch.no_grad():
        offsets = torch.arange(8)[None, None, :] * 1024
        ref_features = table[torch.from_numpy(codes) + offsets].sum(dim=2)   # [b, t, c]
        ref_audio = head(backbone(ref_features.transpose(1, 2),
                                  bandwidth_id=torch.tensor([3]))).numpy()
    model = Vocos(config)
    features = model.apply(variables, jnp.asarray(codes), method=Vocos.codes_to_features)
    np.testing.assert_allclose(np.asarray(features), ref_features.numpy(), atol=1e-5)
    decoded = model.apply(variables, features, jnp.asarray([3, 3]))
    assert decoded.shape == ref_audio.shape == (2, 30 * 80)
    np.testing.assert_allclose(np.asarray(decoded), ref_audio, atol=1e-4, rtol=1e-4)
