"""Weight-sharing supernets: the network, its training, the gradient search, checkpoints and datasets."""
