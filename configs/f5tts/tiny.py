"""F5-TTS, tiny: 4 blocks x 64 for a 2-core CPU (tests, the device suite's smoke run).

Characters come from the built-in corpus (`data.vocab` empty, no `init_from`), so
the text table is sized by the trainer. Utterances up to 512 frames (5.5 s).
"""

import ml_collections

from configs.f5tts import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.model.update(dim=64, depth=4, heads=4, dim_head=16, text_dim=32, conv_layers=2,
                   text_num_embeds=64)
    c.data.update(max_frames=512, max_chars=160, batch_size=4)
    c.optimizer.update(lr=5e-4, warmup_steps=100)
    c.eval.batch_size = 4
    c.train.update(num_steps=2000, log_every=50, save_every=200, eval_every=500)
    return c
