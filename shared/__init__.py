"""Code that both `web` and `worker` build on: settings, Redis keys, stores, Lua scripts, models."""
