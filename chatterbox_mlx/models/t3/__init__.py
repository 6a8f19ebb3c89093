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

Modules: ``config`` (``T3Config``, ``T3Cond``), ``cache``, ``llama``, ``gpt2``, ``cond_enc``,
``model`` (``T3``), ``sampling`` (processors, ``Sampler``), ``decode`` (the one loop),
``weights`` (``sanitize``, ``load_t3``, ``quantize_t3``).
"""

from .cache import KVCache
from .config import T3Cond, T3Config
from .decode import T3Step
from .model import T3
from .sampling import Sampler
from .weights import load_t3, quantize_t3, sanitize

__all__ = [
    "KVCache",
    "Sampler",
    "T3",
    "T3Cond",
    "T3Config",
    "T3Step",
    "load_t3",
    "quantize_t3",
    "sanitize",
]
