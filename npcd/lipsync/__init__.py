"""Lip-sync and emotion for NPC speech: sans-I/O, fed by the conversation as audio arrives.

* `visemes`: the 15 OVR visemes and the IPA phoneme -> viseme map.
* `timeline`: exact frames from a synthesiser's own phoneme timing (the local backend).
* `acoustic`: frames from the audio alone, for backends that send nothing else (OpenAI, Azure).
* `stream`: one response's frames from whichever source it has, cut at interruptions.
* `emotion`: the persona emotion that fits a line the NPC says.
"""
