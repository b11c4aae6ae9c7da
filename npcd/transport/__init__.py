"""I/O drivers. `ws` is the only module in npcd that imports the websockets client."""
