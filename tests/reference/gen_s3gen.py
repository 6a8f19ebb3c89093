"""Golden for the S3Gen composition (upstream ``S3Token2Wav.inference``): flow + HiFT +
trim/fade-in at full size, with every random draw recorded so the port can replay them.

Weights: the full-size real-layout random ``s3gen.safetensors`` of tests/helpers, HiFT's
output gain scaled (tests/helpers/hift_scaling.py) so the waveform is not clamped; the
built-in voice: the English ``conds.pt`` of tests/helpers/torch_zip.py with its prompt
cut to 25 tokens (keeps the run short).

Run: .refenv/bin/python tests/reference/gen_s3gen.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_golden  # noqa: E402
from gen_hift import DrawRecorder  # noqa: E402

from tests.helpers.checkpoints import cached_checkpoint
from tests.helpers.hift_scaling import POST_ONLY_TAG, post_only_transform  # noqa: E402
from tests.helpers.torch_zip import write_conds  # noqa: E402

PROMPT_TOKENS = 25
N_TOKENS = 20


def main():
    from chatterbox.models.s3gen import S3Gen
    from safetensors.torch import load_file

    torch.manual_seed(0)
    s3gen = S3Gen()
    s3gen.load_state_dict(
        load_file(
            str(cached_checkpoint("s3gen", tag=POST_ONLY_TAG, transform=post_only_transform))
        ),
        strict=False,
    )
    s3gen.eval()
    with tempfile.TemporaryDirectory() as tmp:
        conds = torch.load(write_conds(Path(tmp) / "conds.pt", "english"), weights_only=True)
    gen = conds["gen"]
    gen["prompt_token"] = gen["prompt_token"][:, :PROMPT_TOKENS]
    gen["prompt_token_len"] = torch.tensor([PROMPT_TOKENS])
    gen["prompt_feat"] = gen["prompt_feat"][:, : 2 * PROMPT_TOKENS]
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 6561, (1, N_TOKENS)))
    with torch.inference_mode(), DrawRecorder() as rec:
        wav, source = s3gen.inference(speech_tokens=tokens, ref_dict=gen)
    # CFM initial noise, SineGen phase, SineGen noise, the source module's unused draw
    assert len(rec.draws) == 4, [tuple(d.shape) for d in rec.draws]
    flow_noise, phase, sine_noise, _ = rec.draws
    save_golden(
        "s3gen",
        {
            "tokens": tokens.numpy(),
            "prompt_token": gen["prompt_token"].numpy(),
            "prompt_feat": gen["prompt_feat"].numpy(),
            "embedding": gen["embedding"].numpy(),
            "flow_noise": flow_noise,  # torch layout [1, 80, frames]
            "phase": phase,  # [1, harmonics, 1]
            "sine_noise": sine_noise,  # torch layout [1, harmonics, samples]
            "wav": wav,
            "source": source,
        },
        "tests/reference/gen_s3gen.py",
        notes="full-size random s3gen.safetensors (seed 0); English conds.pt (seed 0) with a "
        f"{PROMPT_TOKENS}-token prompt; {N_TOKENS} random speech tokens",
    )


if __name__ == "__main__":
    main()
