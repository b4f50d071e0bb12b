#!/usr/bin/env bash
# The peer environment of benchmarks/voicebox_speed.py: voicebox-pytorch 0.5.0
# (lucidrains) and torch in benchmarks/peers/voicebox/.venv (git-ignored), apart from
# the project's own venv.
#
#     bash benchmarks/peers/voicebox/install.sh        # PYTHON=python3.11 to choose
#
# voicebox-pytorch goes in with --no-deps: its dependencies (audiolm-pytorch,
# naturalspeech2-pytorch, spear-tts-pytorch, gateloop-transformer, vocos,
# accelerate) import fairseq (broken on Python 3.11) and wandb at module level, and
# none of them runs in what the benchmark times (the VoiceBox transformer, the flow
# loss, the torchdiffeq sampler). requirements.txt is what does run; voicebox_torch.py
# stubs the rest. The last line imports the model and runs one micro step as a check.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -r "$here/requirements.txt"
"$here/.venv/bin/python" -m pip install --no-deps voicebox-pytorch==0.5.0
"$here/.venv/bin/python" "$here/voicebox_torch.py" --check
