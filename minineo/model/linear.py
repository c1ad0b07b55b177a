def linear(x, w, b=None):  # [..., n_in] -> [..., n_out]; w is [n_out, n_in], as checkpoints store it
    # w is a NumPy array, or one of minineo.fast's weights (threaded tiles, int8), which compute this
    # same product their own way when they meet `@`.
    y = x @ w.T
    return y if b is None else y + b
