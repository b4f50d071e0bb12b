"""MuLan, tiny: 4 x 128 audio tower and a 2 x 128 BERT trained from scratch, 4 s windows (CPU)."""

from configs.mulan import common


def get_config():
    c = common.base_config()
    c.model.audio.update(n_mels=64, hidden_size=128, num_layers=4, num_heads=4, mlp_dim=512,
                         clip_seconds=4.0)
    c.model.text.update(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=512,
                        max_position_embeddings=64)
    c.model.update(tokenizer_vocab_size=1000, embed_dim=64, max_text_length=48)
    c.rvq.update(codebook_size=256, windows_per_clip=8)
    c.data.update(batch_size=32)
    c.optimizer.update(lr=1e-3, warmup_steps=100, decay_steps=1500, end_lr_ratio=0.05)
    c.train.update(num_steps=1500, log_every=10, save_every=250, keep_checkpoints=2,
                   eval_every=250)
    return c
