"""The tools on top of the rooms: the command line (``cli``, ``arguments``, ``trainer``), export,
the tuners, and what runs many jobs (``processes``, ``search``, ``seeds``), plus a checkpoint in a
notebook (``predictor``). Nothing here imports a room: the entry scripts hand the room packages in."""
