"""Numbers every part of Chatterbox agrees on (one home for each).

S3 speech tokens are 25 per second; S3Gen's mel has 2 frames per token (50 Hz) and HiFT
makes 480 samples per frame at 24 kHz, so one token is 960 output samples.
"""

S3GEN_SR = 24_000  # S3Gen / HiFT output and its reference-mel rate
S3_SR = 16_000  # S3Tokenizer, CAMPPlus and VoiceEncoder input rate
TOKENS_PER_SECOND = 25
MEL_FRAMES_PER_TOKEN = 2
SAMPLES_PER_FRAME = S3GEN_SR // (TOKENS_PER_SECOND * MEL_FRAMES_PER_TOKEN)  # 480
SAMPLES_PER_TOKEN = S3GEN_SR // TOKENS_PER_SECOND  # 960
SPEECH_VOCAB_SIZE = 6561  # 3**8 S3 speech ids; ids >= this are T3's special tokens
S3GEN_SILENCE_TOKEN = 4299  # the token S3Gen pads with (upstream's S3GEN_SIL)
# Streaming defaults (chosen with benchmarks/streaming.py; README "Streaming"): speech
# tokens per chunk, a small first chunk for early audio and then larger ones (the last
# size repeats), and how many of the voice prompt's last tokens condition each chunk's
# flow (every chunk pays for the flow over them).
STREAM_CHUNK_SCHEDULE = (10, 50, 100)
STREAM_PROMPT_TOKENS = 100
# Chunks T3 decodes together in generate() and generate_batch() by default: Turbo's
# 8-sentence generate() 1.30x and 4 texts' generate_batch 1.42x faster than 1 at a time,
# peak memory 1.18x (docs/batching.md, 2026-12-07).
DEFAULT_BATCH_SIZE = 4
SERVER_MAX_BATCH = 4  # speech requests a served model decodes together (docs/batching.md)
