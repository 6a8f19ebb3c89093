"""Voice conversion (upstream's ``ChatterboxVC``): source speech -> S3 tokens -> S3Gen
with the target voice."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import audio as audio_mod
from ..checkpoints import hub
from ..constants import S3_SR, S3GEN_SR
from ..devices import use_device
from ..variants import get_variant
from ..voice import voice_file as voices
from ..voice.conditionals import Conditionals, GenCond
from ..voice.prepare import load_reference, prepare_gen_conditionals
from .checks import check_finite
from .pipeline import as_output, watermark_output
from .requests import call_key, evaluated
from .s3gen import S3Gen
from .threads import COMPUTE_LOCK


class ChatterboxVC:
    """Voice conversion: source audio -> S3 tokens -> S3Gen with the target voice."""

    sr = S3GEN_SR

    def __init__(self, s3gen: S3Gen, device=None, ref_dict=None):
        self.s3gen = s3gen
        self.device = use_device(device)
        self.ref_dict = as_gen_cond(ref_dict)

    @classmethod
    def from_pretrained(
        cls, device=None, *, name: str | Path | None = None, revision: str | None = None
    ):
        use_device(device)
        c = hub.load_components(
            name or get_variant("english").repo_id,
            "english",
            revision=revision,
            networks=("flow", "hift", "s3tokenizer", "campplus"),
        )
        s3gen = S3Gen(c.flow, c.hift, c.s3tokenizer, c.campplus, meanflow=False)
        return cls(s3gen, device, c.conds.gen if c.conds is not None else None)

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device=None):
        return cls.from_pretrained(device, name=Path(ckpt_dir))

    def set_target_voice(self, wav_fpath, sr: int | None = None) -> None:
        """A clip, or a saved voice file of any variant (only its S3Gen part is used)."""
        if sr is None and voices.is_voice_file(wav_fpath):
            self.ref_dict = voices.load_voice(wav_fpath).conds.gen
            return
        with COMPUTE_LOCK:
            gen = prepare_gen_conditionals(
                wav_fpath, self.s3gen.tokenizer, self.s3gen.speaker_encoder, sr=sr
            )
            self.ref_dict = evaluated(Conditionals(None, gen)).gen

    def generate(
        self,
        audio,
        target_voice_path=None,
        *,
        watermark: bool = True,
        seed: int | None = None,
        sr: int | None = None,
    ) -> mx.array:
        """``audio``: the speech to convert (path, or array with ``sr=``)."""
        key = call_key(seed)
        if target_voice_path:
            self.set_target_voice(target_voice_path)
        ref_dict = self.ref_dict
        if ref_dict is None:
            raise ValueError("no target voice: pass target_voice_path= or call set_target_voice()")
        wav = load_reference(audio, sr, "source audio")  # 24 kHz mono, checked
        wav_16 = audio_mod.resample(wav, S3GEN_SR, S3_SR)
        flow_key, hift_key = mx.random.split(key, 2)
        with COMPUTE_LOCK:
            tokens, _ = self.s3gen.tokenizer.tokenize([wav_16])
            out, _ = self.s3gen.inference(tokens[0], ref_dict, key=flow_key, hift_key=hift_key)
        out = np.asarray(out[0], np.float32)
        check_finite(out, "the converted waveform", "no file was written")
        return as_output(watermark_output(out, watermark))


def as_gen_cond(ref_dict) -> GenCond | None:
    """Upstream's plain ``ref_dict`` (a dict of arrays) or a ``GenCond``."""
    if ref_dict is None or isinstance(ref_dict, GenCond):
        return ref_dict
    return Conditionals.from_flat({f"gen.{k}": v for k, v in dict(ref_dict).items()}).gen
