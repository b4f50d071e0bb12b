"""The EnCodec importer against Hugging Face's `EncodecModel` with random weights.

Reference models are built from tiny `transformers.EncodecConfig`s, randomized
where torch's init is trivial (weight-norm gains, group-norm affine, the
codebooks, which HF initializes to zeros), saved with `save_pretrained`,
converted with `audiolm_jax.convert` (no torch involved) and compared on the
same audio: identical codes at every target bandwidth, decoded audio within
1e-4, scales within 1e-5 (relative). MusicGen's 32 kHz codec is also read from
a MusicGen-style state dict (`audio_encoder.*` beside the LM's keys).
"""

import json
import shutil

import jax
import numpy as np
import pytest

from audiolm_jax.convert.__main__ import main as convert_main
from audiolm_jax.convert.encodec import (
    convert_encodec,
    encodec_from_state,
    load_codec,
    load_hf_encodec,
    save_codec_export,
)
from audiolm_jax.convert.hf import read_safetensors_dir
from audiolm_jax.models.codec.inference import decode_audio, encode_audio
from audiolm_jax.models.codec.model import CodecConfig
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import load_exported, save_exported

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOL_AUDIO = 1e-4
RTOL_SCALE = 1e-5

CONFIGS = {
    # 24 kHz mono, EnCodec's defaults but narrow: ratios (8, 5, 4, 2), 1024 codes,
    # 1.5 .. 24 kbps (2 .. 32 codebooks).
    "24khz_mono": dict(num_filters=4, hidden_size=16),
    # EnCodec 48 kHz style: stereo, normalized, time group norm, non-causal, windows of
    # 480 samples with stride 360 (1700 samples: 5 windows, the last one short).
    "48khz_stereo": dict(
        sampling_rate=48_000, audio_channels=2, normalize=True, norm_type="time_group_norm",
        use_causal_conv=False, chunk_length_s=0.01, overlap=0.25, num_filters=4,
        hidden_size=16, upsampling_ratios=[5, 4], codebook_size=32,
        target_bandwidths=[12.0, 24.0, 48.0]),
    # Everything else off its default.
    "odd": dict(
        sampling_rate=12_000, num_filters=6, hidden_size=12, upsampling_ratios=[3, 2],
        kernel_size=5, last_kernel_size=3, residual_kernel_size=5, dilation_growth_rate=3,
        num_residual_layers=2, compress=3, use_conv_shortcut=False, pad_mode="constant",
        num_lstm_layers=1, trim_right_ratio=0.5, codebook_size=16,
        target_bandwidths=[8.0, 24.0]),
    # MusicGen's EnCodec 32 kHz (MUSICGEN_32KHZ) but narrow: ratios (8, 5, 4, 4), hop 640,
    # 50 Hz, non-causal, reflect padding, no conv shortcut, 2048 codes, 2.2 kbps = 4 books.
    "32khz_musicgen": dict(
        sampling_rate=32_000, num_filters=4, hidden_size=16, upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048, target_bandwidths=[2.2], use_causal_conv=False, normalize=False,
        pad_mode="reflect", use_conv_shortcut=False, num_lstm_layers=2),
}
NUM_SAMPLES = {"24khz_mono": 3 * 320 * 7 + 111, "48khz_stereo": 1700, "odd": 6 * 40 + 5,
               "32khz_musicgen": 640 * 5 + 123}
# encode_audio and decode_audio compile the whole codec once per number of codebooks and
# window length (seconds each on a CPU), so they run at these bandwidths only; at the
# others HF's codes are compared with the first n codebooks of the largest bandwidth's
# codes (residual VQ codes are prefixes of each other, in both implementations).
API_BANDWIDTHS = {"24khz_mono": (24.0,), "48khz_stereo": (48.0,), "odd": (8.0, 24.0),
                  "32khz_musicgen": (2.2,)}
# facebook/musicgen-small's `audio_encoder` (transformers' encodec_32khz conversion: its
# EncodecConfig defaults but for these; note use_conv_shortcut False).
MUSICGEN_32KHZ = dict(
    model_type="encodec", sampling_rate=32_000, audio_channels=1, num_filters=64,
    codebook_size=2048, codebook_dim=128, hidden_size=128, upsampling_ratios=[8, 5, 4, 4],
    target_bandwidths=[2.2], use_causal_conv=False, norm_type="weight_norm", normalize=False,
    pad_mode="reflect", num_lstm_layers=2, compress=2, residual_kernel_size=3,
    dilation_growth_rate=2, kernel_size=7, last_kernel_size=7, num_residual_layers=1,
    trim_right_ratio=1.0, chunk_length_s=None, overlap=None, use_conv_shortcut=False)


# ----------------------------------------------------------------------------- helpers


def randn(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def make_audio(name: str, channels: int) -> np.ndarray:
    """[2, samples, channels]: two different signals, one much louder (normalize matters)."""
    x = 0.3 * randn(2, NUM_SAMPLES[name], channels, seed=7)
    x[1] *= 4.0
    return x


def build_hf(name: str, seed: int = 0):
    """A random-weight `EncodecModel` of CONFIGS[name] with non-trivial norms and codebooks."""
    torch.manual_seed(seed)
    model = transformers.EncodecModel(transformers.EncodecConfig(**CONFIGS[name])).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("original0", "weight_g")):  # weight norm gains (= ||v|| at init)
                p.mul_(0.5 + torch.rand(p.shape, generator=gen))
            elif ".norm." in pname:  # GroupNorm affine (1, 0 at init)
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        # HF starts with all-zero codebooks. Draw the codes around the latents (per-dimension
        # mean and spread), every layer at the same scale: codes are spread out and the
        # residual keeps its size (one that shrank layer after layer would leave the last
        # layers' choices to float rounding, and torch and XLA round differently).
        audio = torch.from_numpy(make_audio(name, model.config.audio_channels)).permute(0, 2, 1)
        audio = audio[..., :model.config.chunk_length]
        if model.config.normalize:
            audio = audio / audio.mean(1, keepdim=True).pow(2).mean(-1, keepdim=True).sqrt()
        latents = model.encoder(audio).permute(0, 2, 1).reshape(-1, model.config.hidden_size)
        mean, std = latents.mean(0), latents.std(0)
        for i, layer in enumerate(model.quantizer.layers):
            book = layer.codebook
            shape = book.embed.shape
            book.embed.copy_((mean if i == 0 else 0) + std * torch.randn(shape, generator=gen))
            book.embed_avg.copy_(torch.randn(shape, generator=gen))
            book.cluster_size.copy_(torch.rand(shape[0], generator=gen))
            book.inited.fill_(1.0)
    return model


def hf_encode_decode(model, audio: np.ndarray, bandwidth: float):
    """HF's codes as [batch, windows, frames, n_q] (+ valid frames per window), scales
    [batch, windows] or None, and decoded audio [batch, samples, channels]."""
    x = torch.from_numpy(audio).permute(0, 2, 1).contiguous()
    mask = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        enc = model.encode(x, mask, bandwidth=bandwidth, return_dict=True)
        out = model.decode(enc.audio_codes, enc.audio_scales, mask, return_dict=True,
                           last_frame_pad_length=enc.last_frame_pad_length)
    codes = enc.audio_codes.numpy().transpose(1, 0, 3, 2)  # [w, b, q, f] -> [b, w, f, q]
    frames = [codes.shape[2]] * codes.shape[1]
    frames[-1] -= enc.last_frame_pad_length
    scales = (None if enc.audio_scales[0] is None else
              torch.stack([s.view(-1) for s in enc.audio_scales], 1).numpy())
    return codes, tuple(frames), scales, out.audio_values.numpy().transpose(0, 2, 1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The reference models are tiny: torch's thread pool only spins against XLA's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (HF model, its save_pretrained dir, export dir), built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            model = build_hf(name)
            hf_dir, out_dir = root / "hf", root / "export"
            # "odd" is saved in shards, as save_pretrained does for big models.
            model.save_pretrained(hf_dir, max_shard_size="20KB" if name == "odd" else "5GB")
            convert_encodec(hf_dir, out_dir)
            cache[name] = (model, hf_dir, out_dir)
        return cache[name]

    return get


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(CONFIGS))
def test_converted_codec_matches_hf(name, converted):
    hf_model, hf_dir, out_dir = converted(name)
    hf_cfg = hf_model.config
    if name == "odd":
        assert (hf_dir / "model.safetensors.index.json").is_file()
    model, variables = load_codec(out_dir)
    cfg = model.config
    assert cfg.sample_rate == hf_cfg.sampling_rate and cfg.frame_rate == hf_cfg.frame_rate
    assert cfg.num_quantizers == hf_cfg.num_quantizers
    assert cfg.chunk_length == hf_cfg.chunk_length and cfg.chunk_stride == hf_cfg.chunk_stride
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(variables))

    audio = make_audio(name, hf_cfg.audio_channels)
    assert max(hf_cfg.target_bandwidths) in API_BANDWIDTHS[name]
    ours = {bw: encode_audio(model, variables, audio, bw) for bw in API_BANDWIDTHS[name]}
    full = ours[max(hf_cfg.target_bandwidths)]
    assert full.num_quantizers == cfg.num_quantizers
    # The codes are not degenerate: every codebook uses several codes.
    assert min(len(np.unique(full.codes[..., q])) for q in range(cfg.num_quantizers)) > 1
    for bandwidth in hf_cfg.target_bandwidths:
        codes, frames, scales, decoded = hf_encode_decode(hf_model, audio, bandwidth)
        n_q = codes.shape[-1]
        assert cfg.num_quantizers_for(bandwidth) == n_q, bandwidth
        assert full.window_frames == frames, bandwidth
        np.testing.assert_array_equal(full.codes[..., :n_q], codes,
                                      err_msg=f"{name} at {bandwidth} kbps")
        if bandwidth not in ours:
            continue
        encoded = ours[bandwidth]
        assert encoded.codes.shape == codes.shape, bandwidth
        np.testing.assert_array_equal(encoded.codes, codes, err_msg=f"{name} at {bandwidth} kbps")
        if scales is None:
            assert encoded.scales is None
        else:
            np.testing.assert_allclose(encoded.scales, scales, rtol=RTOL_SCALE)
        recon = np.asarray(decode_audio(model, variables, encoded))
        assert recon.shape == audio.shape == decoded.shape
        diff = float(np.abs(recon - decoded).max())
        assert diff < TOL_AUDIO, (name, bandwidth, diff)


def test_old_weight_norm_keys_and_hf_dir_loading(converted, tmp_path):
    """`weight_g`/`weight_v` checkpoints (torch's old weight_norm) convert to the same
    variables; `load_codec` also reads an HF directory and a training workdir."""
    _, hf_dir, out_dir = converted("24khz_mono")
    tensors = read_safetensors_dir(hf_dir)
    renamed = {k.replace("conv.parametrizations.weight.original0", "conv.weight_g")
                .replace("conv.parametrizations.weight.original1", "conv.weight_v"): v
               for k, v in tensors.items()}
    assert sum(k.endswith("weight_g") for k in renamed) > 10
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(hf_dir / "config.json", old / "config.json")
    safetensors_numpy.save_file(renamed, str(old / "model.safetensors"))
    _, new_vars = load_hf_encodec(hf_dir)
    _, old_vars = load_hf_encodec(old)
    jax.tree.map(np.testing.assert_array_equal, old_vars, new_vars)

    _, exported = load_codec(out_dir)
    from_hf_model, from_hf = load_codec(old)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 from_hf, exported)
    workdir = tmp_path / "run"
    shutil.copytree(out_dir, workdir / "export")
    model, _ = load_codec(workdir)
    assert model.config == from_hf_model.config


def test_cli_converts_and_reports(converted, tmp_path, capsys):
    _, hf_dir, _ = converted("48khz_stereo")
    out = tmp_path / "cli_export"
    assert convert_main(["encodec", str(hf_dir), str(out)]) == 0
    text = capsys.readouterr().out
    assert "48000 Hz" in text and "2 channel" in text and "12, 24, 48 kbps" in text
    assert str(out) in text and "params:" in text
    config, variables = load_exported(out, expected_model="codec")
    assert config["normalize"] is True and config["seanet"]["norm_type"] == "time_group_norm"
    assert set(variables) == {"params", "codebook"}


def test_musicgen_32khz_config():
    """The full-size 32 kHz config: 50 Hz frames, 2.2 kbps is 4 books of 2048 codes."""
    config = CodecConfig.from_encodec_config(MUSICGEN_32KHZ)
    hf = transformers.EncodecConfig(**{k: v for k, v in MUSICGEN_32KHZ.items()
                                       if k != "model_type"})
    assert config.hop_length == hf.hop_length == 640
    assert config.frame_rate == hf.frame_rate == 50
    assert config.num_quantizers == hf.num_quantizers == 4
    assert config.num_quantizers_for(2.2) == 4 and config.codebook_size == 2048
    assert config.chunk_length is None and not config.normalize
    seanet = config.seanet
    assert not seanet.causal and not seanet.use_conv_shortcut and seanet.pad_mode == "reflect"
    assert seanet.num_filters == 64 and seanet.hidden_size == 128 and seanet.num_lstm_layers == 2


def musicgen_state_dict(hf_dir) -> dict:
    """A MusicGen-style model.safetensors: the codec under `audio_encoder.` with the old
    weight-norm spelling (as facebook/musicgen-small stores it), beside LM weights."""
    state = {"audio_encoder." + k.replace("conv.parametrizations.weight.original0", "conv.weight_g")
             .replace("conv.parametrizations.weight.original1", "conv.weight_v"): v
             for k, v in read_safetensors_dir(hf_dir).items()}
    assert sum(k.endswith("conv.weight_g") for k in state) > 10
    # LM keys, some that would map onto the codec's own `decoder.` / `encoder.` names.
    state.update({
        "text_encoder.shared.weight": randn(10, 8),
        "text_encoder.encoder.block.0.layer.0.SelfAttention.q.weight": randn(8, 8),
        "decoder.model.decoder.embed_tokens.0.weight": randn(2049, 8),
        "decoder.model.decoder.layers.0.self_attn.k_proj.weight": randn(8, 8),
        "decoder.lm_heads.0.weight": randn(2048, 8),
        "enc_to_dec_proj.weight": randn(8, 8), "enc_to_dec_proj.bias": randn(8)})
    return state


def test_musicgen_state_dict_converts_under_its_prefix(converted, tmp_path):
    hf_model, hf_dir, out_dir = converted("32khz_musicgen")
    state = musicgen_state_dict(hf_dir)
    # The codec's config as the `audio_encoder` sub-dict of a MusicGen's config.json.
    musicgen = transformers.MusicgenConfig(
        text_encoder={"model_type": "t5", "d_model": 8, "num_layers": 1, "num_heads": 1,
                      "d_kv": 8, "d_ff": 8, "vocab_size": 10},
        audio_encoder=hf_model.config.to_dict(),
        decoder={"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
                 "ffn_dim": 8, "vocab_size": 2048, "num_codebooks": 4})
    hf_config = json.loads(musicgen.to_json_string())["audio_encoder"]

    config, variables = encodec_from_state(state, hf_config, prefix="audio_encoder.")
    model, exported = load_codec(out_dir)  # converted from the directory
    assert config == model.config and config.num_quantizers == 4 and config.frame_rate == 50
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)),
                 variables, exported)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(variables))
    # No trailing dot is the same prefix; the export round-trips.
    assert encodec_from_state(state, hf_config, prefix="audio_encoder")[0] == config
    export = save_codec_export(tmp_path / "export", config, variables, source="musicgen-test")
    reloaded_model, reloaded = load_codec(export)
    assert reloaded_model.config == config
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)),
                 variables, reloaded)

    missing = dict(state)
    del missing["audio_encoder.encoder.layers.0.conv.weight_g"]
    with pytest.raises(CheckpointMismatchError,
                       match=r"musicgen.*'audio_encoder\.'.*lacks.*params/encoder/layers_0/weight_g"):
        encodec_from_state(missing, hf_config, prefix="audio_encoder.", source="musicgen")
    with pytest.raises(CheckpointMismatchError, match=r"no weight starts with 'codec\.'.*"
                                                      r"'audio_encoder\.'.*'text_encoder\.'"):
        encodec_from_state(state, hf_config, prefix="codec.")
    with pytest.raises(CheckpointMismatchError, match=r"have no place.*'audio_encoder\.decoder\.layers"):
        encodec_from_state(state, hf_config)  # the whole MusicGen state dict, no prefix
    with pytest.raises(ValueError, match="'t5'.*'encodec'"):
        encodec_from_state(state, {**hf_config, "model_type": "t5"}, prefix="audio_encoder.")


# ----------------------------------------------------------------------------- errors


def test_wrong_architecture_is_a_clear_error(converted, tmp_path):
    _, hf_dir, _ = converted("24khz_mono")
    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["num_filters"] = 8
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"'decoder\.layers\.0\.conv\.bias' has shape "
                                                      r"\(64,\).*expects \(128,\)"):
        load_hf_encodec(bad)

    config["num_filters"], config["num_lstm_layers"] = 4, 1  # a key with no place
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"lstm\.weight_ih_l1"):
        load_hf_encodec(bad)
    config["num_lstm_layers"] = 3  # a variable with no weight
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"lacks.*weight_ih_l2"):
        load_hf_encodec(bad)


def test_bad_directories_are_clear_errors(converted, tmp_path, capsys):
    _, hf_dir, out_dir = converted("24khz_mono")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_encodec(empty)
    with pytest.raises(FileNotFoundError, match=r"empty.*model\.json"):
        load_exported(empty, expected_model="codec")
    assert convert_main(["encodec", str(empty), str(tmp_path / "out")]) == 1
    assert "config.json" in capsys.readouterr().err

    shutil.copy(hf_dir / "config.json", empty / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_encodec(empty)

    config = json.loads((hf_dir / "config.json").read_text())
    (empty / "config.json").write_text(json.dumps({**config, "model_type": "hubert"}))
    assert convert_main(["encodec", str(empty), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "hubert" in err and "encodec" in err

    with pytest.raises(FileNotFoundError, match="holds no codec"):
        load_codec(tmp_path / "nowhere")
    other = tmp_path / "lm_export"
    save_exported(other, "token_lm", {"vocab": 3}, {"params": {"w": np.zeros(2, np.float32)}})
    with pytest.raises(CheckpointMismatchError, match="'token_lm'.*'codec'"):
        load_codec(other)


def test_bad_bandwidth_and_codes_are_clear_errors(converted):
    _, _, out_dir = converted("odd")
    model, variables = load_codec(out_dir)
    audio = make_audio("odd", 1)
    with pytest.raises(ValueError, match="5.0"):
        encode_audio(model, variables, audio, 5.0)
    encoded = encode_audio(model, variables, audio, 8.0)
    encoded.codes[1, 0, 3, 0] = 16
    with pytest.raises(ValueError, match="16"):
        decode_audio(model, variables, encoded)
