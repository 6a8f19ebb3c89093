"""Voices: the conditionals a prompt clip gives, and the ``.voice`` file that stores them.

Owns: ``conditionals`` (the ``Conditionals``/``GenCond`` types and the built-in
``conds.safetensors``), ``prepare`` (a clip -> conditionals: S3Tokenizer, CAMPPlus,
VoiceEncoder), ``voice_file`` (the saved-voice format: ``save_voice``, ``load_voice``) and
``checks`` (what a voice's tensors must look like for each family).

May import: ``models``, ``audio``, ``variants``, ``constants``, ``files``.
"""
