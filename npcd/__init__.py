"""npcd: real-time voice conversations for game NPCs over the OpenAI Realtime protocol."""

__version__ = "0.1.0"
