"""Measured boundary costs (issue 20): bytes, codec times and accuracy of every candidate cut tensor under
every codec, on real data; the ``dnnsplit/boundaries@1`` file ``plan --boundaries`` charges."""
