"""Semantic encoder, tiny: a 4-layer Conformer that pretrains on a 2-core CPU (~0.3 s/step).

Differences from the paper settings in `common.py`, each measured on the built-in
speech corpus in 500-step CPU runs:
- BEST-RQ targets: with w2v-BERT's objective the contrastive accuracy stayed at
  chance for the first 250 steps (Gumbel targets still moving); BEST-RQ's fixed
  targets are learnable from the first step.
- Spans of 4 frames (80 ms) started with probability 0.08 (~30 % hidden) instead
  of 10 frames with 0.065 (~50 %): with 200 ms spans the middle of a span is a
  phone or more from any visible frame, and in 500 steps the held-out masked
  loss stayed at the targets' unigram entropy (2.72 vs ~2.64 nats); with 80 ms
  spans it fell to 2.19.
"""

from configs.w2v_bert import common


def get_config():
    c = common.base_config()
    c.model.encoder.update(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=256, conv_depthwise_kernel_size=15,
                           left_max_position_embeddings=32, right_max_position_embeddings=8)
    c.model.pretrain.update(objective="best_rq", mask_span=4, mask_start_prob=0.08,
                            contrastive_layers=2, codebook_size=256, codevector_dim=128,
                            proj_dim=128, num_negatives=20, gumbel_decay=0.998)
    # Held out: the recognizer's 6 evaluation speakers (which include the TTS evaluation's 4).
    c.data.update(crop_seconds=2.0, batch_size=8, held_out_speakers=6)
    c.optimizer.update(lr=1e-3, warmup_steps=300, decay_steps=6000, end_lr_ratio=0.05)
    c.train.update(num_steps=6000, log_every=20, save_every=1000, keep_checkpoints=2,
                   eval_every=1000)
    return c
