"""MuLan, base (one accelerator): ViT-B/16 audio tower over 10 s log-mel; BERT-base text tower.

To start the text tower from a public checkpoint and freeze it, as MuLan did:
    python -m audiolm_jax.convert bert /path/to/bert-base-uncased runs/bert_base
    python train/mulan.py --config configs/mulan/base.py --workdir runs/mulan_base \
        --config.model.text_init=runs/bert_base --config.model.freeze_text=True
"""

from configs.mulan import common


def get_config():
    return common.base_config()
