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

import functools
import importlib.util
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sharded_steps import run_steps

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


def _release_dir(tmp_path, reference, vocab_size, fmt="safetensors", entries=None):
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
    entries = entries or [" "] + [chr(ord("a") + i) for i in range(26)] + [f"p{i}"
                                                                           for i in range(100)]
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


def test_pipeline_synthesizes_from_a_reference_waveform(tiny, tmp_path):
    """Waveform -> vocos mel (floor 1e-5) -> characters -> duration -> guided Euler ->
    vocoder: the package's `CFM.sample` and `vocos` on the same waveform and
    characters, same noise and vocoder weights."""
    reference, config, params = tiny
    vocab = [" "] + [chr(ord("a") + i) for i in range(config.text_num_embeds - 1)]
    tts = f5_pipeline.F5TTS(config, params, vocab)
    # Broadband (a tone leaves bins near the log floor, where the log magnifies rounding).
    wave = (0.2 * np.random.default_rng(4).standard_normal(24_000)).astype(np.float32)  # 1 s
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
    # Through a vocos-mel-24khz-shaped vocoder with random weights (the tiny model's
    # mel bins): the package's mel by `vocos`, ours by our import of the same weights.
    from audiolm_jax.convert import __main__ as convert_cli
    from audiolm_jax.models.vocoder import Vocos, load
    from tests.test_vocos_convert import CONFIGS, _reference

    spec = {part: dict(values) for part, values in CONFIGS["mel_24khz"].items()}
    spec["fe"]["n_mels"] = spec["bb"]["input_channels"] = config.mel_dim
    (tmp_path / "vocos").mkdir()
    vocoder = _reference(spec, tmp_path / "vocos")
    assert convert_cli.main(["vocos", str(tmp_path / "vocos"), str(tmp_path / "vocoder")]) == 0
    vocos_config, variables = load(tmp_path / "vocoder")
    with torch.no_grad():
        mel = expected[:, len(wave) // 256:].permute(0, 2, 1).contiguous()
        ref_audio = vocoder.decode(mel).numpy()
    audio = np.asarray(Vocos(vocos_config).apply(variables, got.mel[None]))
    assert np.abs(ref_audio).max() > 0.1
    np.testing.assert_allclose(audio, ref_audio, atol=1e-3)


# ----------------------------------------------------------------------------- training

from audiolm_jax.models.f5tts import train as f5_train  # noqa: E402
from audiolm_jax.training import mesh as mesh_lib  # noqa: E402
from audiolm_jax.training import state as state_lib  # noqa: E402
from audiolm_jax.training.loop import jit_train_step  # noqa: E402
from configs.f5tts import tiny as tiny_config  # noqa: E402

HOP = 256


def _train_config(arch: F5Config, rules: str = "dp", lr: float = 1e-3):
    c = tiny_config.get_config()
    c.model.update(arch.to_dict())
    c.optimizer.update(lr=lr, warmup_steps=0, schedule="constant", grad_clip_norm=0.0)
    c.mesh.rules = rules
    return c


def _train_batch(config: F5Config, frames: int = 24, chars: int = 12, seed: int = 0):
    """8 rows of noise audio of different lengths, ids -1 padded, `frames` per row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(frames // 2, frames + 1, 8)
    audio = np.zeros((8, (frames - 1) * HOP), np.float32)
    text = np.full((8, chars), -1, np.int32)
    for i, n in enumerate(lengths):
        audio[i, :(n - 1) * HOP] = 0.1 * rng.standard_normal((n - 1) * HOP)
        k = int(rng.integers(3, chars + 1))
        text[i, :k] = rng.integers(0, config.text_num_embeds, k)
    return {"audio": audio, "text": text, "frames": lengths.astype(np.int32)}


def test_cfm_loss_of_a_zero_output_is_the_flow_on_the_masked_span():
    """Freshly initialized, the DiT's output layer is zero, so the loss is
    mean |x1 - x0|^2 over the masked frames' bins; the span covers 70-100 % of each
    row's frames, in one piece, never past the row."""
    config = F5Config.tiny()
    model = DiT(config)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, config.mel_dim)),
                        jnp.zeros((1, 8, config.mel_dim)), jnp.zeros((1, 4), jnp.int32),
                        jnp.zeros((1,)))["params"]
    rng = np.random.default_rng(1)
    mel = jnp.asarray(rng.standard_normal((3, 20, config.mel_dim)), jnp.float32)
    lengths = jnp.asarray([20, 14, 9])
    text = jnp.asarray(rng.integers(0, config.text_num_embeds, (3, 6)), jnp.int32)
    key = jax.random.key(5)
    loss, metrics = jax.jit(functools.partial(f5_train.cfm_loss, model))(params, mel, text,
                                                                          lengths, key)
    k_span, k_noise, *_ = jax.random.split(key, 5)
    span = np.asarray(f5_train.span_mask(k_span, lengths, 20))
    x1 = np.where((np.arange(20)[None] < np.asarray(lengths)[:, None])[..., None], mel, 0)
    flow = x1 - np.asarray(jax.random.normal(k_noise, mel.shape))
    np.testing.assert_allclose(loss, np.mean(np.square(flow[span])), rtol=1e-5)
    for row, n in zip(span, [20, 14, 9]):
        on = np.flatnonzero(row)
        assert np.all(np.diff(on) == 1) and on[-1] < n
        assert np.floor(0.7 * n) <= len(on) <= n
    assert 0.7 <= float(metrics["masked_fraction"]) <= 1.0
    # The drops: 20 % both, else 30 % audio alone (44 % audio in all), per row.
    audio, both = f5_train.condition_drops(jax.random.key(1), jax.random.key(2), 20_000)
    assert np.all(np.asarray(audio)[np.asarray(both)])
    assert abs(float(both.mean()) - 0.2) < 0.01 and abs(float(audio.mean()) - 0.44) < 0.01


@pytest.fixture(scope="module")
def export_dir(tiny, tmp_path_factory):
    """The tiny reference converted from the release layout, its vocabulary with
    punctuation (for the text chunking), and a random vocos-mel-24khz-shaped vocoder
    (a small backbone; the public model's mel settings and 1e-7 floor) it names."""
    from audiolm_jax.convert.f5tts import convert_f5tts
    from audiolm_jax.models.vocoder import VocosConfig, init_vocos
    from audiolm_jax.training.export import save_exported

    reference, config, _ = tiny
    root = tmp_path_factory.mktemp("f5tts_release")
    vocoder = root / "vocos"
    vocos_config = VocosConfig(n_mels=config.mel_dim, dim=16, intermediate_dim=32, num_layers=1)
    save_exported(vocoder, "vocoder", vocos_config.to_dict(), init_vocos(vocos_config),
                  source="test")
    entries = [" ", ",", "."] + [chr(ord("a") + i) for i in range(26)] + [f"p{i}"
                                                                         for i in range(100)]
    src = _release_dir(root, reference, config.text_num_embeds, entries=entries)
    convert_f5tts(src, root / "export", vocoder=vocoder)
    return root / "export"


def test_a_step_from_converted_weights_lowers_the_loss(tiny, export_dir):
    """Warm start (`train.init_from`) from the converted export, then 4 steps on one
    batch: the held-out-style loss (fixed draws) on that batch goes down."""
    _, config, params = tiny
    c = _train_config(config, lr=1e-3)
    model = f5_train.build_model(c)
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])
    rules = mesh_lib.get_rules(c.mesh.rules)
    state, shardings = state_lib.create_sharded_state(f5_train.make_init_fn(model, c), mesh,
                                                      rules, jax.random.key(0))
    state = state_lib.warm_start(state, shardings, str(export_dir))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
                 jax.tree.map(np.asarray, params))
    batch = mesh_lib.make_global_batch(_train_batch(config), mesh)

    @jax.jit
    def eval_loss(params, batch):   # one fixed draw of span, noise and t; no drops
        mel = f5_train.mel_of(batch["audio"], config)
        return f5_train.cfm_loss(model, params, mel, batch["text"], batch["frames"],
                                 jax.random.key(9), audio_drop_prob=0, cond_drop_prob=0)[0]

    before = float(eval_loss(state.params, batch))
    step = jit_train_step(f5_train.make_train_step(model, c), shardings, mesh)
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(4):
            state, metrics = step(state, batch, jax.random.key(1))
    after = float(eval_loss(state.params, batch))
    print(f"loss on the batch from converted weights: {before:.3f} -> {after:.3f}")
    assert np.isfinite(float(metrics["loss"])) and after < before


def _run_steps(config, mesh_shape, devices, batch, steps=2):
    model = f5_train.build_model(config)
    return run_steps(f5_train.make_init_fn(model, config), f5_train.make_train_step(model, config),
                     config.mesh.rules, mesh_shape, devices, batch, steps)


MICRO = F5Config(dim=32, depth=2, heads=4, dim_head=8, mel_dim=16, text_num_embeds=23,
                 text_dim=16, conv_layers=1)


@pytest.fixture(scope="module")
def one_device_steps():
    return _run_steps(_train_config(MICRO), (1, 1, 1), jax.devices()[:1], _train_batch(MICRO))


@pytest.mark.parametrize("shape,rules", [((8, 1, 1), "dp"), ((1, 8, 1), "fsdp"),
                                         ((2, 1, 4), "tp")])
def test_train_step_is_the_same_on_8_devices(one_device_steps, shape, rules):
    assert len(jax.devices()) == 8
    ref_state, ref = one_device_steps
    state, ours = _run_steps(_train_config(MICRO, rules), shape, jax.devices(),
                             _train_batch(MICRO))
    # Step 0 compares the gradients of the same weights; by step 1 Adam has turned
    # float rounding of another reduction order into slightly different weights.
    for step, (a, b) in enumerate(zip(ours, ref)):
        for key in ("loss", "grad_norm", "masked_fraction"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4 if step == 0 else 1e-3,
                                       atol=1e-6, err_msg=f"{key} at step {step}")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state.params),
                            jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-3,
                                   err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------- inference


def _wav(path, seconds, rate=16_000, seed=0):
    from audiolm_jax.audio.io import save_audio

    audio = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    save_audio(path, audio.astype(np.float32), rate)
    return str(path)


def test_tts_command_line_speaks_and_refuses_bad_input(export_dir, tmp_path, capsys):
    """`infer/tts.py --model f5tts` on the converted export and the vocoder it names:
    a 24 kHz WAV of the asked duration; bad input fails with one named line."""
    import soundfile as sf

    from infer import tts

    prompt = _wav(tmp_path / "prompt.wav", 1.5)
    out = tmp_path / "out.wav"
    common = ["--model", "f5tts", "--checkpoint", str(export_dir), "--prompt", prompt,
              "--prompt-text", "abc de", "--steps", "2"]
    assert tts.main(common + ["--text", "fgh ij", "--duration", "1.0", str(out)]) == 0
    audio, rate = sf.read(out)
    printed = capsys.readouterr().out
    assert rate == 24_000 and audio.ndim == 1
    assert abs(len(audio) / rate - 1.0) < 0.05, len(audio)
    assert "4 network passes" in printed and "real-time factor" in printed

    def error(argv):
        assert tts.main(common + argv + [str(out)]) == 1
        return capsys.readouterr().err

    assert "'!' (U+0021)" in error(["--text", "hi!"])
    assert tts.main(common + ["--text", "hi!", "--drop-unknown", "--duration", "1.0",
                              str(out)]) == 0
    capsys.readouterr()
    short = _wav(tmp_path / "short.wav", 0.5)
    assert "at least 1 s" in error(["--text", "hi", "--prompt", short])
    long = _wav(tmp_path / "long.wav", 21.0, rate=8000)
    assert "trim it" in error(["--text", "hi", "--prompt", long])
    vocoder_dir = str(f5_pipeline.load(export_dir).vocoder)
    assert "holds an exported 'vocoder' model, not 'f5tts'" in error(
        ["--text", "hi", "--checkpoint", vocoder_dir])


def test_long_text_is_split_at_punctuation_and_cross_faded(export_dir):
    """The Python API: text past a chunk's budget is generated in pieces joined with
    a 0.15 s cross-fade; the export's vocabulary must fit its weights."""
    from audiolm_jax.models import f5tts

    model = f5tts.load(export_dir)
    wave = (0.2 * np.random.default_rng(2).standard_normal(24_000)).astype(np.float32)
    text = "abc de, fgh. ij kl, mn."
    assert f5_pipeline.chunk_text(text, 9) == ["abc de,", "fgh.", "ij kl,", "mn."]
    # 14 bytes of reference text a second, 1 s of it: 14 bytes of text per 2 s chunk.
    speech = model.tts(text, wave, 24_000, "abc de fgh ij", steps=1, cfg_strength=0.0,
                       chunk_seconds=2.0)
    assert speech.chunks == ["abc de, fgh.", "ij kl, mn."]
    assert speech.passes == 2 and speech.sample_rate == 24_000
    # Each piece's new frames, less one cross-fade per join.
    assert speech.audio.ndim == 1 and len(speech.audio) > 0.3 * 24_000
    assert np.all(np.isfinite(speech.audio))
    pieces = [np.ones(100), np.zeros(100)]
    joined = f5_pipeline.cross_fade(pieces, 10)
    assert len(joined) == 190 and joined[90] == 1 and joined[99] == 0
    with pytest.raises(ValueError, match="vocabulary has 3 entries but the weights"):
        f5_pipeline.F5TTS(model.config, model.params, [" ", "a", "b"])
    with pytest.raises(ValueError, match="no vocoder"):
        f5_pipeline.F5TTS(model.config, model.params, model.vocab).load_vocoder()


def test_bucketed_sampling_equals_exact_shapes(tiny):
    """Padding the frames to a bucket (keys masked) gives the unpadded numbers."""
    _, config, params = tiny
    rng = np.random.default_rng(3)
    cond = rng.standard_normal((1, 8, config.mel_dim)).astype(np.float32)
    text = rng.integers(0, config.text_num_embeds, (1, 9))
    noise = rng.standard_normal((1, 21, config.mel_dim)).astype(np.float32)
    kwargs = dict(steps=3, cfg_strength=2.0, noise=noise)
    exact, _ = sample(DiT(config), params, cond, text, 21, **kwargs)
    bucketed, _ = sample(DiT(config), params, cond, text, 21, bucket=16, **kwargs)
    assert bucketed.shape == exact.shape == (1, 21, config.mel_dim)
    np.testing.assert_allclose(bucketed, exact, atol=1e-4)
