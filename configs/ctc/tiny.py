"""CTC phoneme recognizer, tiny: fine-tunes the tiny semantic encoder on a 2-core CPU in minutes."""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "ctc"
    c.encoder_path = ""           # a w2v_bert export (train/w2v_bert.py's WORKDIR/export)
    # layer: the hidden state that feeds the head; the encoder is frozen for the first
    # freeze_encoder_steps steps while the randomly initialized head settles.
    c.model = ml_collections.ConfigDict(dict(layer=-1, freeze_encoder_steps=100))
    c.data = ml_collections.ConfigDict(dict(
        corpus_size="default", corpus_seed=0, corpus_root="", held_out_speakers=6,
        batch_size=8, seed=0,
        augment=0.0,          # share of training clips sent through audio/augment.py (0: none)
        extra_folders=""))    # comma-separated folders of <name>.wav + .txt added to training
    c.optimizer = common.optimizer(lr=1e-3, warmup_steps=50, schedule="cosine", decay_steps=800,
                                   end_lr_ratio=0.05, weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("fsdp")
    c.train = common.train(num_steps=800, log_every=20, save_every=400, keep_checkpoints=2,
                           eval_every=400)
    c.eval = ml_collections.ConfigDict(dict(max_clips=60))   # PER clips at intermediate evals
    c.distributed = False
    return c
