"""NPC memory per (character, player id, save slot) that survives daemon restarts.

paths   where the database lives by default (``$NPCD_DATA_DIR``, XDG data folder)
store   the SQLite store: conversations, turns, recall, save-slot and privacy operations
recall  sans-I/O: a `Recall` as the note an NPC reads at the start of a conversation
keeper  the daemon's async, fail-soft wrapper running the store on one thread
cli     ``npcd memory ...``: list, show, export, import, forget, copy, delete
"""
