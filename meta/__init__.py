"""Loops over whole lifetimes (objective discovery by ES, cultural accumulation, populations).

Built on ``rl``: a lifetime is ``rl.ppo.make_train(config)(key, hparams)``, and populations are
vmap axes over ``PPOHParams`` (including ``objective_params`` and ``env_params``).
"""
