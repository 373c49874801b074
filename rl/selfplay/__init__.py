"""Self-play on two-player board games (pgx): environments for the core PPO learner, AlphaZero with
mctx, opponents (random, pure search), matches, Elo and an exact tic-tac-toe solver."""
