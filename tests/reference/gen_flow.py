"""Goldens for the S3Gen flow (chatterbox/models/s3gen/flow.py, flow_matching.py,
decoder.py, transformer/, matcha/).

Two files:
- ``flow.npz``: reduced flows built from the reference classes with small widths
  (the encoder's 512 channels and 4 upsampled blocks are fixed by the reference; the mel
  is fixed at 80 by ``solve_euler``). Weights are ``checkpoints.random_tensor(key, shape,
  "float32", seed)`` per state_dict key: only keys and shapes are stored
  (``<model>__keys`` / ``<model>__shapes``), the test rebuilds the same values with numpy.
  Models: ``cfg`` (CFG, cosine), ``mf`` (meanflow), ``ml`` (two-level U-Net estimator).
- ``flow_full.npz``: the full-size flow loaded from the ``flow.`` tensors of the
  real-layout random ``s3gen.safetensors`` / ``s3gen_meanflow.safetensors``
  (tests/helpers/checkpoints.py, seed 0) on a short input.

The initial ODE noise is the reference's own draw (``randn_like`` under a fixed torch
seed; for meanflow the pipeline's ``noised_mels`` too), captured by wrapping
``solve_euler`` / ``basic_euler``; the first estimator call of each solve is captured by
wrapping ``estimator.forward`` (the reference calls it directly, so hooks never fire).
Arrays are channels-last (``[B, T, C]``) like the MLX port.

Run: .refenv/bin/python tests/reference/gen_flow.py
"""

from __future__ import annotations

import numpy as np
import torch
from chatterbox.models.s3gen.configs import CFM_PARAMS
from chatterbox.models.s3gen.decoder import ConditionalDecoder
from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
from chatterbox.models.s3gen.transformer.upsample_encoder import UpsampleConformerEncoder
from common import save_golden

from tests.helpers.checkpoints import cached_checkpoint, random_tensor

SCRIPT = "tests/reference/gen_flow.py"
SEED = 11

# Reduced sizes: every value here is mirrored by FLOW_CONFIGS in tests/test_flow.py.
ENCODER = dict(attention_heads=8, linear_units=256, num_blocks=2)
DECODER = dict(channels=[64], attention_head_dim=32, n_blocks=1, num_mid_blocks=2, num_heads=2)
DECODER_ML = dict(DECODER, channels=[32, 48], n_blocks=1, num_mid_blocks=1)
FULL_ENCODER = dict(attention_heads=8, linear_units=2048, num_blocks=6)
FULL_DECODER = dict(
    channels=[256], attention_head_dim=64, n_blocks=4, num_mid_blocks=12, num_heads=8
)


def build_flow(encoder_kw: dict, decoder_kw: dict, meanflow: bool) -> CausalMaskedDiffWithXvec:
    """As ``S3Token2Mel.__init__`` builds it, with the given sizes."""
    encoder = UpsampleConformerEncoder(
        output_size=512,
        input_size=512,
        dropout_rate=0.1,
        positional_dropout_rate=0.1,
        attention_dropout_rate=0.1,
        normalize_before=True,
        input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn",
        use_cnn_module=False,
        macaron_style=False,
        **encoder_kw,
    )
    estimator = ConditionalDecoder(
        in_channels=320,
        out_channels=80,
        causal=True,
        dropout=0.0,
        act_fn="gelu",
        meanflow=meanflow,
        **decoder_kw,
    )
    decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
    return CausalMaskedDiffWithXvec(encoder=encoder, decoder=decoder).eval()


def randomize(model: torch.nn.Module, seed: int, prefix: str, out: dict) -> None:
    state = {}
    for key, value in model.state_dict().items():
        state[key] = torch.from_numpy(random_tensor(key, tuple(value.shape), "float32", seed))
    model.load_state_dict(state, strict=True)
    keys = list(state)
    out[f"{prefix}__keys"] = np.array(keys)
    out[f"{prefix}__shapes"] = np.array([",".join(map(str, state[k].shape)) for k in keys])


def channels_last(x: torch.Tensor) -> np.ndarray:
    return x.detach().transpose(1, 2).contiguous().numpy()


class Capture:
    """Wraps ``solve_euler`` / ``basic_euler`` and ``estimator.forward`` of one flow."""

    def __init__(self, flow: CausalMaskedDiffWithXvec):
        self.noise = None
        self.first_call = None
        cfm = flow.decoder
        for name in ("solve_euler", "basic_euler"):
            original = getattr(cfm, name)

            def wrapped(x, *args, _original=original, **kwargs):
                self.noise = x.clone()
                return _original(x, *args, **kwargs)

            setattr(cfm, name, wrapped)
        forward = cfm.estimator.forward

        def estimator_forward(**kwargs):
            out = forward(**kwargs)
            if self.first_call is None:
                self.first_call = {
                    k: v.clone() for k, v in kwargs.items() if v is not None and k != "mask"
                }
                self.first_call["out"] = out.clone()
            return out

        def any_forward(*args, **kwargs):
            if args:  # basic_euler passes x positionally
                kwargs = dict(x=args[0], **kwargs)
            return estimator_forward(**kwargs)

        cfm.estimator.forward = any_forward


def run_flow(
    flow,
    capture: Capture,
    tokens,
    prompt_tokens,
    prompt_feat,
    embedding,
    meanflow: bool,
    n_timesteps: int,
    seed: int,
    out: dict,
    name: str,
) -> None:
    """``flow.inference`` as ``S3Token2Wav.inference`` calls it (finalize=True)."""
    capture.noise, capture.first_call = None, None
    torch.manual_seed(seed)
    noised_mels = None
    if meanflow:  # flow_inference draws this before the CFM's randn_like
        noised_mels = torch.randn(1, 80, tokens.shape[-1] * 2)
    with torch.inference_mode():
        mel, _ = flow.inference(
            token=torch.from_numpy(tokens)[None],
            token_len=torch.tensor([tokens.shape[-1]]),
            prompt_token=torch.from_numpy(prompt_tokens)[None],
            prompt_token_len=torch.tensor([prompt_tokens.shape[-1]]),
            prompt_feat=torch.from_numpy(prompt_feat)[None],
            prompt_feat_len=None,
            embedding=torch.from_numpy(embedding)[None],
            finalize=True,
            n_timesteps=n_timesteps,
            noised_mels=noised_mels,
            meanflow=meanflow,
        )
    out[f"{name}__tokens"] = tokens
    out[f"{name}__prompt_tokens"] = prompt_tokens
    out[f"{name}__prompt_feat"] = prompt_feat
    out[f"{name}__embedding"] = embedding
    out[f"{name}__noise"] = channels_last(capture.noise)
    out[f"{name}__mel"] = channels_last(mel)


def estimator_call(flow, rng, batch: int, length: int, meanflow: bool, out: dict, name: str):
    """One direct estimator call on random inputs (t and r differ per batch row)."""
    x, mu, cond = (rng.standard_normal((batch, 80, length)).astype(np.float32) for _ in range(3))
    spks = rng.standard_normal((batch, 80)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    r = np.minimum(t + 0.3, 1.0).astype(np.float32)
    args = {k: torch.from_numpy(v) for k, v in dict(x=x, mu=mu, cond=cond, spks=spks, t=t).items()}
    mask = torch.ones(batch, 1, length)
    with torch.inference_mode():
        v = flow.decoder.estimator(mask=mask, r=torch.from_numpy(r) if meanflow else None, **args)
    for key in ("x", "mu", "cond"):
        out[f"{name}__{key}"] = np.ascontiguousarray(args[key].numpy().transpose(0, 2, 1))
    out[f"{name}__spks"], out[f"{name}__t"], out[f"{name}__r"] = spks, t, r
    out[f"{name}__out"] = channels_last(v)


def encoder_out(flow, tokens: np.ndarray, out: dict, name: str) -> None:
    with torch.inference_mode():
        tok = torch.from_numpy(tokens)[None]
        h, _ = flow.encoder(flow.input_embedding(tok), torch.tensor([tokens.shape[-1]]))
    out[f"{name}__tokens"] = tokens
    out[f"{name}__h"] = h.numpy()


def inputs(rng, n_prompt: int, n_tokens: int, odd_mel: bool = False):
    tokens = rng.integers(0, 6561, n_tokens)
    prompt_tokens = rng.integers(0, 6561, n_prompt)
    n_mel = 2 * n_prompt + int(odd_mel)
    prompt_feat = (rng.standard_normal((n_mel, 80)) * 2 - 5).astype(np.float32)
    embedding = rng.standard_normal(192).astype(np.float32)
    return tokens, prompt_tokens, prompt_feat, embedding


def reduced() -> None:
    out: dict = {}
    rng = np.random.default_rng(SEED)

    cfg = build_flow(ENCODER, DECODER, meanflow=False)
    randomize(cfg, SEED, "cfg", out)
    encoder_out(cfg, rng.integers(0, 6561, 9), out, "cfg_encoder")
    estimator_call(cfg, rng, 2, 23, False, out, "cfg_estimator")
    cap = Capture(cfg)
    run_flow(cfg, cap, *inputs(rng, 6, 9), False, 10, 1, out, "cfg_prompt")
    first = cap.first_call  # the first CFG-batched estimator call of that solve
    for key, value in first.items():
        out[f"cfg_prompt_first__{key}"] = value.numpy() if value.ndim < 3 else channels_last(value)
    run_flow(cfg, cap, *inputs(rng, 0, 1), False, 10, 2, out, "cfg_noprompt_1")
    run_flow(cfg, cap, *inputs(rng, 4, 1), False, 10, 3, out, "cfg_prompt_1")
    run_flow(cfg, cap, *inputs(rng, 0, 1000), False, 10, 4, out, "cfg_long")
    run_flow(cfg, cap, *inputs(rng, 5, 8, odd_mel=True), False, 10, 5, out, "cfg_oddmel")

    mf = build_flow(ENCODER, DECODER, meanflow=True)
    randomize(mf, SEED + 1, "mf", out)
    estimator_call(mf, rng, 2, 17, True, out, "mf_estimator")
    cap = Capture(mf)
    run_flow(mf, cap, *inputs(rng, 6, 9), True, 2, 6, out, "mf_prompt")
    run_flow(mf, cap, *inputs(rng, 0, 5), True, 2, 7, out, "mf_noprompt")

    ml = build_flow(ENCODER, DECODER_ML, meanflow=False)
    randomize(ml, SEED + 2, "ml", out)
    estimator_call(ml, rng, 2, 21, False, out, "ml_estimator")  # odd length: ceil on down

    save_golden("flow", out, SCRIPT, notes="reduced flows; weights = random_tensor per key")


def full() -> None:
    from safetensors.numpy import load_file

    out: dict = {}
    rng = np.random.default_rng(SEED + 100)
    for name, meanflow in (("s3gen", False), ("s3gen_meanflow", True)):
        weights = load_file(str(cached_checkpoint(name)))
        flow = build_flow(FULL_ENCODER, FULL_DECODER, meanflow=meanflow)
        state = {
            k[len("flow.") :]: torch.from_numpy(v)
            for k, v in weights.items()
            if k.startswith("flow.")
        }
        flow.load_state_dict(state, strict=True)
        del weights
        tag = "mf" if meanflow else "cfg"
        cap = Capture(flow)
        if not meanflow:
            encoder_out(flow, rng.integers(0, 6561, 12), out, f"{tag}_encoder")
        run_flow(
            flow,
            cap,
            *inputs(rng, 10, 15),
            meanflow,
            2 if meanflow else 10,
            8 + meanflow,
            out,
            f"{tag}_solve",
        )
        for key, value in cap.first_call.items():
            out[f"{tag}_first__{key}"] = value.numpy() if value.ndim < 3 else channels_last(value)
    save_golden("flow_full", out, SCRIPT, notes="full size, checkpoints seed 0")


if __name__ == "__main__":
    import sys

    torch.set_num_threads(2)
    which = sys.argv[1:] or ["reduced", "full"]
    if "reduced" in which:
        reduced()
    if "full" in which:
        full()
