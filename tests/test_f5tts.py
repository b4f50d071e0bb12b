"""F5-TTS in JAX against the `f5-tts` package's own `DiT` and `CFM` (random weights).

Two reference DiTs, built once per module: a tiny one (4 blocks) and one of the
released width (1024, 16 heads, text_dim 512, 4 ConvNeXt blocks) with 2 blocks.
Text embedding and velocity within 1e-4; `CFM.sample` with guidance and sway
from the same noise within 1e-3; the release layout (`ema_model.` keys, EMA
counters, vocab.txt) through `python -m audiolm_jax.convert f5tts` and back.

The package is installed without its dependencies (`pip install --no-deps
f5-tts==1.1.22`; its model code needs x-transformers and torchdiffeq): its
`f5_tts.model/__init__` imports the trainer (accelerate, wandb, datasets), so
the package's module is registered empty here and only `backbones.dit` and
`cfm` are imported; `rjieba` / `pypinyin` (Chinese text only) are stubbed when
missing. Nothing downloads.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("x_transformers", reason="the reference DiT needs x-transformers")
pytest.importorskip("torchdiffeq", reason="the reference CFM needs torchdiffeq")
if importlib.util.find_spec("f5_tts") is None:
    pytest.skip("the reference needs `pip install --no-deps f5-tts==1.1.22`",
                allow_module_level=True)

from audiolm_jax.convert.f5tts import dit_params, load_release  # noqa: E402
from audiolm_jax.models.f5tts import DiT, F5Config, sample, time_grid  # noqa: E402
from audiolm_jax.models.f5tts import pipeline as f5_pipeline  # noqa: E402
from audiolm_jax.training.checkpointing import CheckpointMismatchError  # noqa: E402


def _import_reference():
    """`(DiT, CFM)` of the package, without its trainer's imports."""
    location = importlib.util.find_spec("f5_tts").submodule_search_locations[0]
    for name in ("rjieba", "pypinyin"):      # Chinese-text helpers of model/utils.py
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.cut = stub.Style = stub.lazy_pinyin = None
            sys.modules[name] = stub
    if "f5_tts.model" not in sys.modules:
        package = types.ModuleType("f5_tts.model")
        package.__path__ = [f"{location}/model"]
        sys.modules["f5_tts.model"] = package
    from f5_tts.model.backbones.dit import DiT as RefDiT
    from f5_tts.model.cfm import CFM

    return RefDiT, CFM


RefDiT, CFM = _import_reference()

TINY = dict(dim=64, depth=4, heads=4, dim_head=16, ff_mult=2, mel_dim=24, text_num_embeds=40,
            text_dim=32, conv_layers=2)
WIDE = dict(dim=1024, depth=2, heads=16, dim_head=64, ff_mult=2, mel_dim=100,
            text_num_embeds=2545, text_dim=512, conv_layers=4)


def randomize(model):
    """Every weight random, the zero-initialised AdaLN / output / GRN ones included,
    at scales that keep activations O(1) (so 1e-4 is a meaningful tolerance)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("text_embed.text_embed.weight"):
                p.copy_(torch.randn_like(p))
            elif p.ndim > 1 and "grn" not in name:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("norm.weight") else 0))
    return model.eval()


def build(arch: dict, seed: int = 0):
    torch.manual_seed(seed)
    reference = randomize(RefDiT(**arch, text_mask_padding=True, dropout=0.0))
    config, params = dit_params(reference.state_dict())
    return reference, config, params


@pytest.fixture(scope="module")
def tiny():
    return build(TINY)


@pytest.fixture(scope="module")
def wide():
    return build(WIDE, seed=1)


def _inputs(mel_dim: int, vocab: int, frames: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, frames, mel_dim)).astype(np.float32)
    cond = rng.standard_normal((2, frames, mel_dim)).astype(np.float32)
    text = np.full((2, 11), -1)
    text[0] = rng.integers(0, vocab, 11)
    text[1, :6] = rng.integers(0, vocab, 6)       # shorter: -1 padded, then filler frames
    return x, cond, text, np.array([0.25, 0.8], np.float32)


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_text_embedding_and_velocity_match_the_package(which, request):
    reference, config, params = request.getfixturevalue(which)
    assert config.dim == reference.dim and config.depth == reference.depth
    model = DiT(config)
    x, cond, text, t = _inputs(config.mel_dim, config.text_num_embeds)
    frames = x.shape[1]
    mask = np.arange(frames)[None] < np.array([frames, 12])[:, None]
    tx, tc, tt, tm = (torch.from_numpy(x), torch.from_numpy(cond), torch.from_numpy(text),
                      torch.from_numpy(t))
    variables = {"params": params}
    errors = {}
    with torch.no_grad():
        for drop in (False, True):
            expected = reference.text_embed(tt, frames, drop_text=drop).numpy()
            got = model.apply(variables, jnp.asarray(text), frames, None, drop,
                              method=DiT.embed_text)
            errors[f"text drop={drop}"] = np.abs(np.asarray(got) - expected).max()
        cases = {"plain": dict(), "null": dict(drop_audio_cond=True, drop_text=True),
                 "masked": dict(mask=mask)}
        for case, kwargs in cases.items():
            torch_kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                            for k, v in kwargs.items()}
            expected = reference(tx, tc, tt, tm, **torch_kwargs).numpy()
            got = jax.jit(model.apply, static_argnames=("drop_audio_cond", "drop_text"))(
                variables, x, cond, jnp.asarray(text), t, **kwargs)
            errors[f"velocity {case}"] = np.abs(np.asarray(got) - expected).max()
    print(which, {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-4, errors


def _reference_sample(reference, cond, text, duration, steps, seed, **kwargs):
    cfm = CFM(reference, num_channels=cond.shape[-1],
              mel_spec_kwargs=dict(n_mel_channels=cond.shape[-1])).eval()
    with torch.no_grad():
        out, _ = cfm.sample(torch.from_numpy(cond), torch.from_numpy(text), duration,
                            steps=steps, seed=seed, **kwargs)
    return out.numpy()


def _package_noise(durations, mel_dim, seed):
    """`CFM.sample`'s starting noise: each row reseeded, drawn over its own duration."""
    frames = max(durations)
    noise = np.zeros((len(durations), frames, mel_dim), np.float32)
    for i, d in enumerate(durations):
        torch.manual_seed(seed)
        noise[i, :d] = torch.randn(d, mel_dim).numpy()
    return noise


@pytest.mark.parametrize("which,steps,batch", [("tiny", 4, 1), ("tiny", 5, 2), ("wide", 3, 1)])
def test_guided_sway_sampling_matches_cfm_sample(which, steps, batch, request):
    """Euler with guidance 2 and sway -1 from the same noise; 5 steps is an EPSS grid;
    batch 2 has rows of different prompt lengths and durations (the masked path)."""
    reference, config, params = request.getfixturevalue(which)
    rng = np.random.default_rng(3)
    cond = rng.standard_normal((batch, 8, config.mel_dim)).astype(np.float32)
    text = np.full((batch, 10), -1)
    text[:, :7] = rng.integers(0, config.text_num_embeds, (batch, 7))
    lens = np.array([8, 6][:batch])
    duration = np.array([14, 11][:batch])
    kwargs = dict(cfg_strength=2.0, sway_sampling_coef=-1.0)
    expected = _reference_sample(reference, cond, text,
                                 torch.from_numpy(duration) if batch > 1 else int(duration[0]),
                                 steps, seed=7, lens=torch.from_numpy(lens), **kwargs)
    noise = _package_noise(list(duration), config.mel_dim, seed=7)
    got, info = sample(DiT(config), params, cond, text, duration, lens=lens, steps=steps,
                       cfg_strength=2.0, sway_coef=-1.0, noise=noise)
    error = np.abs(np.asarray(got) - expected).max()
    print(which, steps, batch, f"mel max abs error {error:.1e}", info)
    assert got.shape == expected.shape
    assert error < 1e-3
    assert (info.steps, info.function_evals, info.passes) == (steps, steps, 2 * steps)


def test_time_grid_steps_and_durations():
    # Uniform grids and the EPSS ones, then sway, as `CFM.sample` builds them.
    from f5_tts.model.utils import get_epss_timesteps

    for steps in (4, 16, 32):
        t = get_epss_timesteps(steps, "cpu", torch.float32)
        t = t + -1.0 * (torch.cos(torch.pi / 2 * t) - 1 + t)
        np.testing.assert_allclose(time_grid(steps, -1.0), t.numpy(), atol=1e-7)
    np.testing.assert_allclose(time_grid(7, None), np.array([0, 2, 4, 6, 8, 16, 24, 32]) / 32)
    assert time_grid(32, 0.0)[-1] == 1.0
    text = np.array([[1, 2, 3, -1]])
    assert f5_pipeline.estimate_duration(100, "abcd efghi ", "x" * 22) == 100 + 200
    assert f5_pipeline.estimate_duration(100, "abcd efghi ", "short") == 100 + int(
        100 / 11 * 5 / 0.3)
    from audiolm_jax.models.f5tts.sampling import durations, sample_info

    assert durations(text, np.array([2]), 1).tolist() == [4]          # text + 1
    assert durations(text, np.array([9]), 30).tolist() == [30]
    assert sample_info(32, 0.0).passes == 32 and sample_info(8, 2.0, "midpoint").passes == 32
    with pytest.raises(ValueError, match="unknown ODE method"):
        sample_info(8, 2.0, "dopri5")


def test_vocabulary_and_ids_match_the_package():
    """The package's own vocab.txt (shipped in its wheel) read as `get_tokenizer` reads it,
    and ids as `list_str_to_idx` pads them (-1)."""
    from f5_tts.model.utils import get_tokenizer, list_str_to_idx

    location = importlib.util.find_spec("f5_tts").submodule_search_locations[0]
    path = f"{location}/infer/examples/vocab.txt"
    vocab = f5_pipeline.read_vocab(path)
    char_map, size = get_tokenizer(path, "custom")
    assert len(vocab) == size == F5Config.base().text_num_embeds and vocab[0] == " "
    assert {c: i for i, c in enumerate(vocab)} == char_map
    texts = ["Hello, world! ", "ok\u00e9\u2603"]
    ids = f5_pipeline.pad_ids([f5_pipeline.tokenize(t, char_map) for t in texts])
    np.testing.assert_array_equal(ids, list_str_to_idx(texts, char_map).numpy())


def _release_dir(tmp_path, reference, vocab_size, fmt="safetensors"):
    """The release layout: EMA weights under `ema_model.` (+ its counters), vocab.txt."""
    state = {f"ema_model.transformer.{k}": v.detach().clone().contiguous()
             for k, v in reference.state_dict().items()}
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(1250000)
    directory = tmp_path / f"release_{fmt}"
    directory.mkdir()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(directory / "model_1250000.safetensors"))
    else:
        torch.save({"ema_model_state_dict": state, "step": 5}, directory / "model_1250000.pt")
    # The package's vocab.txt starts with the space (id 0: filler and unknown characters).
    entries = [" "] + [chr(ord("a") + i) for i in range(26)] + [f"p{i}" for i in range(100)]
    (directory / "vocab.txt").write_text("\n".join(entries[:vocab_size]) + "\n", "utf-8")
    return directory


def test_convert_round_trip_and_named_errors(tiny, tmp_path):
    from audiolm_jax.convert.__main__ import main
    from audiolm_jax.models import f5tts

    reference, config, params = tiny
    src = _release_dir(tmp_path, reference, config.text_num_embeds)
    out = tmp_path / "export"
    assert main(["f5tts", str(src), str(out)]) == 0
    loaded = f5tts.load(out)
    assert loaded.config == config
    assert loaded.vocab[0] == " " and loaded.tokenize("ab?") == [1, 2, 0]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded.params),
                 jax.tree.map(np.asarray, params))
    # The .pt layout (read only through torch.load(weights_only=True)) gives the same.
    pt_config, pt_params, _ = load_release(_release_dir(tmp_path, reference,
                                                        config.text_num_embeds, "pt"))
    assert pt_config == config
    jax.tree.map(np.testing.assert_array_equal, pt_params, jax.tree.map(np.asarray, params))

    state = dict(reference.state_dict())
    with pytest.raises(CheckpointMismatchError, match="missing F5-TTS weights"):
        dit_params({k: v for k, v in state.items() if "proj_out.bias" not in k}, config)
    with pytest.raises(CheckpointMismatchError, match=r"missing F5-TTS weights \['trans"):
        dit_params({k: v for k, v in state.items() if "blocks.1.attn.to_k.bias" not in k},
                   config)
    with pytest.raises(CheckpointMismatchError, match="unexpected F5-TTS key 'extra.weight'"):
        dit_params({**state, "extra.weight": torch.zeros(2)}, config)
    with pytest.raises(CheckpointMismatchError, match="unexpected key 'ema_model.other"):
        dit_params({f"ema_model.transformer.{k}": v for k, v in state.items()}
                   | {"ema_model.other.w": torch.zeros(1)}, config)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        dit_params(state, F5Config(**{**TINY, "text_num_embeds": 41}))
    (src / "vocab.txt").write_text("a\nb\n", "utf-8")
    assert main(["f5tts", str(src), str(tmp_path / "bad")]) == 1     # named on stderr
    with pytest.raises(CheckpointMismatchError, match="vocab.txt has 2 entries"):
        load_release(src)
    with pytest.raises(ValueError, match="pe_attn_head"):
        F5Config(pe_attn_head=1)


def test_pipeline_synthesizes_from_a_reference_waveform(tiny):
    """Waveform -> vocos mel (floor 1e-5) -> characters -> duration -> guided Euler:
    the package's `CFM.sample` on the same waveform and characters, same noise."""
    reference, config, params = tiny
    vocab = [" "] + [chr(ord("a") + i) for i in range(config.text_num_embeds - 1)]
    tts = f5_pipeline.F5TTS(config, params, vocab)
    # Broadband (a tone leaves bins near the log floor, where the log magnifies rounding).
    wave = (0.2 * np.random.default_rng(4).standard_normal(2048)).astype(np.float32)
    ref_text, gen_text = "abc", "de"
    full = f5_pipeline.reference_text(ref_text) + gen_text
    duration = f5_pipeline.estimate_duration(len(wave) // 256, "abc ", gen_text)
    cfm = CFM(reference, mel_spec_kwargs=dict(n_mel_channels=config.mel_dim),
              vocab_char_map={c: i for i, c in enumerate(vocab)}).eval()
    with torch.no_grad():
        expected, _ = cfm.sample(torch.from_numpy(wave)[None], [list(full)], duration, steps=4,
                                 cfg_strength=2.0, sway_sampling_coef=-1.0, seed=5)
    got = tts.synthesize(wave, ref_text, gen_text, key=None, steps=4,
                         noise=_package_noise([duration], config.mel_dim, 5)[0])
    assert got.total_frames == duration and got.output_gain == 1.0
    assert got.info.passes == 8
    np.testing.assert_allclose(got.mel, expected.numpy()[0, len(wave) // 256:], atol=1e-3)
