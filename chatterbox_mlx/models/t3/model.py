"""The T3 model: conditioning + text + speech embeddings into a Llama or GPT-2 backbone,
teacher-forced forward, and generation through the one decode loop (``decode.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..layers import Linear, overlaps_evaluation
from .batch import BatchRow, RowToken, decode_batch
from .cache import KVCache
from .cond_enc import LearnedPositionEmbeddings, T3CondEnc
from .config import T3Cond, T3Config
from .decode import T3Step, decode, exponential_draws
from .gpt2 import GPT2Backbone
from .llama import LlamaBackbone
from .prefix import PrefixCache, prefix_key
from .sampling import Sampler

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
        self._prefixes = PrefixCache()  # not a parameter: underscored names are not children

    def clear_prefixes(self) -> None:
        """Forget every voice's cached conditioning prefix (``prefix.py``)."""
        self._prefixes.clear()

    def update(self, parameters, *args, **kwargs):
        """``nn.Module.update``; new weights make the cached conditioning prefixes stale."""
        self.clear_prefixes()
        return super().update(parameters, *args, **kwargs)

    def update_modules(self, modules, *args, **kwargs):
        """``nn.Module.update_modules`` (quantization swaps layers); clears the prefixes."""
        self.clear_prefixes()
        return super().update_modules(modules, *args, **kwargs)

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

    def max_new_tokens_for(self, t3_cond: T3Cond, text_tokens) -> int:
        """The most speech tokens this T3 can generate after this conditioning and text."""
        cfg = self.config
        text = self._text_row(text_tokens)
        if cfg.is_gpt2:
            return cfg.max_position_embeddings - self._cond_length(t3_cond) - text.shape[1] - 1
        return cfg.max_speech_tokens + 4 - 1

    def _cond_length(self, cond: T3Cond) -> int:
        cfg = self.config
        prompt = cond.cond_prompt_speech_tokens
        n_prompt = 0 if prompt is None else mx.array(prompt).shape[-1]
        if cfg.use_perceiver and prompt is not None:
            n_prompt = cfg.perceiver_queries
        return 1 + n_prompt + int(cfg.emotion_adv)

    def prompt_embeds(
        self, t3_cond: T3Cond, text_tokens, sampler: Sampler, max_new_tokens: int
    ) -> mx.array:
        """The checked prompt of one generation, ``[rows, length, dim]``: conditioning +
        text + BOS (speech position 0 where the variant has learned positions); with CFG
        two rows, the second with its text zeroed (the unconditional row)."""
        cfg = self.config
        if int(max_new_tokens) != max_new_tokens or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
        if sampler.cfg_weight > 0.0 and cfg.is_gpt2:
            raise ValueError("CFG (cfg_weight > 0) needs the Llama T3; GPT-2 T3 has no CFG")
        text = self._text_row(text_tokens)
        self._check_cond(t3_cond)
        self._check_lengths(text.shape[1], max_new_tokens)
        batch = 2 if sampler.cfg_weight > 0.0 else 1  # row 1: unconditional (CFG)
        text = mx.broadcast_to(text, (batch, text.shape[1]))
        bos = mx.full((batch, 1), cfg.start_speech_token, dtype=mx.int32)
        embeds, _ = self.prepare_input_embeds(t3_cond, text, bos, cfg_weight=sampler.cfg_weight)
        if sampler.repeat_start_token:
            bos_embed = self.speech_emb(bos)
            if cfg.learned_pos_emb:
                bos_embed = bos_embed + self.speech_pos_emb.fixed(0)
            embeds = mx.concatenate([embeds, bos_embed], axis=1)
        self._check_context(embeds.shape[1] + max_new_tokens)
        return embeds

    def step_logits(self, x: mx.array, cache: list) -> mx.array:
        """Raw float32 speech logits ``[rows, vocab]`` of the last input position."""
        return self.speech_head(self.tfmr(x, cache)[:, -1]).astype(mx.float32)

    def prefill_logits(self, t3_cond: T3Cond, embeds: mx.array, cache: list) -> mx.array:
        """``step_logits`` of a whole prompt (``prompt_embeds``) into an empty ``cache``: the
        conditioning's keys and values come from the prefix cache (computed alone, batch 1,
        on a miss), then the text and BOS run after them (``prefix.py``)."""
        length = self._cond_length(t3_cond)
        key = prefix_key(t3_cond, self.dtype)
        layers = self._prefixes.get(key)
        if layers is None:
            alone = self.make_cache(1, length)
            self.tfmr(embeds[:1, :length], alone)
            layers = [(c.keys, c.values) for c in alone]
            mx.eval(layers)
            self._prefixes.put(key, layers)
        rows = embeds.shape[0]
        for layer_cache, (keys, values) in zip(cache, layers, strict=True):
            layer_cache.update(
                mx.broadcast_to(keys, (rows, *keys.shape[1:])),
                mx.broadcast_to(values, (rows, *values.shape[1:])),
            )
        return self.step_logits(embeds[:, length:], cache)

    def embed_speech(self, tokens: mx.array, indices: mx.array) -> mx.array:
        """Inputs ``[n, 1, dim]`` of speech tokens ``[n, 1]``, the ``indices[j]``-th
        sampled token of each row (learned speech position ``index + 1``)."""
        embed = self.speech_emb(tokens)
        if self.config.learned_pos_emb:
            embed = embed + self.speech_pos_emb.emb(indices + 1)[:, None]
        return embed

    def generate_steps(
        self,
        t3_cond: T3Cond,
        text_tokens: mx.array,
        sampler: Sampler,
        *,
        max_new_tokens: int = 1000,
        key: mx.array | None = None,
        noise: mx.array | None = None,
    ) -> Iterator[T3Step]:
        """Sample up to ``max_new_tokens`` speech tokens (the stop token included), one
        ``T3Step`` each, with ``sampler`` (``Sampler.cfg`` or ``Sampler.turbo``), from
        ``prompt_embeds``. ``key`` seeds the draws, ``noise`` (``[max_new_tokens, vocab]``
        Exp(1)) replaces them. ``generate_batch`` runs several at once."""
        cfg = self.config
        embeds = self.prompt_embeds(t3_cond, text_tokens, sampler, max_new_tokens)
        batch = embeds.shape[0]
        cache = self.make_cache(batch, embeds.shape[1] + max_new_tokens)

        def step_logits(x: mx.array) -> mx.array:
            if cache[0].offset == 0:  # the prompt
                return self.prefill_logits(t3_cond, x, cache)
            return self.step_logits(x, cache)

        def embed_token(token: mx.array, index: int) -> mx.array:
            embed = self.speech_emb(token)
            if cfg.learned_pos_emb:
                embed = embed + self.speech_pos_emb.fixed(index + 1)
            return mx.broadcast_to(embed, (batch, 1, embed.shape[-1]))

        vocab = cfg.speech_vocab_size
        yield from decode(
            step_logits,
            embed_token,
            embeds,
            sampler,
            exponential_draws(noise, key, vocab, max_new_tokens),
            max_tokens=int(max_new_tokens),
            start_token=cfg.start_speech_token,
            stop_token=cfg.stop_speech_token,
            vocab=vocab,
            overlap=overlaps_evaluation(),
        )

    def generate_batch(
        self, rows: Iterable[BatchRow], *, batch_size: int = 4
    ) -> Iterator[RowToken]:
        """Several generations (``BatchRow``: conditioning, text, sampler, count, key) in
        one forward pass per step, at most ``batch_size`` at a time: a row that finishes
        leaves at once and the next one of ``rows`` (read lazily) joins. Yields a
        ``RowToken`` per row and step; each row speaks what ``generate_steps`` speaks for
        it alone (see ``batch.py``)."""
        return decode_batch(self, rows, batch_size=batch_size)

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
        """Upstream's ``T3.inference`` (English / Multilingual).

        text_tokens: ``[T]``, ``[1, T]`` or the reference's CFG pair ``[2, T]`` (identical
        rows), wrapped in start/stop text tokens. Returns int32 ``[1, N]``, the stop token
        included when reached; ``callback(index, token)`` runs after each token."""
        if self.config.is_gpt2:
            raise ValueError("T3.inference is for the Llama variants; use inference_turbo")
        sampler = Sampler.cfg(
            cfg_weight=cfg_weight,
            repetition_penalty=repetition_penalty,
            temperature=temperature,
            min_p=min_p,
            top_p=top_p,
        )
        steps = self.generate_steps(
            t3_cond, text_tokens, sampler, max_new_tokens=max_new_tokens, key=key, noise=noise
        )
        return mx.array([_collect(steps, callback)], dtype=mx.int32)

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
        """Upstream's ``T3.inference_turbo`` (Turbo / Nano).

        One token is drawn before upstream's loop of ``max_gen_len`` steps, so up to
        ``max_gen_len + 1`` tokens (``noise``: ``[max_gen_len + 1, vocab]``). A final stop
        token is stripped. Returns int32 ``[1, N]``."""
        if not self.config.is_gpt2:
            raise ValueError("T3.inference_turbo is for the GPT-2 variants; use inference")
        if int(max_gen_len) != max_gen_len or max_gen_len <= 0:
            raise ValueError(f"max_gen_len must be a positive integer, got {max_gen_len}")
        sampler = Sampler.turbo(
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
        )
        steps = self.generate_steps(
            t3_cond, text_tokens, sampler, max_new_tokens=max_gen_len + 1, key=key, noise=noise
        )
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
