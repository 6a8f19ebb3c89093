"""S3Gen flow: speech tokens -> 80-bin mel at 50 Hz (``CausalMaskedDiffWithXvec``).

Prompt tokens and generated tokens are embedded and encoded together
(``UpsampleConformerEncoder``, 2 mel frames per token), projected to 80 channels
(``mu``) and decoded by conditional flow matching (``CausalConditionalCFM``), conditioned
on the prompt mel and a projected CAMPPlus x-vector. The output is the mel after the
prompt.

- English / Multilingual / VC: 10 Euler steps on the cosine time schedule with
  classifier-free guidance (rate 0.7; conditional and unconditional rows in one batch).
- Turbo / Nano (meanflow): 2 plain Euler steps on a linear schedule, no guidance; the
  estimator also sees the step's end time ``r`` through ``time_embed_mixer``.

All arrays are channels-last: mels are ``[B, T, 80]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..constants import MEL_FRAMES_PER_TOKEN, SPEECH_VOCAB_SIZE
from . import layers
from .config_utils import from_dict
from .flow_decoder import ConditionalDecoder, DecoderConfig, sanitize_decoder_key
from .flow_encoder import EncoderConfig, UpsampleConformerEncoder, sanitize_encoder_key
from .weights import load_safetensors, load_strict, strip_prefix

MIXER_KEY = "decoder.estimator.time_embed_mixer.weight"


@dataclass
class FlowConfig:
    vocab_size: int = SPEECH_VOCAB_SIZE
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    token_mel_ratio: int = MEL_FRAMES_PER_TOKEN
    pre_lookahead_len: int = 3
    n_timesteps: int = 10
    cfg_rate: float = 0.7
    meanflow: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    @classmethod
    def english(cls) -> FlowConfig:
        """English, Multilingual and voice conversion (``s3gen.safetensors``)."""
        return cls()

    @classmethod
    def meanflow_config(cls) -> FlowConfig:
        """Turbo and Nano (``s3gen_meanflow.safetensors``)."""
        return cls(n_timesteps=2, meanflow=True, decoder=DecoderConfig(meanflow=True))

    @classmethod
    def from_dict(cls, params: Mapping) -> FlowConfig:
        """From ``dataclasses.asdict`` of a config (as ``config.json`` stores it): unknown or
        mistyped fields are refused by name, the nested ``encoder``/``decoder`` too."""
        params = dict(params)
        encoder = from_dict(EncoderConfig, params.pop("encoder", {}), "FlowConfig.encoder")
        decoder = dict(params.pop("decoder", {}))
        if "channels" in decoder:
            decoder["channels"] = tuple(decoder["channels"])
        decoder = from_dict(DecoderConfig, decoder, "FlowConfig.decoder")
        return from_dict(cls, {**params, "encoder": encoder, "decoder": decoder})


def cosine_t_span(n_timesteps: int) -> mx.array:
    t = mx.linspace(0, 1, n_timesteps + 1, dtype=mx.float32)
    return 1 - mx.cos(t * 0.5 * math.pi)


class CausalConditionalCFM(nn.Module):
    """Euler ODE solver around the ``ConditionalDecoder`` estimator."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.meanflow = config.meanflow
        self.cfg_rate = config.cfg_rate
        self.estimator = ConditionalDecoder(config.decoder)
        self._compiled_cfg = self._compiled_plain = None  # built on first use

    def _step(self, kind: str):
        """The Euler step function, compiled whole where ``layers.compilable()`` (not while
        the CPU kernels compute outside MLX's graph; their activations are compiled on
        their own). Parameters are implicit inputs of the compiled function, so loading
        new weights needs no recompile."""
        fn = self._cfg_step_impl if kind == "cfg" else self._plain_step_impl
        if not layers.compilable():
            return fn
        name = f"_compiled_{kind}"
        if getattr(self, name) is None:
            setattr(self, name, mx.compile(fn, inputs=self.estimator.state))
        return getattr(self, name)

    def _cfg_step_impl(self, x, t, r, mu2, spks2, cond2):
        b = x.shape[0]
        v = self.estimator(mx.concatenate([x, x]), mu2, mx.broadcast_to(t, (2 * b,)), spks2, cond2)
        v = (1.0 + self.cfg_rate) * v[:b] - self.cfg_rate * v[b:]
        return x + (r - t) * v

    def _plain_step_impl(self, x, t, r, mu, spks, cond):
        b = x.shape[0]
        v = self.estimator(x, mu, mx.broadcast_to(t, (b,)), spks, cond, mx.broadcast_to(r, (b,)))
        return x + (r - t) * v

    def __call__(
        self, mu: mx.array, spks: mx.array, cond: mx.array, noise: mx.array, n_timesteps: int
    ) -> mx.array:
        """Integrate from ``noise`` (t=0) to the mel (t=1). ``mu``, ``cond``, ``noise``:
        ``[B, T, 80]``; ``spks``: ``[B, 80]``."""
        if self.meanflow:
            t_span = mx.linspace(0, 1, n_timesteps + 1, dtype=mx.float32)
            step, args = self._step("plain"), (mu, spks, cond)
        else:
            t_span = cosine_t_span(n_timesteps)
            # unconditional rows: mu, speaker and prompt mel all zero
            args = (
                mx.concatenate([mu, mx.zeros_like(mu)]),
                mx.concatenate([spks, mx.zeros_like(spks)]),
                mx.concatenate([cond, mx.zeros_like(cond)]),
            )
            step = self._step("cfg")
        x = noise
        for i in range(n_timesteps):
            x = step(x, t_span[i : i + 1], t_span[i + 1 : i + 2], *args)
            mx.eval(x)
        return x


def _as_tokens(tokens, name: str) -> np.ndarray:
    arr = np.asarray(tokens.tolist() if isinstance(tokens, mx.array) else tokens)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer speech token ids, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [T] or [B, T] token ids, got shape {arr.shape}")
    return arr.astype(np.int64)


class CausalMaskedDiffWithXvec(nn.Module):
    def __init__(self, config: FlowConfig | None = None):
        super().__init__()
        config = config or FlowConfig()
        if config.meanflow != config.decoder.meanflow:
            raise ValueError(
                f"FlowConfig.meanflow={config.meanflow} but decoder.meanflow="
                f"{config.decoder.meanflow}: use FlowConfig.english() or "
                "FlowConfig.meanflow_config()"
            )
        self.config = config
        self.input_embedding = nn.Embedding(config.vocab_size, config.input_size)
        self.spk_embed_affine_layer = nn.Linear(config.spk_embed_dim, config.output_size)
        self.encoder = UpsampleConformerEncoder(config.encoder)
        self.encoder_proj = nn.Linear(config.encoder.output_size, config.output_size)
        self.decoder = CausalConditionalCFM(config)

    def encode(self, tokens: mx.array) -> mx.array:
        """All tokens (prompt first) ``[B, T]`` -> ``mu`` ``[B, ratio * T, 80]``."""
        return self.encoder_proj(self.encoder(self.input_embedding(tokens)))

    def speaker_projection(self, embedding: mx.array) -> mx.array:
        """x-vector ``[B, 192]`` -> L2-normalised and projected ``[B, 80]``."""
        norm = mx.sqrt(mx.sum(embedding * embedding, axis=-1, keepdims=True))
        return self.spk_embed_affine_layer(embedding / mx.maximum(norm, 1e-12))

    def prepare_inputs(self, tokens, prompt_tokens, prompt_feat, embedding):
        """Validate and align the inputs the way the reference pipeline does.

        - Token ids >= ``vocab_size`` (6561; T3's start/stop and other special ids) are
          dropped, as the reference's TTS pipelines do before S3Gen (batch of one only).
        - The prompt mel must have ``token_mel_ratio`` (2) frames per prompt token. As the
          reference's ``embed_ref`` does, prompt tokens beyond ``len(prompt_feat) // 2`` are
          dropped when the mel is shorter; one extra mel frame is accepted (the output is
          then one frame shorter, as in the reference).
        """
        ratio = self.config.token_mel_ratio
        tokens = _as_tokens(tokens, "tokens")
        if tokens.shape[0] == 1:
            tokens = tokens[:, tokens[0] < self.config.vocab_size]
        elif (tokens >= self.config.vocab_size).any():
            raise ValueError(
                f"tokens contain ids >= {self.config.vocab_size} in a batch of "
                f"{tokens.shape[0]}; remove them per row (or pass one utterance at a time)"
            )
        if tokens.shape[1] == 0:
            raise ValueError(
                "tokens is empty (after dropping ids >= "
                f"{self.config.vocab_size}): S3Gen needs at least one speech token"
            )
        if (tokens < 0).any():
            raise ValueError(
                f"tokens contain negative ids; speech token ids are 0..{self.config.vocab_size - 1}"
            )
        batch = tokens.shape[0]

        if prompt_tokens is None:
            prompt_tokens = np.zeros((1, 0), np.int64)
        prompt_tokens = _as_tokens(prompt_tokens, "prompt_tokens")
        if prompt_feat is None:
            prompt_feat = mx.zeros((1, 0, self.config.output_size))
        prompt_feat = mx.array(prompt_feat, dtype=mx.float32)
        if prompt_feat.ndim == 2:
            prompt_feat = prompt_feat[None]
        if prompt_feat.ndim != 3 or prompt_feat.shape[-1] != self.config.output_size:
            raise ValueError(
                f"prompt_feat must be [T, {self.config.output_size}] or "
                f"[B, T, {self.config.output_size}] (channels last), got {prompt_feat.shape}"
            )
        if ((prompt_tokens >= self.config.vocab_size) | (prompt_tokens < 0)).any():
            raise ValueError(f"prompt_tokens must be ids in 0..{self.config.vocab_size - 1}")
        n_mel, n_tok = prompt_feat.shape[1], prompt_tokens.shape[1]
        if n_mel != ratio * n_tok:
            prompt_tokens = prompt_tokens[:, : n_mel // ratio]
            n_tok = prompt_tokens.shape[1]
        if n_mel > ratio * n_tok + 1:
            raise ValueError(
                f"prompt_feat has {n_mel} frames but prompt_tokens has {n_tok} tokens; "
                f"the prompt mel must have {ratio} frames per token ({ratio * n_tok}): "
                "pass the mel and tokens of the same reference clip"
            )
        for name, value in (("prompt_tokens", prompt_tokens), ("prompt_feat", prompt_feat)):
            if value.shape[0] not in (1, batch):
                raise ValueError(f"{name} has batch {value.shape[0]}, tokens have {batch}")

        embedding = mx.array(embedding, dtype=mx.float32)
        if embedding.ndim == 1:
            embedding = embedding[None]
        if embedding.ndim != 2 or embedding.shape[-1] != self.config.spk_embed_dim:
            raise ValueError(
                f"embedding must be a [{self.config.spk_embed_dim}] or "
                f"[B, {self.config.spk_embed_dim}] x-vector, got {embedding.shape}"
            )
        if embedding.shape[0] not in (1, batch):
            raise ValueError(f"embedding has batch {embedding.shape[0]}, tokens have {batch}")

        all_tokens = np.concatenate(
            [np.broadcast_to(prompt_tokens, (batch, n_tok)), tokens], axis=1
        )
        prompt_feat = mx.broadcast_to(prompt_feat, (batch, *prompt_feat.shape[1:]))
        embedding = mx.broadcast_to(embedding, (batch, embedding.shape[1]))
        return mx.array(all_tokens), prompt_feat, embedding

    def __call__(
        self,
        tokens,
        prompt_tokens=None,
        prompt_feat=None,
        embedding=None,
        noise: mx.array | None = None,
        n_timesteps: int | None = None,
        finalize: bool = True,
        key: mx.array | None = None,
    ) -> mx.array:
        """Speech tokens -> mel ``[B, T_out, 80]`` for the part after the prompt.

        ``tokens``: ``[T]`` or ``[B, T]`` speech ids (ids >= 6561 are dropped, see
        ``prepare_inputs``); ``prompt_tokens`` ``[T_p]`` and ``prompt_feat`` ``[2 T_p, 80]``:
        the reference clip's tokens and 24 kHz mel (both optional); ``embedding``: the
        CAMPPlus x-vector ``[192]``. ``noise``: the initial ODE state ``[B, T_mu, 80]`` over
        prompt and generated frames (``T_mu = 2 (T_p + T)``, minus 6 if not ``finalize``);
        drawn from ``key`` when not given. ``finalize=False`` drops the frames that still
        depend on look-ahead tokens (streaming).
        """
        if embedding is None:
            raise ValueError("embedding (the CAMPPlus x-vector of the reference voice) is required")
        all_tokens, prompt_feat, embedding = self.prepare_inputs(
            tokens, prompt_tokens, prompt_feat, embedding
        )
        mu = self.encode(all_tokens)
        if not finalize:
            mu = mu[:, : -self.config.pre_lookahead_len * self.config.token_mel_ratio]
        batch, length, channels = mu.shape
        n_prompt = prompt_feat.shape[1]
        if n_prompt >= length:
            raise ValueError(
                f"no frames left to generate: the prompt mel has {n_prompt} frames and the "
                f"encoder output {length}; pass more tokens"
            )
        cond = mx.concatenate([prompt_feat, mx.zeros((batch, length - n_prompt, channels))], 1)
        if noise is None:
            noise = layers.random_normal((batch, length, channels), key=key)
        elif tuple(noise.shape) != (batch, length, channels):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}, expected {(batch, length, channels)} "
                "(batch, prompt + generated mel frames, mel bins)"
            )
        spks = self.speaker_projection(embedding)
        n_timesteps = n_timesteps or self.config.n_timesteps
        mel = self.decoder(mu, spks, cond, noise.astype(mx.float32), n_timesteps)
        return mel[:, n_prompt:]


def sanitize(weights: Mapping[str, mx.array]) -> dict[str, mx.array]:
    """Real ``flow.*`` tensors (prefix stripped) -> ``CausalMaskedDiffWithXvec`` parameters.

    Renames the reference's Sequential / tuple indices and converts torch conv layouts
    ``[out, in, k]`` to MLX ``[out, k, in]`` (1x1 convs become Linear ``[out, in]``).
    Unknown keys pass through unchanged, so ``load_strict`` reports them."""
    out = {}
    for key, value in weights.items():
        if key.startswith("encoder."):
            new = "encoder." + sanitize_encoder_key(key[len("encoder.") :])
        elif key.startswith("decoder.estimator."):
            new = "decoder.estimator." + sanitize_decoder_key(key[len("decoder.estimator.") :])
        else:
            new = key
        if value.ndim == 3:
            if new.endswith(("res_conv.weight", "final_proj.weight")):
                value = value[:, :, 0]
            elif new.startswith("decoder.estimator.up_blocks.") and ".resample.conv." in new:
                value = value.transpose(1, 2, 0)  # ConvTranspose1d [in, out, k] -> [out, k, in]
            else:
                value = value.transpose(0, 2, 1)
        out[new] = value
    return out


def load_flow(
    source: str | Path | Mapping[str, mx.array], config: FlowConfig | None = None
) -> CausalMaskedDiffWithXvec:
    """Build the flow from ``s3gen.safetensors`` / ``s3gen_meanflow.safetensors`` (a path or
    its loaded tensors, with the ``flow.`` prefix). The variant is read from the file
    (``time_embed_mixer`` present = meanflow) unless ``config`` is given."""
    weights = load_safetensors(source) if isinstance(source, (str, Path)) else dict(source)
    flow_weights = strip_prefix(weights, "flow.")
    if not flow_weights:
        raise ValueError(
            "no 'flow.' tensors found: pass s3gen.safetensors or s3gen_meanflow.safetensors"
        )
    if config is None:
        config = FlowConfig.meanflow_config() if MIXER_KEY in flow_weights else FlowConfig()
    model = CausalMaskedDiffWithXvec(config)
    load_strict(model, sanitize(flow_weights), "S3Gen flow (flow.*)")
    model.eval()
    return model
