"""MuLan, large (TPU pod slice): ViT-L/16 audio tower, BERT-large text tower, FSDP."""

from configs.mulan import common


def get_config():
    c = common.base_config()
    c.model.audio.update(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
    c.model.text.update(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096)
    c.model.remat = True
    c.data.batch_size = 1024
    c.mesh.shape.update(data=1, fsdp=-1)
    return c
