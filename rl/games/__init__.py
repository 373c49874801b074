"""Normal-form games with exact answers: a matrix-game suite, closed-form metrics, self-play learners.

- ``rl.games.matrix``: the suite as data (``GAMES``, ``get_game``, ``group``), ``nash_conv``,
  ``exploitability``, ``is_zero_sum``, ``equilibria_2x2``.
- ``rl.games.preference``: preference matrices (``check_preference``, ``von_neumann_winner``).
- ``rl.games.learners``: fictitious play, Hedge and SPPO, vmapped over a batch of same-shaped games.
"""
