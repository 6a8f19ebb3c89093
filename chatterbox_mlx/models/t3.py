"""T3: text tokens -> S3 speech tokens (Chatterbox's autoregressive transformer).

One module serves every variant; the variant is a ``T3Config``:

- English / Multilingual: a Llama backbone (RMSNorm, SiLU MLP, llama3-scaled RoPE),
  learned text and speech position embeddings, and a conditioning encoder with a
  perceiver resampler over the prompt speech tokens and an emotion projection.
  Generation (``T3.inference``) uses classifier-free guidance as a batch of two.
- Turbo / Nano: a GPT-2 backbone (LayerNorm, gelu_new, learned ``wpe``), no
  perceiver, no emotion, no T3 position embeddings. Generation: ``T3.inference_turbo``.

The backbones never see token ids: T3 feeds them embeddings, so the backbone's own
token embedding (``tfmr.embed_tokens`` / ``tfmr.wte`` in the hub files) is dead and
dropped by ``sanitize``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..layers import Linear, on_cpu
from . import t3_sampling as smp

LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@dataclass
class T3Config:
    backbone: str = "llama"  # "llama" or "gpt2"
    hidden_size: int = 1024
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64
    intermediate_size: int = 4096
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict | None = field(default_factory=lambda: dict(LLAMA3_ROPE_SCALING))
    max_position_embeddings: int = 131072  # GPT-2: n_positions (size of wpe)

    text_vocab_size: int = 704
    speech_vocab_size: int = 8194
    start_text_token: int = 255
    stop_text_token: int = 0
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    max_text_tokens: int = 2048
    max_speech_tokens: int = 4096
    learned_pos_emb: bool = True
    speech_cond_prompt_len: int = 150

    speaker_embed_size: int = 256
    use_perceiver: bool = True
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    emotion_adv: bool = True

    @property
    def is_gpt2(self) -> bool:
        return self.backbone == "gpt2"

    @classmethod
    def english(cls) -> T3Config:
        return cls()

    @classmethod
    def multilingual(cls) -> T3Config:
        return cls(text_vocab_size=2454)

    @classmethod
    def _gpt2(cls, hidden_size: int, num_layers: int, num_heads: int) -> T3Config:
        return cls(
            backbone="gpt2",
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_heads,
            head_dim=hidden_size // num_heads,
            intermediate_size=4 * hidden_size,
            rope_theta=0.0,
            rope_scaling=None,
            max_position_embeddings=8196,
            text_vocab_size=50276,
            speech_vocab_size=6563,
            learned_pos_emb=False,
            speech_cond_prompt_len=375,
            use_perceiver=False,
            emotion_adv=False,
        )

    @classmethod
    def turbo(cls) -> T3Config:
        """GPT-2 medium: 24 layers, 1024 wide, 16 heads."""
        return cls._gpt2(1024, 24, 16)

    @classmethod
    def nano(cls) -> T3Config:
        """GPT-2 small: 12 layers, 768 wide, 12 heads."""
        return cls._gpt2(768, 12, 12)

    @classmethod
    def from_dict(cls, params: Mapping) -> T3Config:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"T3Config: unknown fields {unknown}; known fields: {sorted(names)}")
        return cls(**dict(params))


@dataclass
class T3Cond:
    """Conditioning for T3 (the reference's ``T3Cond``, without the unused CLAP slot).

    speaker_emb: ``[B, 256]`` voice-encoder embedding. cond_prompt_speech_tokens:
    ``[B, T]`` S3 tokens of the reference audio, or None. emotion_adv: the
    ``exaggeration`` value (float or array of ``B`` values; English/Multilingual only).
    """

    speaker_emb: mx.array
    cond_prompt_speech_tokens: mx.array | None = None
    emotion_adv: mx.array | float | None = 0.5


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of one attention layer in a buffer allocated once.

    Each call writes the new positions in place (slice update) and returns views of
    the filled part; nothing is concatenated per token."""

    def __init__(self, batch: int, num_kv_heads: int, head_dim: int, max_len: int, dtype):
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.keys = mx.zeros(shape, dtype=dtype)
        self.values = mx.zeros(shape, dtype=dtype)
        self.max_len = max_len
        self.offset = 0

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        start, end = self.offset, self.offset + keys.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {end} positions, allocated {self.max_len}; "
                "make the cache with a larger max_len"
            )
        self.keys[:, :, start:end, :] = keys
        self.values[:, :, start:end, :] = values
        self.offset = end
        return self.keys[:, :, :end, :], self.values[:, :, :end, :]


def attention_mask(length: int, offset: int):
    """Causal mask for ``length`` new queries after ``offset`` cached positions."""
    if length == 1:
        return None
    if offset == 0:
        return "causal"
    q_pos = mx.arange(offset, offset + length)[:, None]
    k_pos = mx.arange(offset + length)[None]
    return k_pos <= q_pos


def split_heads(x: mx.array, num_heads: int) -> mx.array:
    batch, length, _ = x.shape
    return x.reshape(batch, length, num_heads, -1).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    batch, _, length, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, -1)


# ----------------------------------------------------------------------------- Llama


def llama3_inv_freq(config: T3Config) -> np.ndarray:
    """RoPE inverse frequencies with llama3 scaling, in float32 as transformers computes them."""
    dim = config.head_dim
    inv_freq = 1.0 / (
        config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)
    )
    inv_freq = inv_freq.astype(np.float32)
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    if scaling.get("rope_type", "llama3") != "llama3":
        raise ValueError(f"unsupported rope_scaling {scaling}: only llama3 is implemented")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / factor + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rotate_half(x: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class LlamaAttention(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.scale = hd**-0.5
        self.q_proj = Linear(dim, self.num_heads * hd, bias=False)
        self.k_proj = Linear(dim, self.num_kv_heads * hd, bias=False)
        self.v_proj = Linear(dim, self.num_kv_heads * hd, bias=False)
        self.o_proj = Linear(self.num_heads * hd, dim, bias=False)

    def __call__(self, x, cos, sin, mask, cache: KVCache | None) -> mx.array:
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_kv_heads)
        v = split_heads(self.v_proj(x), self.num_kv_heads)
        q = (q * cos + rotate_half(q) * sin).astype(x.dtype)
        k = (k * cos + rotate_half(k) * sin).astype(x.dtype)
        if cache is not None:
            k, v = cache.update(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(merge_heads(out))


class LlamaMLP(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = Linear(dim, hidden, bias=False)
        self.up_proj = Linear(dim, hidden, bias=False)
        self.down_proj = Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)

    def __call__(self, x, cos, sin, mask, cache) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    """transformers' LlamaModel driven by ``inputs_embeds`` (no token embedding)."""

    def __init__(self, config: T3Config):
        super().__init__()
        self.layers = [LlamaLayer(config) for _ in range(config.num_layers)]
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self._inv_freq = mx.array(llama3_inv_freq(config))

    def rope(self, offset: int, length: int) -> tuple[mx.array, mx.array]:
        positions = mx.arange(offset, offset + length, dtype=mx.float32)
        freqs = positions[:, None] * self._inv_freq[None, :]
        emb = mx.concatenate([freqs, freqs], axis=-1)
        return mx.cos(emb), mx.sin(emb)

    def __call__(self, x: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        offset = cache[0].offset if cache else 0
        cos, sin = self.rope(offset, x.shape[1])
        mask = attention_mask(x.shape[1], offset)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache[i] if cache else None)
        return self.norm(x)


# ----------------------------------------------------------------------------- GPT-2


class GPT2Attention(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.scale = (dim // config.num_heads) ** -0.5
        self.c_attn = Linear(dim, 3 * dim)
        self.c_proj = Linear(dim, dim)

    def __call__(self, x, mask, cache: KVCache | None) -> mx.array:
        q, k, v = mx.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.c_proj(merge_heads(out))


class GPT2MLP(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.c_fc = Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = Linear(config.intermediate_size, config.hidden_size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.c_proj(nn.gelu_approx(self.c_fc(x)))  # gelu_approx is gelu_new


class GPT2Block(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GPT2MLP(config)

    def __call__(self, x, mask, cache) -> mx.array:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2Backbone(nn.Module):
    """transformers' GPT2Model driven by ``inputs_embeds`` (adds its own ``wpe``)."""

    def __init__(self, config: T3Config):
        super().__init__()
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.h = [GPT2Block(config) for _ in range(config.num_layers)]
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)

    def __call__(self, x: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        offset = cache[0].offset if cache else 0
        x = x + self.wpe(mx.arange(offset, offset + x.shape[1]))
        mask = attention_mask(x.shape[1], offset)
        for i, block in enumerate(self.h):
            x = block(x, mask, cache[i] if cache else None)
        return self.ln_f(x)


# ----------------------------------------------------------------------------- conditioning


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(length, dim)

    def __call__(self, length: int) -> mx.array:
        """Embeddings of positions 0 .. length-1, ``[length, dim]``."""
        return self.emb(mx.arange(length))

    def fixed(self, index: int) -> mx.array:
        return self.emb(mx.array([index]))


class PerceiverAttention(nn.Module):
    """The reference's ``AttentionBlock2``: pre-LayerNorm attention with a residual."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def __call__(self, x1: mx.array, x2: mx.array) -> mx.array:
        x1_norm, x2_norm = self.norm(x1), self.norm(x2)
        q = split_heads(self.to_q(x1_norm), self.num_heads)
        k = split_heads(self.to_k(x2_norm), self.num_heads)
        v = split_heads(self.to_v(x2_norm), self.num_heads)
        scale = q.shape[-1] ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
        return x1 + self.proj_out(merge_heads(out))


class Perceiver(nn.Module):
    """Resamples the prompt speech embeddings to a fixed number of query tokens."""

    def __init__(self, num_queries: int, dim: int, num_heads: int):
        super().__init__()
        self.pre_attention_query = mx.zeros((1, num_queries, dim))
        self.attn = PerceiverAttention(dim, num_heads)

    def __call__(self, h: mx.array) -> mx.array:
        query = mx.broadcast_to(
            self.pre_attention_query, (h.shape[0],) + self.pre_attention_query.shape[1:]
        )
        pre_att = self.attn(query, h)  # cross-attention
        return self.attn(pre_att, pre_att)  # self-attention, same weights


class T3CondEnc(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        dim = config.hidden_size
        self.spkr_enc = nn.Linear(config.speaker_embed_size, dim)
        if config.emotion_adv:
            self.emotion_adv_fc = nn.Linear(1, dim, bias=False)
        if config.use_perceiver:
            self.perceiver = Perceiver(config.perceiver_queries, dim, config.perceiver_heads)


# ----------------------------------------------------------------------------- T3


@dataclass
class T3Step:
    """One sampled token: its index in the loop, its id and the processed
    probabilities ``[1, vocab]`` it was drawn from."""

    index: int
    token: int
    probs: mx.array


TokenCallback = Callable[[int, int], None]


class T3(nn.Module):
    def __init__(self, config: T3Config | None = None):
        super().__init__()
        config = config or T3Config.english()
        if config.backbone not in ("llama", "gpt2"):
            raise ValueError(
                f"T3Config.backbone must be 'llama' or 'gpt2', got {config.backbone!r}"
            )
        self.config = config
        dim = config.hidden_size
        self.tfmr = GPT2Backbone(config) if config.is_gpt2 else LlamaBackbone(config)
        self.cond_enc = T3CondEnc(config)
        self.text_emb = nn.Embedding(config.text_vocab_size, dim)
        self.speech_emb = nn.Embedding(config.speech_vocab_size, dim)
        if config.learned_pos_emb:
            self.text_pos_emb = LearnedPositionEmbeddings(config.max_text_tokens + 2, dim)
            self.speech_pos_emb = LearnedPositionEmbeddings(config.max_speech_tokens + 4, dim)
        self.text_head = Linear(dim, config.text_vocab_size, bias=False)
        self.speech_head = Linear(dim, config.speech_vocab_size, bias=config.is_gpt2)

    @property
    def dtype(self):
        return self.speech_emb.weight.dtype

    # ------------------------------------------------------------------ inputs

    def _check_tokens(self, tokens, vocab: int, what: str) -> mx.array:
        tokens = mx.array(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"{what} must be [T] or [batch, T], got shape {tokens.shape}")
        if tokens.size == 0:
            raise ValueError(f"{what} is empty: pass at least one token id")
        if mx.issubdtype(tokens.dtype, mx.floating):
            raise ValueError(f"{what} must hold integer token ids, got {tokens.dtype}")
        low, high = mx.min(tokens).item(), mx.max(tokens).item()
        if low < 0 or high >= vocab:
            raise ValueError(
                f"{what} has ids out of range [{low}, {high}]; this T3 accepts 0..{vocab - 1}. "
                "Tokenize with the tokenizer of the same model variant."
            )
        return tokens.astype(mx.int32)

    def _check_cond(self, cond: T3Cond | None) -> None:
        cfg = self.config
        if cond is None or getattr(cond, "speaker_emb", None) is None:
            raise ValueError(
                "missing conditioning: pass t3_cond=T3Cond(speaker_emb=...) (prepare the voice "
                "with the voice encoder, or load the built-in conds)"
            )
        if cond.speaker_emb.size % cfg.speaker_embed_size:
            raise ValueError(
                f"speaker_emb has shape {cond.speaker_emb.shape}; expected "
                f"[B, {cfg.speaker_embed_size}] (a voice-encoder embedding)"
            )
        if cfg.emotion_adv and cond.emotion_adv is None:
            raise ValueError(
                "missing conditioning: this T3 needs T3Cond.emotion_adv (the exaggeration, "
                "e.g. 0.5)"
            )
        if cond.cond_prompt_speech_tokens is not None:
            self._check_tokens(
                cond.cond_prompt_speech_tokens, cfg.speech_vocab_size, "cond_prompt_speech_tokens"
            )

    def prepare_conditioning(self, cond: T3Cond) -> mx.array:
        """Conditioning embeddings ``[B, len_cond, dim]``: speaker, prompt, emotion."""
        self._check_cond(cond)
        cfg, enc = self.config, self.cond_enc
        speaker = mx.array(cond.speaker_emb).astype(self.dtype)
        parts = [enc.spkr_enc(speaker.reshape(-1, cfg.speaker_embed_size))[:, None]]
        if cond.cond_prompt_speech_tokens is not None:
            tokens = self._check_tokens(
                cond.cond_prompt_speech_tokens, cfg.speech_vocab_size, "cond_prompt_speech_tokens"
            )
            prompt = self.speech_emb(tokens)
            if not cfg.is_gpt2:
                prompt = prompt + self.speech_pos_emb(tokens.shape[1])
            if cfg.use_perceiver:
                prompt = enc.perceiver(prompt)
            parts.append(prompt)
        if cfg.emotion_adv:
            emotion = mx.array(cond.emotion_adv, dtype=self.dtype).reshape(-1, 1, 1)
            parts.append(enc.emotion_adv_fc(emotion))
        batch = max(p.shape[0] for p in parts)
        parts = [mx.broadcast_to(p, (batch,) + p.shape[1:]) for p in parts]
        return mx.concatenate(parts, axis=1)

    def prepare_input_embeds(
        self,
        cond: T3Cond,
        text_tokens: mx.array,
        speech_tokens: mx.array,
        cfg_weight: float = 0.0,
    ) -> tuple[mx.array, int]:
        """[conditioning | text | speech] embeddings and the conditioning length.

        With ``cfg_weight > 0`` (Llama variants) batch row 1 is the unconditional row:
        its text token embeddings are zeroed (position embeddings are still added)."""
        cond_emb = self.prepare_conditioning(cond)
        text_emb = self.text_emb(text_tokens)
        if cfg_weight > 0.0 and not self.config.is_gpt2:
            keep = (mx.arange(text_emb.shape[0]) != 1).astype(text_emb.dtype)
            text_emb = text_emb * keep[:, None, None]
        speech_emb = self.speech_emb(speech_tokens)
        if self.config.learned_pos_emb:
            text_emb = text_emb + self.text_pos_emb(text_tokens.shape[1])
            speech_emb = speech_emb + self.speech_pos_emb(speech_tokens.shape[1])
        batch = text_emb.shape[0]
        if cond_emb.shape[0] != batch:
            cond_emb = mx.broadcast_to(cond_emb, (batch,) + cond_emb.shape[1:])
        return mx.concatenate([cond_emb, text_emb, speech_emb], axis=1), cond_emb.shape[1]

    def make_cache(self, batch: int, max_len: int) -> list[KVCache]:
        cfg = self.config
        return [
            KVCache(batch, cfg.num_kv_heads, cfg.head_dim, max_len, self.dtype)
            for _ in range(cfg.num_layers)
        ]

    # ------------------------------------------------------------------ teacher forcing

    def __call__(
        self, cond: T3Cond, text_tokens: mx.array, speech_tokens: mx.array
    ) -> tuple[mx.array, mx.array]:
        """Teacher-forced forward: (text_logits ``[B, Lt, Vt]``, speech_logits ``[B, Ls, Vs]``)."""
        cfg = self.config
        text_tokens = self._check_tokens(text_tokens, cfg.text_vocab_size, "text_tokens")
        speech_tokens = self._check_tokens(speech_tokens, cfg.speech_vocab_size, "speech_tokens")
        self._check_lengths(text_tokens.shape[1], speech_tokens.shape[1])
        embeds, len_cond = self.prepare_input_embeds(cond, text_tokens, speech_tokens)
        self._check_context(embeds.shape[1])
        hidden = self.tfmr(embeds)
        len_text = text_tokens.shape[1]
        text_logits = self.text_head(hidden[:, len_cond : len_cond + len_text])
        speech_logits = self.speech_head(hidden[:, len_cond + len_text :])
        return text_logits, speech_logits

    def _check_lengths(self, len_text: int, len_speech: int) -> None:
        cfg = self.config
        if not cfg.learned_pos_emb:
            return
        if len_text > cfg.max_text_tokens + 2:
            raise ValueError(
                f"{len_text} text tokens; this T3 accepts at most {cfg.max_text_tokens + 2}: "
                "split the text into shorter sentences"
            )
        if len_speech > cfg.max_speech_tokens + 4:
            raise ValueError(
                f"{len_speech} speech positions; this T3 has {cfg.max_speech_tokens + 4}: "
                "lower max_new_tokens"
            )

    def _check_context(self, length: int) -> None:
        cfg = self.config
        if cfg.is_gpt2 and length > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence of {length} positions exceeds GPT-2's {cfg.max_position_embeddings}: "
                "use shorter text, a shorter voice prompt or fewer new tokens"
            )

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _noise_source(noise: mx.array | None, key: mx.array | None, vocab: int, steps: int):
        """Per-step Exp(1) draws: rows of ``noise`` when given, else from ``key`` / the
        global MLX generator."""
        if noise is not None:
            noise = mx.array(noise, dtype=mx.float32)
            if noise.ndim != 2 or noise.shape[1] != vocab:
                raise ValueError(f"noise must be [steps, {vocab}] Exp(1) draws, got {noise.shape}")

            def take(i: int) -> mx.array:
                if i >= noise.shape[0]:
                    raise ValueError(
                        f"noise has {noise.shape[0]} rows but step {i} needs one: pass up to "
                        f"{steps} rows, one per sampled token"
                    )
                return noise[i : i + 1]

            return take
        state = {"key": key}

        def draw(_: int) -> mx.array:
            if state["key"] is None:
                return smp.exponential_noise((1, vocab))
            state["key"], sub = mx.random.split(state["key"])
            return smp.exponential_noise((1, vocab), key=sub)

        return draw

    def _step_logits(self, x: mx.array, cache: list[KVCache]) -> mx.array:
        hidden = self.tfmr(x, cache)
        return self.speech_head(hidden[:, -1]).astype(mx.float32)

    def inference_steps(
        self,
        t3_cond: T3Cond,
        text_tokens: mx.array,
        *,
        max_new_tokens: int = 1000,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.2,
        cfg_weight: float = 0.5,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> Iterator[T3Step]:
        """English/Multilingual sampling loop, one ``T3Step`` per token (see ``inference``)."""
        cfg = self.config
        if cfg.is_gpt2 or not cfg.learned_pos_emb:
            raise ValueError("T3.inference is for the Llama variants; use inference_turbo")
        text = self._loop_inputs(
            t3_cond, text_tokens, ("max_new_tokens", max_new_tokens), temperature=temperature,
            top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
        )  # fmt: skip
        self._check_lengths(text.shape[1], max_new_tokens)
        vocab = cfg.speech_vocab_size
        draw = self._noise_source(noise, key, vocab, max_new_tokens)

        batch = 2 if cfg_weight > 0.0 else 1  # row 1: unconditional (CFG)
        text = mx.broadcast_to(text, (batch, text.shape[1]))
        bos = mx.full((batch, 1), cfg.start_speech_token, dtype=mx.int32)
        embeds, _ = self.prepare_input_embeds(t3_cond, text, bos, cfg_weight=cfg_weight)
        bos_embed = self.speech_emb(bos) + self.speech_pos_emb.fixed(0)
        x = mx.concatenate([embeds, bos_embed], axis=1)
        cache = self.make_cache(batch, x.shape[1] + max_new_tokens)

        logits = self._step_logits(x, cache)
        seen = smp.seen_mask(mx.array([[cfg.start_speech_token]]), vocab)
        for i in range(max_new_tokens):
            if batch == 2:
                cond, uncond = logits[0:1], logits[1:2]
                logits = cond + mx.array(cfg_weight, dtype=mx.float32) * (cond - uncond)
            logits = smp.apply_repetition_penalty(logits, seen, float(repetition_penalty))
            if temperature != 1.0:
                logits = smp.apply_temperature(logits, temperature)
            logits = smp.apply_min_p(logits, min_p)
            logits = smp.apply_top_p(logits, top_p)
            probs = mx.softmax(logits, axis=-1)
            token = smp.sample_from_probs(probs, draw(i))
            mx.eval(token, probs)
            token_id = token.item()
            yield T3Step(i, token_id, probs)
            if token_id == cfg.stop_speech_token or i == max_new_tokens - 1:
                break
            seen = mx.logical_or(seen, mx.arange(vocab) == token_id)
            embed = self.speech_emb(token) + self.speech_pos_emb.fixed(i + 1)
            logits = self._step_logits(mx.broadcast_to(embed, (batch, 1, embed.shape[-1])), cache)

    def inference(
        self,
        t3_cond: T3Cond,
        text_tokens: mx.array,
        *,
        max_new_tokens: int = 1000,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repetition_penalty: float = 1.2,
        cfg_weight: float = 0.5,
        key: mx.array | None = None,
        noise: mx.array | None = None,
        callback: TokenCallback | None = None,
    ) -> mx.array:
        """Sample speech tokens like the reference's ``T3.inference``.

        text_tokens: ``[T]``, ``[1, T]`` or the reference's CFG pair ``[2, T]`` (identical
        rows), wrapped in start/stop text tokens. Conditioning + text + BOS (speech position
        0), CFG as a batch of two (``cond + cfg_weight * (cond - uncond)``), then repetition
        penalty -> temperature -> min_p -> top_p -> multinomial; stops after
        ``stop_speech_token`` or ``max_new_tokens``. ``key`` seeds the draws, ``noise``
        (``[max_new_tokens, vocab]`` Exp(1)) replaces them; ``callback(index, token)`` runs
        after each token. Returns int32 ``[1, N]``, the stop token included when reached.
        """
        steps = self.inference_steps(
            t3_cond, text_tokens, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
            cfg_weight=cfg_weight, key=key, noise=noise,
        )  # fmt: skip
        return mx.array([_collect(steps, callback)], dtype=mx.int32)

    def _loop_inputs(
        self, t3_cond: T3Cond, text_tokens, budget: tuple[str, int], **sampling
    ) -> mx.array:
        """Checks shared by both sampling loops (``budget``: the token limit's name and
        value); returns the single text row."""
        name, value = budget
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value}")
        smp.check_sampling_args(**sampling)
        self._check_cond(t3_cond)
        return self._text_row(text_tokens)

    def _text_row(self, text_tokens) -> mx.array:
        """The single text row ``[1, T]``; the reference's doubled CFG batch is accepted."""
        cfg = self.config
        text = self._check_tokens(text_tokens, cfg.text_vocab_size, "text_tokens")
        if text.shape[0] == 2 and mx.array_equal(text[0], text[1]).item():
            text = text[:1]
        if text.shape[0] != 1:
            raise ValueError(
                f"text_tokens has batch {text.shape[0]}; generation takes one text ([T] or [1, T])"
            )
        if not cfg.is_gpt2:
            row = np.array(text[0])
            if cfg.start_text_token not in row or cfg.stop_text_token not in row:
                raise ValueError(
                    f"text_tokens must contain start_text_token {cfg.start_text_token} and "
                    f"stop_text_token {cfg.stop_text_token}: wrap the ids as "
                    "[start, *ids, stop]"
                )
        return text

    def inference_turbo_steps(
        self,
        t3_cond: T3Cond,
        text_tokens: mx.array,
        *,
        temperature: float = 0.8,
        top_k: int = 1000,
        top_p: float = 0.95,
        repetition_penalty: float = 1.2,
        max_gen_len: int = 1000,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> Iterator[T3Step]:
        """Turbo/Nano sampling loop, one ``T3Step`` per token (see ``inference_turbo``)."""
        cfg = self.config
        if not cfg.is_gpt2:
            raise ValueError("T3.inference_turbo is for the GPT-2 variants; use inference")
        text = self._loop_inputs(
            t3_cond, text_tokens, ("max_gen_len", max_gen_len), top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty,
        )  # fmt: skip
        vocab = cfg.speech_vocab_size
        draw = self._noise_source(noise, key, vocab, max_gen_len + 1)

        def process(logits: mx.array, seen: mx.array) -> mx.array:
            # transformers LogitsProcessorList order, as built by the reference
            if temperature > 0 and temperature != 1.0:
                logits = smp.apply_temperature(logits, temperature)
            if top_k > 0:
                logits = smp.apply_top_k(logits, top_k)
            if top_p < 1.0:
                logits = smp.apply_top_p(logits, top_p)
            if repetition_penalty != 1.0:
                logits = smp.apply_repetition_penalty(logits, seen, float(repetition_penalty))
            return logits

        bos = mx.full((1, 1), cfg.start_speech_token, dtype=mx.int32)
        embeds, _ = self.prepare_input_embeds(t3_cond, text, bos)
        self._check_context(embeds.shape[1] + max_gen_len)
        cache = self.make_cache(1, embeds.shape[1] + max_gen_len)

        logits = process(self._step_logits(embeds, cache), smp.seen_mask(bos, vocab))
        probs = mx.softmax(logits, axis=-1)
        token = smp.sample_from_probs(probs, draw(0))
        mx.eval(token, probs)
        token_id = token.item()
        yield T3Step(0, token_id, probs)  # no stop check on this first token (as reference)
        seen = mx.arange(vocab)[None] == token_id
        for i in range(1, max_gen_len + 1):
            logits = process(self._step_logits(self.speech_emb(token), cache), seen)
            all_filtered = mx.all(logits == -mx.inf)
            probs = mx.softmax(logits, axis=-1)
            token = smp.sample_from_probs(probs, draw(i))
            mx.eval(token, probs, all_filtered)
            if all_filtered.item():
                break
            token_id = token.item()
            yield T3Step(i, token_id, probs)
            if token_id == cfg.stop_speech_token:
                break
            seen = mx.logical_or(seen, mx.arange(vocab) == token_id)

    def inference_turbo(
        self,
        t3_cond: T3Cond,
        text_tokens: mx.array,
        *,
        temperature: float = 0.8,
        top_k: int = 1000,
        top_p: float = 0.95,
        repetition_penalty: float = 1.2,
        max_gen_len: int = 1000,
        key: mx.array | None = None,
        noise: mx.array | None = None,
        callback: TokenCallback | None = None,
    ) -> mx.array:
        """Sample speech tokens like the reference's ``T3.inference_turbo``.

        No CFG; processors in the reference's order: temperature (skipped when <= 0 or 1),
        top_k (skipped when 0), top_p (skipped when 1), repetition penalty (over the
        generated tokens; over BOS for the first). One token is drawn before the loop of
        ``max_gen_len`` steps, so up to ``max_gen_len + 1`` tokens (``noise``:
        ``[max_gen_len + 1, vocab]``). A final stop token is stripped. Returns int32 ``[1, N]``.
        """
        steps = self.inference_turbo_steps(
            t3_cond, text_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, max_gen_len=max_gen_len, key=key, noise=noise,
        )  # fmt: skip
        tokens = _collect(steps, callback)
        if tokens and tokens[-1] == self.config.stop_speech_token:
            tokens = tokens[:-1]
        return mx.array([tokens], dtype=mx.int32)


def _collect(steps: Iterator[T3Step], callback: TokenCallback | None) -> list[int]:
    tokens = []
    for step in steps:
        tokens.append(step.token)
        if callback is not None:
            callback(step.index, step.token)
    return tokens


# ----------------------------------------------------------------------------- weights

GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
DEAD_KEYS = ("tfmr.embed_tokens.weight", "tfmr.wte.weight")


def sanitize(weights: Mapping[str, mx.array]) -> dict[str, mx.array]:
    """Hub T3 file (``t3_cfg``, ``t3_mtl23ls_v2/v3``, ``t3_turbo_v1``, ``t3_nano_v1``) ->
    T3 parameters: drops the dead backbone token embedding and transposes GPT-2's
    ``Conv1D`` weights ([in, out] -> [out, in]). Only for torch-layout files."""
    if "model" in weights and not hasattr(weights["model"], "shape"):
        raise ValueError("this file wraps the weights in a 'model' entry; pass weights['model'][0]")
    out = {}
    for key, value in weights.items():
        if key in DEAD_KEYS:
            continue
        if key.startswith("tfmr.h.") and key.endswith(GPT2_CONV1D):
            value = mx.contiguous(value.T)  # row-major [out, in], as Linear streams it
        out[key] = value
    return out


def load_t3(model: T3, weights: Mapping[str, mx.array], what: str = "T3") -> T3:
    """Strictly load a hub file's tensors (``sanitize`` applied) into ``model``."""
    from ..weights import load_strict

    load_strict(model, sanitize(weights), what)
    return model


def quantize_t3(model: T3, bits: int = 8, group_size: int = 64) -> T3:
    """Quantize the backbone's linear layers in place (embeddings, heads and the
    conditioning encoder stay float).

    Works on a float model (quantizes its weights) or on a fresh one before loading
    weights saved from a quantized model."""
    if bits not in (2, 3, 4, 5, 6, 8):
        raise ValueError(f"bits must be one of 2, 3, 4, 5, 6, 8 (4 or 8 recommended), got {bits}")
    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size must be 32, 64 or 128, got {group_size}")

    if on_cpu():
        warnings.warn(
            f"T3 quantized to {bits} bits on MLX's CPU backend, whose quantized matmul is "
            "unoptimized: about 15x slower per token than float32 (measured on x86). "
            "Quantization pays off on Apple GPUs; on the CPU use float32.",
            stacklevel=2,
        )

    def quantizable(_: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and module.weight.shape[-1] % group_size == 0

    nn.quantize(model.tfmr, group_size=group_size, bits=bits, class_predicate=quantizable)
    return model
