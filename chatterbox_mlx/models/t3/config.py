"""T3's configuration (one dataclass for every variant) and its conditioning inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import mlx.core as mx

from ...constants import SPEECH_VOCAB_SIZE
from ..config_utils import from_dict

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
    start_speech_token: int = SPEECH_VOCAB_SIZE
    stop_speech_token: int = SPEECH_VOCAB_SIZE + 1
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
        return from_dict(cls, params)


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
