"""The `worker` process: RQ workers that run chat turns (see `turn.run_turn`)."""
