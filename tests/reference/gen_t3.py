"""Goldens for T3 (runs in the reference venv).

Usage: .refenv/bin/python tests/reference/gen_t3.py [small] [cfg] [turbo] [nano]
(no argument: all). Writes
- ``t3.npz``: reduced-size Llama (2 layers, 64 wide, GQA 4/2 heads, llama3 RoPE) and GPT-2
  (2 layers, 64 wide) T3s with weights ``random_tensor(key, shape, seed)`` from the layout
  stored in the golden; conditioning, teacher-forced logits, the logits processors on fixed
  logits, and whole generations with every step's processed probabilities and the Exp(1)
  draws ``torch.multinomial`` used (it returns ``argmax(probs / q)``, checked at each step).
- ``t3_full_{cfg,turbo,nano}.npz``: the full-size T3 loaded strict=True from the random
  real-layout checkpoint of ``tests/helpers/checkpoints.py`` (same file the tests read):
  conditioning, teacher-forced logits, a few generated steps.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from chatterbox.models.t3 import t3 as t3_module
from chatterbox.models.t3.llama_configs import GPT2_MEDIUM_CONFIG, LLAMA_CONFIGS
from chatterbox.models.t3.modules.cond_enc import T3Cond
from chatterbox.models.t3.modules.perceiver import Perceiver
from chatterbox.models.t3.modules.t3_config import T3Config
from common import save_golden
from safetensors.torch import load_file
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tests.helpers.checkpoints import cached_checkpoint, random_tensor

SCRIPT = "tests/reference/gen_t3.py"
SEED = 0

# git HEAD's GPT2_small (Nano), absent from 0.1.7
LLAMA_CONFIGS.setdefault(
    "GPT2_small",
    dict(GPT2_MEDIUM_CONFIG, n_embd=768, hidden_size=768, n_head=12, n_layer=12),
)
LLAMA_CONFIGS["tiny_llama"] = dict(
    LLAMA_CONFIGS["Llama_520M"],
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
LLAMA_CONFIGS["tiny_gpt2"] = dict(
    GPT2_MEDIUM_CONFIG,
    n_embd=64,
    hidden_size=64,
    n_head=4,
    n_layer=2,
    n_positions=256,
    n_ctx=256,
    vocab_size=1000,
)


# ----------------------------------------------------------------------------- helpers


class MultinomialRecorder:
    """Wraps torch.multinomial: records (probs, Exp(1) draws, token) without changing
    the random stream, and checks token == argmax(probs / q)."""

    def __init__(self):
        self.records = []
        self.real = torch.multinomial

    def __call__(self, probs, num_samples, *args, **kwargs):
        state = torch.get_rng_state()
        q = torch.empty_like(probs).exponential_(1)
        torch.set_rng_state(state)
        token = self.real(probs, num_samples, *args, **kwargs)
        assert token.item() == torch.argmax(probs / q, dim=-1).item(), "multinomial != argmax(p/q)"
        self.records.append((probs.clone(), q, token.clone()))
        return token

    def __enter__(self):
        self.records = []
        torch.multinomial = self
        return self

    def __exit__(self, *exc):
        torch.multinomial = self.real

    def arrays(self, prefix: str) -> dict:
        return {
            f"{prefix}_probs": torch.cat([r[0] for r in self.records]).numpy(),
            f"{prefix}_noise": torch.cat([r[1] for r in self.records]).numpy(),
            f"{prefix}_sampled": np.array([r[2].item() for r in self.records], dtype=np.int64),
        }


def fill_random(model: torch.nn.Module, seed: int = SEED) -> dict:
    """Load ``random_tensor`` values for every state_dict key; return the layout."""
    state = model.state_dict()
    layout = {k: list(v.shape) for k, v in state.items()}
    values = {
        k: torch.from_numpy(random_tensor(k, tuple(s), "float32", seed)) for k, s in layout.items()
    }
    model.load_state_dict(values, strict=True)
    return layout


def make_cond(speaker, prompt, emotion):
    return T3Cond(
        speaker_emb=torch.from_numpy(speaker),
        cond_prompt_speech_tokens=None if prompt is None else torch.from_numpy(prompt),
        emotion_adv=None if emotion is None else torch.full((1, 1, 1), float(emotion)),
    )


def teacher_forced(model, cond_args, text, speech) -> dict:
    cond_emb = model.prepare_conditioning(make_cond(*cond_args))
    text_t, speech_t = torch.from_numpy(text), torch.from_numpy(speech)
    if model.is_gpt:  # forward() insists on start/stop text tokens; Turbo has none
        embeds, len_cond = model.prepare_input_embeds(
            t3_cond=make_cond(*cond_args), text_tokens=text_t, speech_tokens=speech_t
        )
        hidden = model.tfmr(inputs_embeds=embeds).last_hidden_state
        n_text = text.shape[1]
        text_logits = model.text_head(hidden[:, len_cond : len_cond + n_text])
        speech_logits = model.speech_head(hidden[:, len_cond + n_text :])
    else:
        out = model(
            t3_cond=make_cond(*cond_args),
            text_tokens=text_t,
            text_token_lens=torch.tensor([text.shape[1]]),
            speech_tokens=speech_t,
            speech_token_lens=torch.tensor([speech.shape[1]]),
        )
        text_logits, speech_logits = out.text_logits, out.speech_logits
    return {"cond_emb": cond_emb, "text_logits": text_logits, "speech_logits": speech_logits}


def run_english(model, cond_args, text, prefix, seed, **kwargs) -> dict:
    torch.manual_seed(seed)
    with MultinomialRecorder() as rec:
        tokens = model.inference(
            t3_cond=make_cond(*cond_args),
            text_tokens=torch.from_numpy(np.concatenate([text, text])),  # CFG pair, as tts.py
            **kwargs,
        )
    out = rec.arrays(prefix)
    out[f"{prefix}_tokens"] = tokens.numpy()
    return out


def run_turbo(model, cond_args, text, prefix, seed, **kwargs) -> dict:
    torch.manual_seed(seed)
    with MultinomialRecorder() as rec:
        tokens = model.inference_turbo(make_cond(*cond_args), torch.from_numpy(text), **kwargs)
    out = rec.arrays(prefix)
    out[f"{prefix}_tokens"] = tokens.numpy()
    return out


def prefixed(prefix: str, arrays: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in arrays.items()}


# ----------------------------------------------------------------------------- reduced size

ENGLISH_RUNS = {
    "gen_default": dict(max_new_tokens=24),  # T3.inference's defaults
    "gen_custom": dict(
        max_new_tokens=16,
        temperature=1.3,
        top_p=0.8,
        min_p=0.02,
        repetition_penalty=2.0,
        cfg_weight=1.0,
    ),
}
TURBO_RUNS = {
    "gen_default": dict(max_gen_len=20),  # inference_turbo's defaults (top_k 1000 > vocab)
    "gen_custom": dict(
        max_gen_len=15, temperature=1.0, top_k=40, top_p=1.0, repetition_penalty=1.5
    ),
}


def small_llama() -> dict:
    hp = T3Config(text_tokens_dict_size=704)
    hp.llama_config_name = "tiny_llama"
    hp.speech_tokens_dict_size, hp.start_speech_token, hp.stop_speech_token = 512, 510, 511
    hp.max_text_tokens, hp.max_speech_tokens = 62, 124
    torch.manual_seed(SEED)
    model = t3_module.T3(hp)
    model.cond_enc.perceiver = Perceiver(8, 64, 64, 4)
    layout = fill_random(model.eval())

    rng = np.random.default_rng(1)
    speaker = rng.standard_normal((1, 256)).astype(np.float32)
    prompt = rng.integers(0, 510, (1, 10))
    cond_args = (speaker, prompt, 0.7)
    text = np.concatenate([[255], rng.integers(1, 704, 10), [0]])[None]
    speech = np.concatenate([[510], rng.integers(0, 510, 7)])[None]
    out = {
        "layout": json.dumps(layout),
        "speaker": speaker,
        "prompt": prompt,
        "emotion": 0.7,
        "text": text,
        "speech": speech,
    }
    out.update(teacher_forced(model, cond_args, text, speech))
    # CFG input embeddings (row 1: text embeddings zeroed)
    embeds, _ = model.prepare_input_embeds(
        t3_cond=make_cond(*cond_args),
        text_tokens=torch.from_numpy(np.concatenate([text, text])),
        speech_tokens=torch.full((2, 1), 510),
        cfg_weight=0.5,
    )
    out["cfg_embeds"] = embeds
    # no prompt tokens: conditioning is speaker + emotion only
    out["cond_emb_noprompt"] = model.prepare_conditioning(make_cond(speaker, None, 0.3))
    for i, (name, kwargs) in enumerate(ENGLISH_RUNS.items()):
        out.update(run_english(model, cond_args, text, name, seed=10 + i, **kwargs))
    # stop token: rerun the default draws with the 6th sampled token declared the stop token
    stop = int(out["gen_default_tokens"][0, 5])
    model.hp.stop_speech_token = stop
    out.update(
        run_english(model, cond_args, text, "gen_stop", seed=10, **ENGLISH_RUNS["gen_default"])
    )
    out["gen_stop_token"] = stop
    return prefixed("llama", out)


def small_gpt2() -> dict:
    hp = T3Config(text_tokens_dict_size=1000)
    hp.llama_config_name = "tiny_gpt2"
    hp.speech_tokens_dict_size, hp.start_speech_token, hp.stop_speech_token = 512, 510, 511
    hp.input_pos_emb = None
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    torch.manual_seed(SEED)
    model = t3_module.T3(hp)
    layout = fill_random(model.eval())

    rng = np.random.default_rng(2)
    speaker = rng.standard_normal((1, 256)).astype(np.float32)
    prompt = rng.integers(0, 510, (1, 12))
    cond_args = (speaker, prompt, None)
    text = rng.integers(0, 1000, (1, 9))
    speech = np.concatenate([[510], rng.integers(0, 510, 7)])[None]
    out = {
        "layout": json.dumps(layout),
        "speaker": speaker,
        "prompt": prompt,
        "text": text,
        "speech": speech,
    }
    out.update(teacher_forced(model, cond_args, text, speech))
    for i, (name, kwargs) in enumerate(TURBO_RUNS.items()):
        out.update(run_turbo(model, cond_args, text, name, seed=20 + i, **kwargs))
    stop = int(out["gen_default_tokens"][0, 5])
    model.hp.stop_speech_token = stop
    out.update(run_turbo(model, cond_args, text, "gen_stop", seed=20, **TURBO_RUNS["gen_default"]))
    out["gen_stop_token"] = stop
    return prefixed("gpt2", out)


def processors() -> dict:
    rng = np.random.default_rng(3)
    logits = (2.0 * rng.standard_normal((2, 512))).astype(np.float32)
    logits[1, :100] = -np.inf  # as after an earlier filter
    ids = rng.integers(0, 512, (2, 9))
    ids[:, -1] = ids[:, 0]  # duplicates
    scores = torch.from_numpy(logits)
    cases = {
        "rep_1.3": RepetitionPenaltyLogitsProcessor(1.3),
        "rep_0.7": RepetitionPenaltyLogitsProcessor(0.7),
        "temp_0.7": TemperatureLogitsWarper(0.7),
        "topk_50": TopKLogitsWarper(50),
        "topk_1": TopKLogitsWarper(1),
        "topk_1000": TopKLogitsWarper(1000),
        "topp_0.9": TopPLogitsWarper(0.9),
        "topp_1.0": TopPLogitsWarper(1.0),
        "topp_0.0": TopPLogitsWarper(0.0),
        "minp_0.1": MinPLogitsWarper(0.1),
        "minp_0.0": MinPLogitsWarper(0.0),
        "minp_1.0": MinPLogitsWarper(1.0),
    }
    out = {"logits": logits, "ids": ids}
    for name, proc in cases.items():
        out[name] = proc(torch.from_numpy(ids), scores.clone())
    return prefixed("proc", out)


def small() -> None:
    arrays = {**small_llama(), **small_gpt2(), **processors()}
    save_golden("t3", arrays, SCRIPT, notes="reduced-size Llama/GPT-2 T3 and logits processors")


# ----------------------------------------------------------------------------- full size


def full_model(name: str):
    if name == "cfg":
        hp = T3Config.english_only()
    else:
        hp = T3Config(text_tokens_dict_size=50276)
        hp.llama_config_name = "GPT2_medium" if name == "turbo" else "GPT2_small"
        hp.speech_tokens_dict_size = 6563
        hp.input_pos_emb = None
        hp.speech_cond_prompt_len = 375
        hp.use_perceiver_resampler = False
        hp.emotion_adv = False
    model = t3_module.T3(hp)
    path = cached_checkpoint(f"t3_{name}")
    model.load_state_dict(load_file(str(path)), strict=True)
    if model.is_gpt:
        del model.tfmr.wte  # as tts_turbo.py
    return model.eval()


def full(name: str) -> None:
    model = full_model(name)
    rng = np.random.default_rng(4)
    speaker = rng.standard_normal((1, 256)).astype(np.float32)
    if name == "cfg":
        prompt = rng.integers(0, 6561, (1, 150))
        cond_args = (speaker, prompt, 0.5)
        text = np.concatenate([[255], rng.integers(1, 704, 10), [0]])[None]
    else:
        prompt = rng.integers(0, 6561, (1, 375))
        cond_args = (speaker, prompt, None)
        text = rng.integers(0, 50276, (1, 10))
    speech = np.concatenate([[6561], rng.integers(0, 6561, 7)])[None]
    out = {"speaker": speaker, "prompt": prompt, "text": text, "speech": speech}
    with torch.inference_mode():
        out.update(teacher_forced(model, cond_args, text, speech))
    # slices keep the file small: 50276 text columns would be 2 MB, Turbo's 376 x 1024
    # conditioning 1.5 MB
    out["text_logits"] = out["text_logits"][..., :1024]
    out["cond_emb"] = out["cond_emb"][..., :256]
    if name == "cfg":
        out.update(run_english(model, cond_args, text, "gen", seed=30, max_new_tokens=4))
    else:
        out.update(run_turbo(model, cond_args, text, "gen", seed=30, max_gen_len=3))
    save_golden(
        f"t3_full_{name}", out, SCRIPT, notes=f"full-size T3 {name}, random checkpoint seed 0"
    )


if __name__ == "__main__":
    torch.set_num_threads(2)
    todo = sys.argv[1:] or ["small", "cfg", "turbo", "nano"]
    for job in todo:
        print("==", job, flush=True)
        small() if job == "small" else full(job)
