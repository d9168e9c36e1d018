"""The scheduler: ``loop`` walks jobs along legal edges with engines behind one seam; ``admission`` chooses
which waiting jobs start (capacity, fair queueing, FlexRS windows)."""
