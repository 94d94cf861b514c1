"""Deep-RL partitioning (issue 7): a PPO policy picks among candidate partitions, checked against the exact
solver.

Modules: contexts (what a request meets), candidates (the partitions a policy picks from, costed fast),
context_env / multiuser (+ multiuser_env) (the two scenarios), rules (the exact and heuristic decision
rules), train (PPO), policy_file (policy.zip), evaluate (against the exact solver and baselines), decide
(``plan --solver rl``). Importing this package does not import torch or stable-baselines3.
"""
