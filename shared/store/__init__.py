"""The Redis layer: the connection, every key name, the Lua scripts and the stores over them."""
