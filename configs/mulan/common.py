"""Fields shared by every MuLan config; `tiny`, `base`, `large` change a few."""

import ml_collections

from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "mulan"
    c.model = ml_collections.ConfigDict(dict(
        # `AudioTowerConfig` fields (audiolm_jax/models/mulan/model.py): a ViT-B/16 over log-mel
        # patches of 10 s windows, as MuLan's AST variant.
        audio=ml_collections.ConfigDict(dict(
            sample_rate=16_000, n_fft=400, hop_length=160, n_mels=128, patch_frames=16,
            patch_mels=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072,
            clip_seconds=10.0)),
        # `BertConfig` fields (audiolm_jax/models/bert/model.py): BERT-base. Ignored when
        # `text_init` names an imported checkpoint (its config wins).
        text=ml_collections.ConfigDict(dict(
            vocab_size=30_522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
            type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)),
        # A BERT export (`python -m audiolm_jax.convert bert HF_DIR OUT`) or Hugging Face
        # directory to start the text tower from; "" trains it from scratch with a
        # WordPiece vocabulary of `tokenizer_vocab_size` learned on the training captions.
        text_init="",
        freeze_text=False,
        tokenizer_vocab_size=2000,
        embed_dim=128, max_text_length=64, init_temperature=0.07,
        remat=False,
    ))
    # MuLan tokens, fitted on the trained model's audio embeddings at the end of training:
    # `windows_per_clip` random windows of every training clip.
    c.rvq = ml_collections.ConfigDict(dict(num_quantizers=12, codebook_size=1024, steps=100,
                                           windows_per_clip=24))
    # Whole melodies (every rendering) are held out, so held-out captions and clips
    # were never seen in any form.
    c.data = common.data(extra=dict(group_field="melody_id"), corpus="music", batch_size=128,
                         eval_fraction=0.15)
    c.optimizer = common.optimizer(lr=1e-4, warmup_steps=2000, schedule="cosine",
                                   decay_steps=100_000, end_lr_ratio=0.01, eps=1e-6,
                                   weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("fsdp")
    c.train = common.train()
    c.distributed = False
    return c
